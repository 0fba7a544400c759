"""LLaDATrainer: the loss against a hand computation, its weighting statistics, gradient-accumulation invariance, a
short run whose loss falls, and resume continuing the same trajectory."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llada import LLaDAModelLM
from llada.masking_llada import forward_mask, sample_mask_probability
from llada.training import (
    CHECKPOINTING_ARGUMENT,
    IGNORE_INDEX,
    LLaDATrainer,
    LLaDATrainingArguments,
    cross_entropy_float32,
    masked_diffusion_loss_sum,
)

from .conftest import tiny_config

MASK_ID = 99  # tiny_config's special ids
EOS_ID = 98


# ---- helpers (also used by the LoRA tests) ------------------------------------------------------------------------


def tiny_model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config(**overrides))


def training_args(output_dir, **overrides) -> LLaDATrainingArguments:
    values = dict(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        dataloader_pin_memory=False,
        random_length_prob=0.0,
        seed=0,
        logging_steps=1,
        per_device_train_batch_size=2,
    )
    values.update(overrides)
    return LLaDATrainingArguments(**values)


def stack_batch(examples) -> dict:
    """Collator for examples that already hold `input_ids` (and optionally `labels`)."""
    input_ids = torch.tensor([e["input_ids"] for e in examples])
    labels = torch.tensor([e.get("labels", e["input_ids"]) for e in examples])
    return {"input_ids": input_ids, "labels": labels}


def random_rows(n: int, length: int, seed: int = 0, prompt: int = 0) -> list[dict]:
    """n distinct rows of random ids (< EOS); the first `prompt` positions get labels -100."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, EOS_ID, (length,), generator=g).tolist()
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def content_masks(input_ids: torch.Tensor, maskable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks that depend only on each row's content: the same whatever the batch split or the process."""
    masks, ps = [], []
    for row, row_maskable in zip(input_ids.cpu(), maskable.cpu(), strict=True):
        g = torch.Generator().manual_seed(int((row * torch.arange(1, len(row) + 1)).sum()))
        p = sample_mask_probability(1, generator=g)
        masks.append(forward_mask((1, len(row)), p, row_maskable[None], generator=g))
        ps.append(p)
    return torch.cat(masks).to(input_ids.device), torch.cat(ps).to(input_ids.device)


class FixedMaskTrainer(LLaDATrainer):
    def sample_masks(self, input_ids, maskable, generator):
        return content_masks(input_ids, maskable)


def hand_loss(model, input_ids, labels, masked, p) -> torch.Tensor:
    """DESIGN.md section 5 written out with full logits: (1/B) sum_b sum_masked CE / p_b / |answer_b|."""
    noisy = input_ids.clone()
    noisy[masked] = MASK_ID
    logp = model(noisy).logits.float().log_softmax(-1)  # (B, L, V)
    total = 0.0
    for b in range(input_ids.shape[0]):
        answer = int((labels[b] != IGNORE_INDEX).sum())
        for i in range(input_ids.shape[1]):
            if masked[b, i]:
                total = total + (-logp[b, i, input_ids[b, i]]) / p[b] / answer
    return total / input_ids.shape[0]


# ---- the loss ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [0, 5], ids=["pretraining", "sft"])
def test_loss_matches_hand_computation(tmp_path, prompt):
    model = tiny_model()
    batch = stack_batch(random_rows(3, 12, seed=1, prompt=prompt))
    trainer = FixedMaskTrainer(model=model, args=training_args(tmp_path), data_collator=stack_batch)
    loss, out = trainer.compute_loss(model, batch, return_outputs=True)
    masked, p = out["masked"], out["p"]
    assert masked.any() and not masked[:, :prompt].any()  # prompts are never masked
    torch.testing.assert_close(loss, hand_loss(model, batch["input_ids"], batch["labels"], masked, p))


def test_loss_normalised_by_rows_of_the_whole_step(tmp_path):
    model = tiny_model()
    batch = stack_batch(random_rows(2, 10, seed=2))
    trainer = FixedMaskTrainer(model=model, args=training_args(tmp_path), data_collator=stack_batch)
    per_batch = trainer.compute_loss(model, batch)
    # a micro-batch of 2 rows in a step of 8 rows contributes 2/8 of its own mean
    torch.testing.assert_close(trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(8)), per_batch / 4)


def test_masks_respect_prompt_and_are_reproducible(tmp_path):
    model = tiny_model()
    trainer = LLaDATrainer(model=model, args=training_args(tmp_path, mask_eps=0.25), data_collator=stack_batch)
    batch = stack_batch(random_rows(64, 16, seed=3, prompt=4))
    maskable = batch["labels"] != IGNORE_INDEX
    g = torch.Generator().manual_seed(0)
    masked, p = trainer.sample_masks(batch["input_ids"], maskable, g)
    assert not masked[:, :4].any()
    assert p.min() >= 0.25 and p.max() <= 1.0  # p = (1 - eps) t + eps
    again, p2 = trainer.sample_masks(batch["input_ids"], maskable, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again) and torch.equal(p, p2)
    # the seed depends on (seed, step, micro-batch, process): consecutive micro-batches differ, a restart repeats
    seeds = [trainer._mask_seed(training=True) for _ in range(3)]
    assert len(set(seeds)) == 3
    trainer._mask_step = (-1, 0)
    assert trainer._mask_seed(training=True) == seeds[0]


def test_float32_cross_entropy_of_bf16_logits():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(7, 50, generator=g) * 3).bfloat16().requires_grad_()
    target = torch.randint(0, 50, (7,), generator=g)
    weights = torch.rand(7, generator=g)
    nll = cross_entropy_float32(logits, target)
    assert nll.dtype == torch.float32
    (nll * weights).sum().backward()
    ref_logits = logits.detach().float().requires_grad_()
    ref = F.cross_entropy(ref_logits, target, reduction="none")
    (ref * weights).sum().backward()
    torch.testing.assert_close(nll, ref)
    torch.testing.assert_close(logits.grad.float(), ref_logits.grad, atol=1e-2, rtol=1e-2)


class FixedLogitsModel(nn.Module):
    """Logits that do not depend on the input: each position's CE is a constant, so E[loss] is known exactly."""

    def __init__(self, length: int, vocab: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(length, vocab, generator=torch.Generator().manual_seed(0)))
        self.config = SimpleNamespace(mask_token_id=MASK_ID)

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None, validate_inputs=True):
        logits = self.table.expand(input_ids.shape[0], -1, -1)  # (B, L, V)
        return SimpleNamespace(logits=logits[logits_to_keep])


@pytest.mark.parametrize("prompt", [0, 6], ids=["pretraining", "sft"])
def test_loss_weighting_is_unbiased(tmp_path, prompt):
    """E over t and masks of sum_masked CE / p / |answer| equals sum over the answer of CE / |answer|."""
    length, vocab = 16, 100
    model = FixedLogitsModel(length, vocab)
    trainer = LLaDATrainer(model=model, args=training_args(tmp_path, mask_token_id=MASK_ID), data_collator=stack_batch)
    batch = stack_batch(random_rows(64, length, seed=4, prompt=prompt))
    ce = F.cross_entropy(
        model.table.detach()[None].expand(64, -1, -1).transpose(1, 2), batch["input_ids"], reduction="none"
    )
    expected = (ce[:, prompt:].sum(1) / (length - prompt)).mean()
    model.train()
    with torch.no_grad():
        draws = torch.stack([trainer.compute_loss(model, batch) for _ in range(400)])
    stderr = draws.std() / len(draws) ** 0.5
    assert abs(draws.mean() - expected) < 4 * stderr, (draws.mean(), expected, stderr)
    assert stderr < 0.05 * expected  # the test has power: the mean is pinned to within a few percent


# ---- training ----------------------------------------------------------------------------------------------------


def final_parameters(tmp_path, per_device: int, accumulation: int, rows: list[dict]) -> tuple[dict, float]:
    model = tiny_model()
    args = training_args(
        tmp_path / f"{per_device}x{accumulation}",
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
    )
    trainer = FixedMaskTrainer(model=model, args=args, train_dataset=rows, data_collator=stack_batch)
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return {k: v.detach().clone() for k, v in model.named_parameters()}, loss


def test_gradient_accumulation_invariance(tmp_path):
    """One optimizer step over the same 4 rows and masks: 1 x 4, 4 x 1 and 2 x 2 give the same update and loss."""
    rows = random_rows(4, 12, seed=5, prompt=3)
    reference, ref_loss = final_parameters(tmp_path, 4, 1, rows)
    start = tiny_model().state_dict()
    assert any(not torch.equal(reference[k], start[k]) for k in reference)  # the step changed the weights
    for per_device, accumulation in [(1, 4), (2, 2)]:
        params, loss = final_parameters(tmp_path, per_device, accumulation, rows)
        for name in reference:
            torch.testing.assert_close(params[name], reference[name], atol=2e-6, rtol=1e-5, msg=name)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
    # the logged loss is the loss of the whole step
    model = tiny_model()
    batch = stack_batch(rows)
    masked, p = content_masks(batch["input_ids"], batch["labels"] != IGNORE_INDEX)
    with torch.no_grad():
        direct = hand_loss(model, batch["input_ids"], batch["labels"], masked, p)
    assert ref_loss == pytest.approx(float(direct), rel=1e-4)


def periodic_rows(n: int, length: int) -> list[dict]:
    """Easy data: each row counts up from a random start modulo 20, so every token is predictable from the others."""
    starts = torch.randint(0, 20, (n,), generator=torch.Generator().manual_seed(6))
    return [{"input_ids": ((start + torch.arange(length)) % 20).tolist()} for start in starts]


def test_short_pretraining_run_loss_falls(tmp_path):
    model = tiny_model()
    args = training_args(
        tmp_path, max_steps=40, learning_rate=1e-2, lr_scheduler_type="constant", per_device_train_batch_size=8
    )
    data = periodic_rows(384, 16)
    trainer = LLaDATrainer(model=model, args=args, train_dataset=data[:320], data_collator=stack_batch)
    before = trainer.evaluate(data[320:])["eval_loss"]
    trainer.train()
    after = trainer.evaluate(data[320:])["eval_loss"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 40
    assert sum(losses[-10:]) / 10 < sum(losses[:5]) / 5
    # from chance over the 104-entry vocabulary (ln 104 = 4.6) to about the 20 tokens the data uses (ln 20 = 3.0)
    assert before > 4.0 and after < 0.75 * before, (before, after)


def test_resume_continues_the_same_trajectory(tmp_path):
    data = periodic_rows(200, 16)
    common = dict(max_steps=6, learning_rate=3e-3, save_strategy="steps", save_steps=3, per_device_train_batch_size=4)
    full = LLaDATrainer(
        model=tiny_model(), args=training_args(tmp_path / "a", **common), train_dataset=data, data_collator=stack_batch
    )
    full.train()
    resumed = LLaDATrainer(
        model=tiny_model(), args=training_args(tmp_path / "b", **common), train_dataset=data, data_collator=stack_batch
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))

    def losses(trainer):
        return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}

    full_losses, resumed_losses = losses(full), losses(resumed)  # steps 1-3 come from the checkpoint's state
    assert sorted(resumed_losses) == sorted(full_losses) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-5)
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_random_length_cut_applies_to_pretraining_only(tmp_path):
    seen = []

    class Recording(LLaDATrainer):
        def sample_masks(self, input_ids, maskable, generator):
            seen.append(input_ids.shape[1])
            return super().sample_masks(input_ids, maskable, generator)

    model = tiny_model()
    model.train()
    trainer = Recording(model=model, args=training_args(tmp_path, random_length_prob=1.0), data_collator=stack_batch)
    with torch.no_grad():
        for _ in range(6):
            trainer.compute_loss(model, stack_batch(random_rows(2, 16, seed=7)))
        assert all(1 <= n <= 16 for n in seen) and len(set(seen)) > 1
        seen.clear()
        trainer.compute_loss(model, stack_batch(random_rows(2, 16, seed=7, prompt=4)))  # SFT batch: never cut
        model.eval()
        trainer.compute_loss(model, stack_batch(random_rows(2, 16, seed=7)))  # evaluation: never cut
    assert seen == [16, 16]


def test_evaluation_reports_a_reproducible_bound(tmp_path):
    model = tiny_model()
    data = random_rows(6, 12, seed=8, prompt=2)
    trainer = LLaDATrainer(
        model=model, args=training_args(tmp_path, per_device_eval_batch_size=4), data_collator=stack_batch
    )
    first, second = trainer.evaluate(data), trainer.evaluate(data)
    assert first["eval_loss"] == second["eval_loss"] > 0


def test_gradient_checkpointing_and_bf16_step(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.named_parameters()}
    args = training_args(tmp_path, max_steps=1, bf16=True, learning_rate=1e-2, **{CHECKPOINTING_ARGUMENT: True})
    trainer = LLaDATrainer(model=model, args=args, train_dataset=random_rows(2, 12), data_collator=stack_batch)
    trainer.train()
    assert all(block.gradient_checkpointing for block in model.model.transformer.blocks)
    assert all(not torch.equal(before[k], v) for k, v in model.named_parameters())
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))


def test_masked_diffusion_loss_sum_only_computes_masked_logits():
    calls = {}

    class Spy(nn.Module):
        def forward(self, input_ids, attention_mask=None, logits_to_keep=None, validate_inputs=True):
            calls["keep"] = logits_to_keep
            calls["input_ids"] = input_ids
            return SimpleNamespace(logits=torch.zeros(int(logits_to_keep.sum()), 10))

    ids = torch.tensor([[1, 2, 3, 4]])
    masked = torch.tensor([[False, True, False, True]])
    out = masked_diffusion_loss_sum(Spy(), ids, torch.ones_like(masked), masked, torch.tensor([0.5]), 9)
    assert torch.equal(calls["keep"], masked)
    assert calls["input_ids"].tolist() == [[1, 9, 3, 9]]
    torch.testing.assert_close(out, 2 * torch.log(torch.tensor(10.0)) / 0.5 / 4)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"mask_eps \(1.5\) must be in \[0, 1\)"):
        training_args(tmp_path, mask_eps=1.5)
    with pytest.raises(ValueError, match=r"random_length_prob \(-0.1\)"):
        training_args(tmp_path, random_length_prob=-0.1)
