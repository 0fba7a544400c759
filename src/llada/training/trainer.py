"""`LLaDATrainer`: `Trainer` with the masked-diffusion loss of LLaDA (DESIGN.md section 5).

Batch contract: `input_ids` (B, L) and `labels` (B, L); `labels == -100` marks positions that are never masked
(the SFT prompt), every other position is maskable and supervised. Per row b the forward process draws
p_b = (1 - eps) t_b + eps with t_b ~ U(0, 1) and masks each maskable token with probability p_b; the loss is

    loss = (1 / B) sum_b [ sum over masked positions i of b of CE(logits_i, x0_i) / p_b ] / |answer_b|

with |answer_b| the number of maskable positions of row b (L in pretraining, the response plus its EOS padding in
SFT). B counts the rows of the whole optimizer step: every micro-batch of the gradient accumulation on every
process, so the gradient is the same whatever the split (`get_batch_samples` counts them, `compute_loss` divides by
that count). The masks are drawn on the training device from a generator seeded by (seed, optimizer step,
micro-batch, process), so a resumed run draws the masks the uninterrupted run would have drawn.

The LM head runs only at the masked positions (`logits_to_keep=<bool mask>`), and the cross-entropy is computed in
float32 chunk by chunk without materialising a float32 copy of the (N, V) logits.
"""

import os

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..masking_llada import (
    MASK_EPS,
    diffusion_loss_rows,
    diffusion_loss_sum,
    forward_mask,
    sample_mask_probability,
)
from .checkpoints import resolve_resume_checkpoint
from .collators import IGNORE_INDEX

#: Rows of logits upcast to float32 at a time by the cross-entropy (bounds its temporary memory).
CROSS_ENTROPY_CHUNK = 4096


class _Float32CrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of low-precision logits computed in float32, saving only the logits for backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)  # (N,)
        for s in range(0, logits.shape[0], CROSS_ENTROPY_CHUNK):
            lse[s : s + CROSS_ENTROPY_CHUNK] = torch.logsumexp(logits[s : s + CROSS_ENTROPY_CHUNK].float(), dim=-1)
        nll = lse - logits.gather(1, target[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, target, lse)
        return nll

    @staticmethod
    def backward(ctx, grad_nll: torch.Tensor):
        logits, target, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], CROSS_ENTROPY_CHUNK):
            e = min(s + CROSS_ENTROPY_CHUNK, logits.shape[0])
            g = (logits[s:e].float() - lse[s:e, None]).exp_()  # softmax, (n, V)
            g[torch.arange(e - s, device=g.device), target[s:e]] -= 1.0
            grad[s:e] = (g * grad_nll[s:e, None]).to(grad.dtype)
        return grad, None


def cross_entropy_float32(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) cross-entropy of (N, V) logits against (N,) targets, in float32 whatever the logits' dtype."""
    if logits.dtype == torch.float32:
        return F.cross_entropy(logits, target, reduction="none")
    return _Float32CrossEntropy.apply(logits, target)


def _masked_token_nll(
    model,
    input_ids,
    masked,
    mask_token_id,
    attention_mask,
    validate_inputs,
    output_router_logits=False,
    document_ids=None,
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """(N,) float32 CE of the masked tokens (head at masked positions only), (N,) the row of each, and the model
    output (with `router_logits` when `output_router_logits`; attention within documents given `document_ids`)."""
    noisy = torch.where(masked, mask_token_id, input_ids)  # (B, L)
    extra = {"output_router_logits": True} if output_router_logits else {}
    if document_ids is not None:
        extra["document_ids"] = document_ids
    out = model(
        input_ids=noisy, attention_mask=attention_mask, logits_to_keep=masked, validate_inputs=validate_inputs, **extra
    )
    logits = out.logits  # (N, V): masked positions only, row-major
    # The masked positions' flat index, found once (one host sync besides the model's own): rows and targets follow.
    flat = masked.reshape(-1).nonzero().squeeze(1)  # (N,), row-major like the logits
    row_of_token = flat // input_ids.shape[1]  # (N,)
    return cross_entropy_float32(logits, input_ids.reshape(-1).index_select(0, flat)), row_of_token, out


def masked_diffusion_loss_sum(
    model,
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    masked: torch.Tensor,
    p: torch.Tensor,
    mask_token_id: int,
    attention_mask: torch.Tensor | None = None,
    validate_inputs: bool = True,
    output_router_logits: bool = False,
    document_ids: torch.Tensor | None = None,
):
    """sum_b [ sum over masked i of b of CE / p_b ] / |answer_b| for given masks (divide by the rows for the loss).

    Args:
        model: an `LLaDAModelLM` (or a wrapper of it: DDP, FSDP, peft) called as
            `model(input_ids=..., logits_to_keep=<(B, L) bool>)`.
        input_ids (`torch.LongTensor` of shape `(B, L)`): the clean tokens x0.
        maskable (`torch.BoolTensor` of shape `(B, L)`): positions that may be masked (|answer_b| = row sums).
        masked (`torch.BoolTensor` of shape `(B, L)`): the positions the forward process masked (within maskable).
        p (`torch.Tensor` of shape `(B,)`): each row's masking probability.
        mask_token_id (`int`): written at the masked positions.
        output_router_logits (`bool`): LLaDA-MoE only; return `(loss_sum, model_output)` whose `router_logits` and
            `selected_experts` feed the router losses.
        document_ids (`torch.LongTensor` of shape `(B, L)`, *optional*): packed rows' document layout (from a
            collator with `document_mask=True` / `packing=True`): attention stays within each document.
    """
    token_nll, row_of_token, out = _masked_token_nll(
        model, input_ids, masked, mask_token_id, attention_mask, validate_inputs, output_router_logits, document_ids
    )
    loss_sum = diffusion_loss_sum(token_nll, row_of_token, p.float(), maskable.sum(dim=1))
    return (loss_sum, out) if output_router_logits else loss_sum


def masked_diffusion_loss_rows(
    model,
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    masked: torch.Tensor,
    p: torch.Tensor,
    mask_token_id: int,
    attention_mask: torch.Tensor | None = None,
    validate_inputs: bool = True,
    output_router_logits: bool = False,
):
    """(B,) float32: [ sum over masked i of b of CE / p_b ] / |answer_b| per row (arguments as
    `masked_diffusion_loss_sum`, `(rows, model_output)` with `output_router_logits`); minus a row's value is a
    one-sample estimate of its answer's per-token ELBO."""
    token_nll, row_of_token, out = _masked_token_nll(
        model, input_ids, masked, mask_token_id, attention_mask, validate_inputs, output_router_logits
    )
    rows = diffusion_loss_rows(token_nll, row_of_token, p.float(), maskable.sum(dim=1))
    return (rows, out) if output_router_logits else rows


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (deterministic, unlike `hash`)."""
    seed = 0x9E3779B97F4A7C15
    for part in parts:
        seed = ((seed ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3) & 0x7FFFFFFFFFFFFFFF
    return seed


class LLaDATrainer(Trainer):
    """`Trainer` for LLaDA pretraining and SFT: `compute_loss` applies the forward process (masking) on the training
    device and returns the diffusion loss of DESIGN.md section 5; evaluation reports the same bound as `eval_loss`
    (mean over sequences of the per-token-normalised bound, with masks drawn from a fixed seed so that evaluations
    are comparable).

    Use with `LLaDATrainingArguments` and a collator of `llada.training` (or any collator producing `input_ids`
    and `labels` with -100 on never-masked positions).

    Example:

    ```python
    >>> from llada.training import LLaDATrainer, LLaDATrainingArguments, LLaDAPretrainingCollator
    >>> args = LLaDATrainingArguments(output_dir="out", per_device_train_batch_size=8, max_steps=1000)
    >>> trainer = LLaDATrainer(model=model, args=args, train_dataset=dataset,
    ...                        data_collator=LLaDAPretrainingCollator(tokenizer, max_length=512))
    >>> trainer.train()
    ```
    """

    # compute_loss normalises by the rows of the whole accumulated batch itself (transformers >= 5.18 reads this).
    loss_is_scaled_for_ga = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # transformers < 5.18 decides from this flag (with num_items_in_batch, which get_batch_samples always gives)
        # that the loss is already scaled for gradient accumulation.
        self.model_accepts_loss_kwargs = True
        if self.args.n_gpu > 1:
            raise ValueError(
                f"LLaDATrainer does not support torch.nn.DataParallel (n_gpu = {self.args.n_gpu}); launch one process "
                "per GPU with `accelerate launch` or `torchrun` (DDP/FSDP) instead."
            )
        self._mask_step = (-1, 0)  # (optimizer step, micro-batches drawn in it)
        self._eval_batches = 0
        self._inputs_validated = False
        self._router_logs = {}  # LLaDA-MoE: summed router losses since the last log, and their count
        self._expert_loads = None
        rate = self._option("expert_bias_update_rate", 0.0)
        if rate:
            from .moe import ExpertBiasUpdate

            config = self.accelerator.unwrap_model(self.model).config
            if not getattr(config, "moe_router_enable_expert_bias", False):
                raise ValueError(
                    f"expert_bias_update_rate={rate} needs a LLaDA-MoE model with moe_router_enable_expert_bias=True "
                    "(it updates mlp.expert_bias); set the rate to 0 or use such a model."
                )
            self.add_callback(ExpertBiasUpdate(self, rate))

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`Trainer.train`; `resume_from_checkpoint=True` resumes from the newest *complete* checkpoint of
        `output_dir` (a folder left half-written by a killed run is skipped, with a warning saying why)."""
        resume = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume, *args, **kwargs)

    # ---- options -------------------------------------------------------------------------------------------------

    def _option(self, name: str, default):
        return getattr(self.args, name, default)

    @property
    def mask_token_id(self) -> int:
        token_id = self._option("mask_token_id", None)
        if token_id is None:
            config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
            token_id = getattr(config, "mask_token_id", None)
        if token_id is None:
            raise ValueError(
                "No mask token id: set LLaDATrainingArguments(mask_token_id=...) or config.mask_token_id."
            )
        return int(token_id)

    # ---- the accumulated batch size ------------------------------------------------------------------------------

    # The batch key whose rows the loss is averaged over (the VRPO trainer counts pairs: "chosen_input_ids").
    batch_rows_key = "input_ids"

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The micro-batches of one optimizer step and the number of rows (of `batch_rows_key`) they hold on all
        processes together."""
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        rows = torch.tensor(sum(len(batch[self.batch_rows_key]) for batch in batch_samples), device=device)
        if self.args.world_size > 1:
            rows = self.accelerator.gather(rows).sum()
        return batch_samples, rows

    # ---- masks ---------------------------------------------------------------------------------------------------

    def _mask_seed(self, training: bool) -> int:
        """Seed of this micro-batch's masks: from (seed, optimizer step, micro-batch, process), or from (seed, eval
        batch) in evaluation, so that a resumed run or a repeated evaluation draws the same masks."""
        if not training:
            self._eval_batches += 1
            return _mix_seed(self.args.seed, -1, self._eval_batches, self.args.process_index)
        step, micro = self._mask_step
        micro = micro + 1 if step == self.state.global_step else 0
        self._mask_step = (self.state.global_step, micro)
        return _mix_seed(self.args.seed, self.state.global_step, micro, self.args.process_index)

    def sample_masks(
        self, input_ids: torch.Tensor, maskable: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward process: p (B,) per row and the (B, L) bool masked positions (within `maskable`).

        Override to use other masks (tests fix them to compare runs)."""
        eps = self._option("mask_eps", MASK_EPS)
        p = sample_mask_probability(input_ids.shape[0], device=input_ids.device, generator=generator, eps=eps)
        masked = forward_mask(input_ids.shape, p, maskable, generator=generator)
        return masked, p

    def _maybe_cut_length(self, inputs: dict, generator: torch.Generator) -> dict:
        """With probability `random_length_prob`, cut a pretraining batch (no prompt positions) to a random length in
        [1, L]. The draw is on the CPU, so it costs no device sync unless it fires."""
        prob = self._option("random_length_prob", 0.0)
        if prob <= 0 or torch.rand((), generator=generator).item() >= prob:
            return inputs
        length = int(torch.randint(1, inputs["input_ids"].shape[1] + 1, (), generator=generator))
        labels = inputs.get("labels")
        if labels is not None and bool((labels == IGNORE_INDEX).any()):
            return inputs  # SFT: cutting would drop responses
        return {k: v[:, :length] if torch.is_tensor(v) and v.dim() == 2 else v for k, v in inputs.items()}

    # ---- loss ----------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """The diffusion loss of this micro-batch, scaled so that the micro-batches and processes of one optimizer
        step add up to the loss of the whole step (`num_items_in_batch` = its rows on all processes)."""
        training = model.training
        seed = self._mask_seed(training)
        input_ids = inputs["input_ids"]
        if training:
            # A seed of its own: on the CPU the same seed would make the cut draw equal row 0's t (correlated).
            inputs = self._maybe_cut_length(inputs, torch.Generator().manual_seed(_mix_seed(seed, 1)))
            input_ids = inputs["input_ids"]
        labels = inputs.get("labels")
        input_ids = self._checked_ids(input_ids, labels)
        maskable = labels != IGNORE_INDEX if labels is not None else torch.ones_like(input_ids, dtype=torch.bool)
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
        masked, p = self.sample_masks(input_ids, maskable, generator)
        router = self._router_options(training)
        result = masked_diffusion_loss_sum(
            model,
            input_ids,
            maskable,
            masked,
            p,
            self.mask_token_id,
            attention_mask=inputs.get("attention_mask"),
            validate_inputs=not self._inputs_validated,
            output_router_logits=router is not None,
            document_ids=inputs.get("document_ids"),
        )
        self._inputs_validated = True
        loss_sum = result
        if router is not None:
            loss_sum, out = result
            loss_sum = loss_sum + input_ids.shape[0] * self._router_loss(out, inputs.get("attention_mask"), *router)
        if training and num_items_in_batch is not None:
            # Gradients are averaged over processes (DDP/FSDP): scale back up so the step's gradient is that of
            # (sum over all rows) / (all rows).
            loss = loss_sum * self.accelerator.num_processes / num_items_in_batch
        else:
            loss = loss_sum / input_ids.shape[0]
        return (loss, {"masked": masked, "p": p}) if return_outputs else loss

    def _checked_ids(self, input_ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Every batch's clean ids (the targets) must be token ids in [0, vocab) and not the mask token.

        Shapes are checked on the host. On the CPU the ids are checked at once; on an accelerator one fused check
        accumulates on the device (no sync per step), bad ids are replaced by 0 so that no kernel reads out of range,
        and the flag is read when the trainer logs (`log`), which raises."""
        if input_ids.dim() != 2 or input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError(
                f"input_ids has shape {tuple(input_ids.shape)}; the trainer needs (batch, length) with length >= 1 "
                "(drop empty rows in the collator)."
            )
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}.")
        if labels is not None and tuple(labels.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"labels has shape {tuple(labels.shape)} but input_ids has {tuple(input_ids.shape)}; labels must "
                "match input_ids (-100 on never-masked prompt positions)."
            )
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        vocab = getattr(config, "vocab_size", None)
        if vocab is None:
            return input_ids
        bad = (input_ids < 0) | (input_ids >= vocab) | (input_ids == self.mask_token_id)  # (B, L)
        if input_ids.device.type == "cpu":
            if bool(bad.any()):
                self._raise_bad_ids(input_ids[bad][:5].tolist(), vocab)
            return input_ids
        flag = bad.any()
        self._bad_ids_flag = flag if getattr(self, "_bad_ids_flag", None) is None else self._bad_ids_flag | flag
        return input_ids.masked_fill(bad, 0)

    def _raise_bad_ids(self, examples, vocab):
        raise ValueError(
            f"a training batch holds token ids {examples} that are outside the vocabulary [0, {vocab}) or are the "
            f"mask token ({self.mask_token_id}); check the tokenizer and the collator (the mask token must not "
            "appear in training data)."
        )

    # ---- LLaDA-MoE router losses ---------------------------------------------------------------------------------

    def _router_options(self, training: bool):
        """(aux coefficient, z coefficient, count loads) for a LLaDA-MoE model that needs router outputs, else None.
        Training only: `eval_loss` stays the diffusion bound, comparable with dense models."""
        from .moe import is_moe

        if not training:
            return None

        model = self.accelerator.unwrap_model(self.model)
        if not is_moe(model) and not is_moe(getattr(model, "base_model", None)):
            return None
        config = model.config
        aux = self._option("router_aux_loss_coef", None)
        aux = getattr(config, "router_aux_loss_coef", 0.0) if aux is None else aux
        z = self._option("router_z_loss_coef", None)
        z = getattr(config, "router_z_loss_coef", 0.0) if z is None else z
        loads = training and bool(self._option("expert_bias_update_rate", 0.0))
        return (aux or 0.0, z or 0.0, loads) if (aux or z or loads) else None

    def _router_loss(self, out, attention_mask, aux_coef: float, z_coef: float, count_loads: bool) -> torch.Tensor:
        """aux_coef * load-balancing loss + z_coef * z-loss of this micro-batch (per row: the caller scales it like
        the diffusion loss, so that under gradient accumulation the step's router loss is the row-weighted mean of
        its micro-batches'). Records both for the logs and, for the bias update, the experts' loads."""
        from .moe import expert_loads, router_losses

        num_experts = self.accelerator.unwrap_model(self.model).config.num_experts
        if count_loads:
            loads = expert_loads(out.selected_experts, num_experts, attention_mask)
            self._expert_loads = loads if self._expert_loads is None else self._expert_loads + loads
        aux, z = router_losses(out.router_logits, out.selected_experts, num_experts, attention_mask)
        logs = self._router_logs
        logs["aux_loss"] = logs.get("aux_loss", 0.0) + aux.detach()
        logs["z_loss"] = logs.get("z_loss", 0.0) + z.detach()
        logs["count"] = logs.get("count", 0) + 1
        return aux_coef * aux + z_coef * z

    def log(self, logs: dict, *args, **kwargs):
        """`Trainer.log`, plus the mean router losses (`aux_loss`, `z_loss`) since the last log for LLaDA-MoE; raises
        if a batch since the last log held bad token ids (the device-side check of `_checked_ids`)."""
        flag = getattr(self, "_bad_ids_flag", None)
        if flag is not None and bool(flag):  # one host read per logging step
            self._raise_bad_ids("(on the device)", self.accelerator.unwrap_model(self.model).config.vocab_size)
        count = self._router_logs.pop("count", 0)
        if count and "loss" in logs:
            for name in ("aux_loss", "z_loss"):
                logs[name] = round(float(self._router_logs.pop(name)) / count, 6)
        return super().log(logs, *args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        self._eval_batches = 0  # every evaluation draws the same masks
        return super().evaluation_loop(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        """Evaluation: the loss bound of the batch (mean over its rows); no logits are returned."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ---- publishing ----------------------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        **kwargs,
    ) -> None:
        """The LLaDA model card (`llada.hub.build_model_card`) with this run's data, steps, losses and
        hyper-parameters, written to `output_dir/README.md`; `Trainer.push_to_hub` uploads it with the weights.
        A LoRA adapter folder (no `config.json`) keeps transformers' card."""
        if not self.is_world_process_zero():
            return
        if not os.path.isfile(os.path.join(self.args.output_dir, "config.json")):
            return super().create_model_card(
                language=language,
                license=license,
                tags=tags,
                model_name=model_name,
                finetuned_from=finetuned_from,
                tasks=tasks,
                dataset_tags=dataset_tags,
                dataset=dataset,
                dataset_args=dataset_args,
            )
        from ..hub import write_model_card

        write_model_card(
            self.args.output_dir,
            repo_id=self.hub_model_id or model_name,
            trainer=self,
            base_model=finetuned_from,
            datasets=[dataset_tags] if isinstance(dataset_tags, str) else dataset_tags,
            license=license or "apache-2.0",
            language=language or "en",
            tags=[tags] if isinstance(tags, str) else tags,
        )


__all__ = ["LLaDATrainer", "cross_entropy_float32", "masked_diffusion_loss_rows", "masked_diffusion_loss_sum"]
