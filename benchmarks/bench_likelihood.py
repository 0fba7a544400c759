"""Likelihood throughput and variance: the published one-pair-at-a-time estimator vs `model.log_likelihood`.

    python benchmarks/bench_likelihood.py                        # fixture model, CPU
    python benchmarks/bench_likelihood.py --device cuda --shape 8b

"published" re-implements the reference procedure: for one pair, mc_num / batch_size forward passes over batch_size
copies of the sequence, logits at every position, per-row random permutations, one host sync per pass. "ours" is
`model.log_likelihood` on a list of pairs (rows of several pairs share forward passes, the head runs only at masked
positions), with the published estimator ("ours") and the stratified one ("ours-stratified"). Throughput is pairs/s
at equal mc_num. Variance is measured over --reps estimates of one pair (the fixture's pair, and a pair of the
benchmark shape); "rows for equal variance" is the mc_num each estimator needs to match the published estimator's
variance at --mc-num, and the last column the resulting pairs/s ratio at equal variance.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results import RESULTS_DIR, write_results

from llada import LLaDAConfig, LLaDAModelLM
from llada.masking_llada import stratified_mask_counts

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official-llada-tiny"


@torch.no_grad()
def published_log_likelihood(model, prompt, answer, mc_num=128, batch_size=16, generator=None):
    """The reference estimator, one pair at a time (re-implemented from its description)."""
    device = model.get_input_embeddings().weight.device
    mask_id = model.config.mask_token_id
    P, L = prompt.shape[0], answer.shape[0]
    seq = torch.cat([prompt, answer]).to(device)[None].repeat(batch_size, 1)  # (b, T)
    losses = []
    for _ in range(mc_num // batch_size):
        k = int(torch.randint(1, L + 1, (), generator=generator))
        counts = stratified_mask_counts(L, batch_size, k)
        is_mask = torch.arange(L)[None] < counts[:, None]
        for row in range(batch_size):
            is_mask[row] = is_mask[row][torch.randperm(L, generator=generator)]
        is_mask = torch.cat([torch.zeros(batch_size, P, dtype=torch.bool), is_mask], dim=1).to(device)
        noisy = torch.where(is_mask, mask_id, seq)
        p_mask = (counts.to(device).float() / L)[:, None].expand(-1, P + L)
        logits = model(noisy).logits  # (b, T, V): every position
        loss = F.cross_entropy(logits[is_mask].float(), seq[is_mask], reduction="none") / p_mask[is_mask]
        losses.append((loss.sum() / batch_size).item())
    return -sum(losses) / len(losses)


def build_model(shape: str, device: str, dtype: torch.dtype) -> LLaDAModelLM:
    if shape == "tiny":
        return LLaDAModelLM.from_pretrained(FIXTURE, dtype=dtype).to(device).eval()
    config = LLaDAConfig(
        d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, vocab_size=126464,
        embedding_size=126464, max_sequence_length=4096, rope_theta=500000.0, mask_token_id=126336,
        eos_token_id=126081, pad_token_id=126081,
    )  # fmt: skip
    with torch.device(device):
        model = LLaDAModelLM(config).to(dtype)
    return model.eval()


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def variance(model, prompt, answer, reps, mc_num, batch_size):
    """Sample variances over `reps` estimates of one pair: published (the reference code) and stratified."""
    g = torch.Generator().manual_seed(0)
    pub = torch.tensor(
        [published_log_likelihood(model, prompt, answer, mc_num, batch_size, generator=g) for _ in range(reps)]
    )
    ours = model.log_likelihood(prompt, [answer] * reps, mc_num=mc_num, batch_size=batch_size, generator=g)
    strat = model.log_likelihood(prompt, [answer] * reps, mc_num=mc_num, generator=g, estimator="stratified")
    return pub, ours, strat


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=("tiny", "8b"), default="tiny")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: float32 on cpu, bfloat16 on cuda")
    parser.add_argument("--pairs", type=int, default=64, help="pairs scored per timing (default: 64)")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--answer", type=int, default=8)
    parser.add_argument("--mc-num", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=64, help="estimates per estimator for the variance (0: skip)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if args.device == "cpu" else torch.bfloat16)
    model = build_model(args.shape, args.device, dtype)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    high = min(vocab, model.config.mask_token_id)
    prompts = [torch.randint(0, high, (args.prompt,), generator=g) for _ in range(args.pairs)]
    answers = [torch.randint(0, high, (args.answer,), generator=g) for _ in range(args.pairs)]
    kw = dict(mc_num=args.mc_num, batch_size=args.batch_size)

    # Warm-up, then interleaved timings (the machine may be shared).
    published_log_likelihood(model, prompts[0], answers[0], **kw)
    model.log_likelihood(prompts[:2], answers[:2], max_batch_tokens=args.max_batch_tokens, **kw)
    times = {"published": [], "ours": [], "ours-stratified": []}
    for _ in range(2):
        times["published"].append(
            timed(
                lambda: [published_log_likelihood(model, p, a, **kw) for p, a in zip(prompts, answers, strict=True)],
                args.device,
            )
        )
        for name, estimator in (("ours", "published"), ("ours-stratified", "stratified")):
            times[name].append(
                timed(
                    lambda e=estimator: model.log_likelihood(
                        prompts, answers, estimator=e, max_batch_tokens=args.max_batch_tokens, **kw
                    ),
                    args.device,
                )
            )
    rate = {name: args.pairs / min(t) for name, t in times.items()}
    print(
        f"device {args.device}, shape {args.shape}, {dtype}, prompt {args.prompt}, answer {args.answer}, "
        f"mc_num {args.mc_num}, batch {args.batch_size}, max_batch_tokens {args.max_batch_tokens}, "
        f"threads {torch.get_num_threads()}"
    )
    for name, value in rate.items():
        print(f"  {name:16s} {value:8.2f} pairs/s  ({value / rate['published']:.2f}x published)")

    figures = {"pairs_per_s": rate, "variance": []}
    if args.reps:
        cases = [("bench pair", prompts[0], answers[0])]
        if args.shape == "tiny":
            ref = torch.load(FIXTURE / "reference.pt", weights_only=True)["loglikelihood"]
            cases.insert(0, ("fixture pair", ref["prompt"], ref["answer"]))
        for label, prompt, answer in cases:
            pub, ours, strat = variance(model, prompt, answer, args.reps, args.mc_num, args.batch_size)
            print(f"  variance over {args.reps} estimates, {label} (P {len(prompt)}, L {len(answer)}):")
            for name, est in (("published", pub), ("ours", ours), ("ours-stratified", strat)):
                ratio = est.var().item() / pub.var().item()
                speed = rate[name] / rate["published"] / ratio
                figures["variance"].append(
                    {
                        "case": label,
                        "estimator": name,
                        "mean": est.mean().item(),
                        "std": est.std().item(),
                        "variance_ratio": ratio,
                        "speedup_at_equal_variance": speed,
                    }
                )
                print(
                    f"    {name:16s} mean {est.mean().item():9.4f} std {est.std().item():.4f} var ratio {ratio:.3f} "
                    f"rows for equal variance {args.mc_num * ratio:6.1f}  pairs/s at equal variance {speed:.2f}x"
                )
    if not args.no_results:
        write_results("likelihood", args.device, vars(args), figures, args.results_dir)


if __name__ == "__main__":
    main()
