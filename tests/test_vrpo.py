"""VRPO (LLaDA 1.5): the loss against the formula, exact log 2 with antithetic sampling, an unbiased ELBO estimator
(checked against the bound by enumeration), the variance ordering of the four (allocation x antithetic) settings,
accumulation exactness, a short run with a frozen reference, LoRA, the preference collator, the CLI and errors."""

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llada import LLaDAModelLM
from llada.training import (
    IGNORE_INDEX,
    LLaDAPreferenceCollator,
    LLaDAVRPOConfig,
    LLaDAVRPOTrainer,
    llada_lora_config,
    train_tokenizer,
)
from llada.training.vrpo import elbo_estimates, sample_elbo_masks

from .conftest import tiny_config

MASK_ID, EOS_ID = 99, 98


def tiny_model(seed: int = 0) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config())


def nudged(model: LLaDAModelLM, scale: float = 0.05, seed: int = 1) -> LLaDAModelLM:
    """A policy a small step away from `model`."""
    other = tiny_model()
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * p.std().nan_to_num(1.0) * torch.randn(p.shape, generator=g))
    return other


def pairs(n: int, prompt: int = 3, answer: int = 6, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p = torch.randint(0, EOS_ID, (prompt,), generator=g).tolist()
        c = p + torch.randint(0, EOS_ID, (answer,), generator=g).tolist()
        r = p + torch.randint(0, EOS_ID, (answer,), generator=g).tolist()
        out.append(
            {
                "chosen_input_ids": c,
                "chosen_labels": [IGNORE_INDEX] * prompt + c[prompt:],
                "rejected_input_ids": r,
                "rejected_labels": [IGNORE_INDEX] * prompt + r[prompt:],
            }
        )
    return out


def stack(examples) -> dict:
    return {k: torch.tensor([e[k] for e in examples]) for k in examples[0]}


def config(tmp_path, **overrides) -> LLaDAVRPOConfig:
    values = dict(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        dataloader_pin_memory=False,
        seed=0,
        logging_steps=1,
        per_device_train_batch_size=2,
    )
    values.update(overrides)
    return LLaDAVRPOConfig(**values)


# ---- the loss ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["timestep", "mask_count"])
def test_policy_equal_to_reference_gives_exactly_log2_only_with_antithetic(tmp_path, estimator):
    model = tiny_model()
    batch = stack(pairs(4))
    for antithetic in (True, False):
        args = config(tmp_path, antithetic=antithetic, elbo_estimator=estimator)
        trainer = LLaDAVRPOTrainer(model=model, args=args, train_dataset=pairs(4), data_collator=stack)
        for _ in range(3):
            loss, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
            diff_w = out["policy_chosen"] - out["reference_chosen"]
            diff_l = out["policy_rejected"] - out["reference_rejected"]
            if antithetic:
                assert torch.equal(diff_w, torch.zeros(4)) and torch.equal(diff_l, torch.zeros(4))
                assert torch.equal(out["losses"], torch.full((4,), math.log(2)))
            else:
                assert (diff_w != 0).all() and (diff_l != 0).all()
                assert not torch.allclose(out["losses"], torch.full((4,), math.log(2)))


def test_loss_matches_the_formula_by_hand(tmp_path):
    reference, policy = tiny_model(), nudged(tiny_model(), 0.2)
    batch = stack(pairs(2, prompt=2, answer=3))
    masks = {}

    class FixedMasks(LLaDAVRPOTrainer):
        def sample_elbo_masks(self, input_ids, maskable, generator):
            masked, p = super().sample_elbo_masks(input_ids, maskable, generator)
            masks.setdefault("all", []).append((masked, p))
            return masked, p

    args = config(tmp_path, beta=0.5, mc_budget=2, antithetic=False)
    trainer = FixedMasks(model=policy, ref_model=reference, args=args, data_collator=stack)
    loss, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    (policy_masks, policy_p), (ref_masks, ref_p) = masks["all"]
    assert not torch.equal(policy_masks, ref_masks)  # antithetic off: the reference draws its own

    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])  # (4, 5): chosen rows, rejected rows

    def elbo(model, masked, p):  # -mean over the 2 samples of [sum masked CE / p] / |answer| (|answer| = 3)
        values = []
        for row in range(4):
            total = 0.0
            for s in range(2):
                m, ps = masked[2 * row + s], float(p[2 * row + s])
                assert not m[:2].any()  # the prompt is never masked
                noisy = torch.where(m, MASK_ID, ids[row])
                with torch.no_grad():
                    logits = model(input_ids=noisy[None]).logits[0]
                total += sum(float(F.cross_entropy(logits[i], ids[row, i])) for i in m.nonzero()[:, 0]) / ps / 3
            values.append(-total / 2)
        return torch.tensor(values, dtype=torch.float64)

    pol, ref = elbo(policy, policy_masks, policy_p), elbo(reference, ref_masks, ref_p)
    margin = 0.5 * ((pol[:2] - ref[:2]) - (pol[2:] - ref[2:]))
    expected = -F.logsigmoid(margin)
    torch.testing.assert_close(out["losses"].double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss.double(), expected.mean(), atol=1e-5, rtol=1e-5)


# ---- the estimator -------------------------------------------------------------------------------------------------


def exact_bound(model, ids: torch.Tensor, prompt: int, estimator: str, eps: float = 1e-3) -> float:
    """E over the forward process of -[sum masked CE / p] / |answer|, by enumerating the answer masks."""
    L = ids.shape[0] - prompt
    subsets = [[prompt + i for i in range(L) if (bits >> i) & 1] for bits in range(1, 2**L)]
    rows = torch.stack([ids] * len(subsets))
    masked = torch.zeros_like(rows, dtype=torch.bool)
    for r, subset in enumerate(subsets):
        masked[r, subset] = True
    with torch.no_grad():
        logits = model(input_ids=torch.where(masked, MASK_ID, rows)).logits
    nll = F.cross_entropy(logits.transpose(1, 2), rows, reduction="none").double()  # (S, T)
    sums = (nll * masked).sum(1)  # (S,)
    k = masked.sum(1)
    if estimator == "timestep":
        # E_t[ P(M) / p ] = 1/(1-eps) * integral_eps^1 p^(k-1) (1-p)^(L-k) dp, expanded binomially
        def weight(k: int) -> float:
            return sum(math.comb(L - k, j) * (-1) ** j * (1 - eps ** (k + j)) / (k + j) for j in range(L - k + 1)) / (
                1 - eps
            )

        w = torch.tensor([weight(int(c)) for c in k], dtype=torch.float64)
        return float(-(w * sums).sum() / L)
    # l ~ U{1..L}, M a uniform l-subset, weight L / l
    w = torch.tensor([1 / L / math.comb(L, int(c)) * L / int(c) for c in k], dtype=torch.float64)
    return float(-(w * sums).sum() / L)


@pytest.mark.parametrize("estimator", ["timestep", "mask_count"])
def test_estimator_is_unbiased_against_enumeration(estimator):
    model = tiny_model().eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, EOS_ID, (6,), generator=g)  # prompt 2, answer 4
    exact = exact_bound(model, ids, 2, estimator)
    repeats = 600
    rows = ids[None].repeat(repeats, 1)
    maskable = torch.zeros_like(rows, dtype=torch.bool)
    maskable[:, 2:] = True
    masked, p = sample_elbo_masks(maskable, 4, 4, g, estimator=estimator)
    with torch.no_grad():
        estimates = elbo_estimates(model, rows, maskable, masked, p, MASK_ID).double()
    se = estimates.std() / math.sqrt(repeats)
    assert abs(float(estimates.mean()) - exact) < 4 * float(se), (float(estimates.mean()), exact, float(se))


def preference_score_variance(policy, reference, batch, n_timesteps, antithetic, repeats=60, seed=0) -> float:
    """Variance over repeats of the score (B_pi - B_ref)(y_w) - (B_pi - B_ref)(y_l) at a budget of 8 (mask-count
    estimator: its weights L / l are bounded, so sample variances are stable; the 1 / p weights of the timestep form
    make them heavy-tailed, see BENCHMARKS.md)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([batch["chosen_input_ids"][:1], batch["rejected_input_ids"][:1]]).repeat(repeats, 1)
    maskable = torch.cat([batch["chosen_labels"][:1], batch["rejected_labels"][:1]]).repeat(repeats, 1) != -100
    with torch.no_grad():
        masked, p = sample_elbo_masks(maskable, 8, n_timesteps, g, estimator="mask_count")
        pol = elbo_estimates(policy, ids, maskable, masked, p, MASK_ID)
        if not antithetic:
            masked, p = sample_elbo_masks(maskable, 8, n_timesteps, g, estimator="mask_count")
        ref = elbo_estimates(reference, ids, maskable, masked, p, MASK_ID)
    diff = (pol - ref).view(repeats, 2)
    return float((diff[:, 0] - diff[:, 1]).var())


def counting_rows(n: int, length: int, g: torch.Generator) -> torch.Tensor:
    """Rows of consecutive ids: a model trained on them predicts from context (so the timestep matters)."""
    return torch.randint(0, EOS_ID - length, (n, 1), generator=g) + torch.arange(length)


def test_optimal_allocation_with_antithetic_sampling_has_the_lowest_variance():
    from llada.masking_llada import forward_mask, sample_mask_probability
    from llada.training import masked_diffusion_loss_sum

    reference = tiny_model()
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        ids = counting_rows(16, 15, g)
        p = sample_mask_probability(16, generator=g)
        masked = forward_mask(ids.shape, p, None, generator=g)
        loss = masked_diffusion_loss_sum(reference, ids, torch.ones_like(masked), masked, p, MASK_ID) / 16
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reference.eval()
    policy = nudged(reference, 0.05).eval()  # "a few steps away"
    ids = counting_rows(2, 15, torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    batch = {"chosen_input_ids": ids[:1], "chosen_labels": labels[:1]}
    batch.update(rejected_input_ids=ids[1:], rejected_labels=labels[1:])
    variances = {
        (n_t, anti): preference_score_variance(policy, reference, batch, n_t, anti)
        for n_t in (8, 1)
        for anti in (True, False)
    }
    best = variances[(8, True)]
    assert best == min(variances.values()), variances
    assert variances[(8, False)] > 100 * best and variances[(1, False)] > variances[(8, False)], variances


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["timestep", "mask_count"]),
    st.sampled_from([(8, 8), (8, 2), (8, 1), (4, 4), (1, 1)]),
    st.lists(st.integers(1, 7), min_size=1, max_size=4),
    st.integers(0, 2**31),
)
def test_masks_stay_in_the_answer_and_share_timesteps(estimator, budget_nt, answers, seed):
    budget, n_t = budget_nt
    length = 3 + max(answers)
    maskable = torch.zeros(len(answers), length, dtype=torch.bool)
    for r, a in enumerate(answers):
        maskable[r, 3 : 3 + a] = True
    masked, p = sample_elbo_masks(maskable, budget, n_t, torch.Generator().manual_seed(seed), estimator=estimator)
    assert masked.shape == (len(answers) * budget, length) and p.shape == (len(answers) * budget,)
    rows = maskable.repeat_interleave(budget, 0)
    assert not (masked & ~rows).any()
    per_timestep = p.view(len(answers) * n_t, budget // n_t)
    assert (per_timestep == per_timestep[:, :1]).all()  # the n_y masks of a timestep share it
    if estimator == "mask_count":
        counts = masked.sum(1)
        assert (counts >= 1).all() and (counts <= rows.sum(1)).all()
        torch.testing.assert_close(p, counts / rows.sum(1))
    else:
        assert ((p >= 1e-3) & (p <= 1)).all()


# ---- training ------------------------------------------------------------------------------------------------------


class ContentMasks(LLaDAVRPOTrainer):
    """Masks from each row's content: the same whichever micro-batch holds the row."""

    def sample_elbo_masks(self, input_ids, maskable, generator):
        out = []
        for ids, row in zip(input_ids, maskable, strict=True):
            g = torch.Generator().manual_seed(int((ids * torch.arange(1, len(ids) + 1)).sum()))
            out.append(sample_elbo_masks(row[None], self.args.mc_budget, self.args.n_timesteps, g))
        return torch.cat([m for m, _ in out]), torch.cat([p for _, p in out])


def test_accumulation_is_exact(tmp_path):
    data = pairs(4, seed=7)
    results = []
    for batch, accumulation in ((4, 1), (1, 4), (2, 2)):
        reference = tiny_model()
        policy = nudged(reference, 0.1)
        args = config(
            tmp_path / f"{batch}x{accumulation}",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            optim="sgd",
            learning_rate=1.0,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            weight_decay=0.0,
            mc_budget=2,
        )
        trainer = ContentMasks(model=policy, ref_model=reference, args=args, train_dataset=data, data_collator=stack)
        trainer.train()
        loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
        results.append((loss, {k: v.detach().clone() for k, v in policy.named_parameters()}))
    (loss0, params0), *others = results
    for loss, params in others:
        assert abs(loss - loss0) < 1e-6
        for name, value in params.items():
            torch.testing.assert_close(value, params0[name], atol=1e-6, rtol=1e-5, msg=name)


def test_short_run_moves_the_policy_not_the_reference_and_logs_trl_metrics(tmp_path):
    model = tiny_model()
    data = pairs(8, seed=2)
    args = config(tmp_path, max_steps=4, learning_rate=5e-3, beta=1.0, eval_strategy="steps", eval_steps=4)
    trainer = LLaDAVRPOTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, data_collator=stack)
    before = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    trainer.train()
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())
    for name, value in trainer.ref_model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(model.model.transformer.ff_out.weight, before["model.transformer.ff_out.weight"])
    logs = [h for h in trainer.state.log_history if "loss" in h]
    keys = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "elbo/chosen")
    assert len(logs) == 4 and all(k in logs[-1] for k in keys + ("elbo/rejected",))
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # step 1: policy == reference
    last = logs[-1]
    assert last["rewards/margins"] == pytest.approx(last["rewards/chosen"] - last["rewards/rejected"], abs=1e-5)
    evals = [h for h in trainer.state.log_history if "eval_rewards/accuracies" in h]
    assert evals and 0.0 <= evals[-1]["eval_rewards/accuracies"] <= 1.0
    assert "VRPO" in trainer.model_card_method() and "antithetic sampling: on" in trainer.model_card_method()


def test_lora_reference_is_the_adapter_disabled_model(tmp_path):
    from peft import get_peft_model

    model = get_peft_model(tiny_model(), llada_lora_config(r=4))
    args = config(tmp_path, max_steps=2, learning_rate=1e-2, beta=1.0, gradient_checkpointing=True)
    trainer = LLaDAVRPOTrainer(model=model, args=args, train_dataset=pairs(4), data_collator=stack)
    assert trainer.ref_model is None  # no second copy in memory
    _, out = trainer.compute_loss(trainer.model, stack(pairs(2)), return_outputs=True)
    assert torch.equal(out["policy_chosen"], out["reference_chosen"])  # LoRA starts at B = 0
    trainer.train()
    _, out = trainer.compute_loss(trainer.model, stack(pairs(2)), return_outputs=True)
    assert not torch.equal(out["policy_chosen"], out["reference_chosen"])
    # the reference (adapter disabled) is still the base model, the policy is not
    batch = stack(pairs(2))
    ids, maskable = batch["chosen_input_ids"], batch["chosen_labels"] != IGNORE_INDEX
    masked, p = sample_elbo_masks(maskable, 8, 8, torch.Generator().manual_seed(0))
    reference, context = trainer._reference(trainer.model)
    with torch.no_grad(), context:
        disabled = elbo_estimates(reference, ids, maskable, masked, p, MASK_ID)
    with torch.no_grad():
        base = elbo_estimates(tiny_model(), ids, maskable, masked, p, MASK_ID)
        policy = elbo_estimates(trainer.model, ids, maskable, masked, p, MASK_ID)
    torch.testing.assert_close(disabled, base, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(policy, base)


# ---- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(mc_budget=0), r"mc_budget \(0\) must be at least 1"),
        (dict(mc_budget=8, mc_timesteps=3), r"mc_timesteps \(3\) must divide mc_budget \(8\)"),
        (dict(beta=0.0), r"beta \(0.0\) must be > 0"),
        (dict(elbo_estimator="exact"), r"elbo_estimator \('exact'\) must be one of"),
    ],
)
def test_config_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)


def test_reference_with_another_vocabulary_is_refused(tmp_path):
    torch.manual_seed(0)
    other = LLaDAModelLM(tiny_config(vocab_size=120, embedding_size=128, mask_token_id=119, eos_token_id=118))
    with pytest.raises(ValueError, match="reference model has 128 embeddings but the policy 104"):
        LLaDAVRPOTrainer(model=tiny_model(), ref_model=other, args=config(tmp_path), data_collator=stack)


# ---- the collator --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    corpus = ["The cat sat on the mat.", "Paris is the capital of France.", "Hello there, how are you?"] * 4
    return train_tokenizer(corpus, vocab_size=300)


def test_preference_collator_shapes_and_chat_template(tokenizer, caplog):
    collator = LLaDAPreferenceCollator(tokenizer, max_length=64)
    standard = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "The cat sat on the mat."}
    conversational = {
        "prompt": [{"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "The cat sat on the mat."}],
    }
    implicit = {
        "chosen": conversational["prompt"] + conversational["chosen"],
        "rejected": conversational["prompt"] + conversational["rejected"],
    }
    batch = collator([standard, conversational, implicit])
    assert torch.equal(batch["chosen_input_ids"][0], batch["chosen_input_ids"][1])
    assert torch.equal(batch["rejected_labels"][0], batch["rejected_labels"][2])
    assert batch["chosen_input_ids"].shape == batch["rejected_input_ids"].shape  # one length for both sides
    prompt = tokenizer.apply_chat_template(conversational["prompt"], tokenize=True, add_generation_prompt=True)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt)
    P = len(prompt)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    chosen = tokenizer("Paris.", add_special_tokens=False)["input_ids"] + [eot]
    assert batch["chosen_input_ids"][0, :P].tolist() == prompt
    assert batch["chosen_input_ids"][0, P : P + len(chosen)].tolist() == chosen
    assert (batch["chosen_input_ids"][0, P + len(chosen) :] == tokenizer.eos_token_id).all()  # EOS padding
    assert (batch["chosen_labels"][0, :P] == IGNORE_INDEX).all()
    assert torch.equal(batch["chosen_labels"][0, P:], batch["chosen_input_ids"][0, P:])
    with caplog.at_level(logging.WARNING):
        collator([{"prompt": "Hi", "chosen": "Same.", "rejected": " Same. "}])
    assert "identical" in caplog.text


@pytest.mark.parametrize(
    "example, message",
    [
        ({"prompt": "Hi", "chosen": "Hello."}, r"lacks \['rejected'\]"),
        ({"prompt": "Hi", "chosen": " ", "rejected": "Hello."}, "empty chosen answer"),
        ({"prompt": "Hi", "chosen": "Hello.", "rejected": ""}, "empty rejected answer"),
        ({"chosen": "Hello.", "rejected": "Bye."}, "has no 'prompt'"),
        (
            {
                "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}],
                "rejected": [{"role": "user", "content": "C"}, {"role": "assistant", "content": "D"}],
            },
            "must share every turn",
        ),
        # The checks shared with SFT name a preference example, not an "SFT example".
        ({"prompt": "Hello there " * 40, "chosen": "A.", "rejected": "B."}, "^The prompt of Preference example 0 has"),
    ],
)
def test_preference_collator_errors(tokenizer, example, message):
    with pytest.raises(ValueError, match=message):
        LLaDAPreferenceCollator(tokenizer, max_length=64)([example])


# ---- the command line ----------------------------------------------------------------------------------------------


def test_cli_vrpo_with_lora(tokenizer, tmp_path):
    from llada.training.cli import main

    tokenizer.save_pretrained(tmp_path / "tok")
    base = tmp_path / "base"
    (tmp_path / "book.txt").write_text("The cat sat on the mat. Paris is the capital of France. " * 20)
    common = ["--batch-size", "2", "--logging-steps", "1", "--no-progress", "--save-steps", "2"]
    main(
        ["pretrain", "--data", str(tmp_path / "book.txt"), "--tokenizer", str(tmp_path / "tok"), "--d-model", "32"]
        + ["--n-layers", "1", "--n-heads", "4", "--max-length", "32", "--output-dir", str(base), "--max-steps", "1"]
        + common
    )
    prefs = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "The mat."}] * 4
    prefs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "vrpo"
    argv = ["vrpo", "--data", str(prefs), "--eval-data", str(prefs), "--model", str(base), "--max-length", "32"]
    argv += ["--output-dir", str(out), "--lora", "--lora-r", "4", "--max-steps", "2", "--mc-budget", "4"]
    metrics = main(argv + ["--beta", "0.2", "--mc-timesteps", "2", *common])
    assert "eval_rewards/accuracies" in metrics and (out / "adapter_config.json").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert "rewards/margins" in state["log_history"][0]
    metrics = main(argv + ["--max-steps", "3", "--resume", *common])
    assert metrics["epoch"] > 0
