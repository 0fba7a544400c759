"""Variance of the VRPO preference score under the four (allocation x antithetic) settings at one budget.

    python benchmarks/bench_vrpo_variance.py --repeats 2000                      # tiny model trained on counting
    python benchmarks/bench_vrpo_variance.py --model demo --repeats 200 --pairs 4   # the demo model, KJV verses

The preference score of a pair is s = (B_pi(y_w) - B_ref(y_w)) - (B_pi(y_l) - B_ref(y_l)) with each B a Monte Carlo
ELBO of budget n (`llada.training.vrpo.sample_elbo_masks` / `elbo_estimates`); the policy is the reference a small
step away (parameters nudged by --nudge of their spread). For each setting the script draws --repeats independent
estimates of s and reports their variance (averaged over --pairs pairs) and its ratio to the VRPO setting
(optimal allocation n_t = n, antithetic sampling on), for both ELBO estimators.
"""

import argparse
import copy
import json

import torch

from llada.training.vrpo import elbo_estimates, sample_elbo_masks

SETTINGS = [  # (label, n_t as a function of n, antithetic)
    ("optimal + antithetic (VRPO)", lambda n: n, True),
    ("optimal, independent", lambda n: n, False),
    ("1 timestep x n masks + antithetic", lambda n: 1, True),
    ("1 timestep x n masks, independent", lambda n: 1, False),
]


def counting_model(seed: int):
    """A tiny LLaDA trained for a few seconds on rows of consecutive ids (its predictions depend on context)."""
    from llada import LLaDAConfig, LLaDAModelLM
    from llada.masking_llada import forward_mask, sample_mask_probability
    from llada.training import masked_diffusion_loss_sum

    torch.manual_seed(seed)
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=100, embedding_size=104,
        max_sequence_length=64, mask_token_id=99, eos_token_id=98, pad_token_id=98,
    )  # fmt: skip
    model = LLaDAModelLM(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(150):
        ids = torch.randint(0, 83, (32, 1), generator=g) + torch.arange(15)
        p = sample_mask_probability(32, generator=g)
        masked = forward_mask(ids.shape, p, None, generator=g)
        loss = masked_diffusion_loss_sum(model, ids, torch.ones_like(masked), masked, p, 99) / 32
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def pairs(count):
        out = []
        for _ in range(count):
            ids = torch.randint(0, 83, (2, 1), generator=g) + torch.arange(15)
            maskable = torch.ones_like(ids, dtype=torch.bool)
            maskable[:, :3] = False
            out.append((ids, maskable))  # row 0 chosen, row 1 rejected
        return out

    return model.eval(), 99, pairs


def demo_model(seed: int):
    import importlib.util
    import random
    from pathlib import Path

    from llada.demo import load_demo_model
    from llada.training import LLaDAPreferenceCollator

    model, tokenizer = load_demo_model()
    path = Path(__file__).resolve().parents[1] / "examples" / "vrpo_demo.py"
    spec = importlib.util.spec_from_file_location("vrpo_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    chapters = demo.read_kjv()
    rng = random.Random(seed)
    pool = [v for c in chapters for v in c if len(v.split()) <= 16]
    collator = LLaDAPreferenceCollator(tokenizer, eos_token_id=model.config.eos_token_id)

    def pairs(count):
        out = []
        for example in demo.preference_pairs(chapters, count, pool, rng, 16):
            batch = collator([example])
            ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
            maskable = torch.cat([batch["chosen_labels"], batch["rejected_labels"]]) != -100
            out.append((ids, maskable))
        return out

    return model, model.config.mask_token_id, pairs


def score_variance(policy, reference, mask_id, ids, maskable, budget, n_t, antithetic, estimator, repeats, seed):
    g = torch.Generator().manual_seed(seed)
    rows, row_maskable = ids.repeat(repeats, 1), maskable.repeat(repeats, 1)
    with torch.no_grad():
        masked, p = sample_elbo_masks(row_maskable, budget, n_t, g, estimator=estimator)
        pol = elbo_estimates(policy, rows, row_maskable, masked, p, mask_id)
        if not antithetic:
            masked, p = sample_elbo_masks(row_maskable, budget, n_t, g, estimator=estimator)
        ref = elbo_estimates(reference, rows, row_maskable, masked, p, mask_id)
    diff = (pol - ref).view(repeats, 2).double()
    return float((diff[:, 0] - diff[:, 1]).var())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("counting", "demo"), default="counting")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--nudge", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference, mask_id, make_pairs = (counting_model if args.model == "counting" else demo_model)(args.seed)
    policy = copy.deepcopy(reference)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(args.nudge * p.std().nan_to_num(1.0) * torch.randn(p.shape, generator=g))
    pairs = make_pairs(args.pairs)
    results = {}
    for estimator in ("mask_count", "timestep"):
        for label, n_t, antithetic in SETTINGS:
            values = [
                score_variance(
                    policy,
                    reference,
                    mask_id,
                    ids,
                    maskable,
                    args.budget,
                    n_t(args.budget),
                    antithetic,
                    estimator,
                    args.repeats,
                    args.seed + 100 * i,
                )  # fmt: skip
                for i, (ids, maskable) in enumerate(pairs)
            ]
            results[(estimator, label)] = sum(values) / len(values)
    print(f"| estimator | setting (budget n = {args.budget}) | variance of the score | ratio to VRPO |")
    print("|---|---|---|---|")
    for (estimator, label), value in results.items():
        base = results[(estimator, SETTINGS[0][0])]
        print(f"| {estimator} | {label} | {value:.3g} | {value / base:.3g} |")
    print(json.dumps({f"{e}/{s}": v for (e, s), v in results.items()}))


if __name__ == "__main__":
    main()
