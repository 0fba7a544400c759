"""VRPO (Variance-Reduced Preference Optimization, LLaDA 1.5): DPO for masked diffusion models, trl-DPO style.

For a prompt x, a chosen answer y_w and a rejected answer y_l the loss is

    loss = -log sigmoid( beta * [ (B_theta(y_w|x) - B_ref(y_w|x)) - (B_theta(y_l|x) - B_ref(y_l|x)) ] )

with B_pi(y|x) the diffusion bound (ELBO) of the answer given the prompt, estimated by Monte Carlo. One sample is
minus the per-row term of the training loss (`llada.masking_llada.diffusion_loss_rows`): draw t ~ U(0, 1), mask each
answer token with probability p = (1 - eps) t + eps (the prompt never), and take -[sum of masked CE / p] / |answer|
(normalised as SFT normalises, so B is per answer token). `elbo_estimator="mask_count"` draws instead l ~ U{1..L}
and masks exactly l answer tokens (p = l / L; DESIGN.md section 6). The estimate averages a budget of
n = n_t * n_y samples: n_t timesteps, n_y masks per timestep.

The two variance reductions of the paper, both on by default:
- optimal allocation: n_t = n timesteps with one mask each (`mc_timesteps=None`);
- antithetic sampling: the policy and the reference see the same timesteps and masks for the same answer
  (`antithetic=True`), so that the noise of B_theta - B_ref cancels where the two models agree.

Shapes, per micro-batch of B pairs padded to length L: chosen and rejected rows are stacked, (2B, L), and each row is
repeated n times, (2B n, L); the policy scores them in one forward pass (the LM head at masked positions only), the
reference in one more (without gradient). Peak activations are those of an SFT micro-batch of 2 B n rows.

The reference model is a frozen copy of the starting policy, or, for a peft model, the same model with its adapter
disabled (no second copy in memory), as trl does. Masks are drawn from a generator seeded by (seed, optimizer step,
micro-batch, process), as `LLaDATrainer` does; the loss is exact under gradient accumulation and DDP (the pairs of
the whole optimizer step divide it).
"""

import contextlib
import copy
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..masking_llada import forward_mask, mask_exact_counts, sample_mask_probability
from .arguments import LLaDATrainingArguments
from .collators import IGNORE_INDEX
from .preference import LLaDAPreferenceCollator
from .trainer import LLaDATrainer, _mix_seed, masked_diffusion_loss_rows

#: Accepted values of `LLaDAVRPOConfig.elbo_estimator`.
ELBO_ESTIMATORS = ("timestep", "mask_count")


@dataclass
class LLaDAVRPOConfig(LLaDATrainingArguments):
    """`LLaDATrainingArguments` for `LLaDAVRPOTrainer` (the counterpart of trl's `DPOConfig`).

    Example:

    ```python
    >>> args = LLaDAVRPOConfig(output_dir="out", beta=0.1, mc_budget=8, per_device_train_batch_size=4)
    ```
    """

    beta: float = field(
        default=0.1,
        metadata={
            "help": "Temperature of the preference loss -log sigmoid(beta * margin) (trl DPO's default, 0.1). The "
            "ELBO is per answer token, so the margin is in nats per token."
        },
    )
    mc_budget: int = field(
        default=8,
        metadata={"help": "Monte Carlo samples n = n_t * n_y per ELBO estimate (per answer and model); LLaDA 1.5: 8."},
    )
    mc_timesteps: int | None = field(
        default=None,
        metadata={
            "help": "Timesteps n_t per estimate (each with mc_budget / n_t masks). None: n_t = mc_budget, one mask "
            "each, the optimal allocation of VRPO."
        },
    )
    antithetic: bool = field(
        default=True,
        metadata={
            "help": "Antithetic sampling: the policy and the reference ELBOs of an answer use the same timesteps and "
            "masks (VRPO). False draws the reference's independently (for comparison)."
        },
    )
    elbo_estimator: str = field(
        default="timestep",
        metadata={
            "help": "'timestep': t ~ U(0, 1), each answer token masked with probability (1 - eps) t + eps, weight 1/p "
            "(the training objective). 'mask_count': l ~ U{1..L} answer tokens masked exactly, weight L/l (the "
            "likelihood estimator of DESIGN.md section 6)."
        },
    )
    random_length_prob: float = field(
        default=0.0, metadata={"help": "Not used by VRPO (answers are never cut); must stay 0."}
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta ({self.beta}) must be > 0; trl's DPO uses 0.1.")
        if self.mc_budget < 1:
            raise ValueError(f"mc_budget ({self.mc_budget}) must be at least 1; VRPO uses 8.")
        if self.mc_timesteps is not None and (
            self.mc_timesteps < 1 or self.mc_timesteps > self.mc_budget or self.mc_budget % self.mc_timesteps
        ):
            raise ValueError(
                f"mc_timesteps ({self.mc_timesteps}) must divide mc_budget ({self.mc_budget}) (n = n_t * n_y); use "
                f"a divisor of {self.mc_budget}, or None for n_t = n (optimal allocation)."
            )
        if self.elbo_estimator not in ELBO_ESTIMATORS:
            raise ValueError(f"elbo_estimator ({self.elbo_estimator!r}) must be one of {ELBO_ESTIMATORS}.")
        if self.random_length_prob != 0:
            raise ValueError(f"random_length_prob ({self.random_length_prob}) must be 0 for VRPO.")

    @property
    def n_timesteps(self) -> int:
        """n_t: timesteps per ELBO estimate."""
        return self.mc_timesteps or self.mc_budget

    @property
    def allocation(self) -> str:
        """'optimal' (n_t = n) or 'n_t x n_y'."""
        n_t = self.n_timesteps
        return "optimal" if n_t == self.mc_budget else f"{n_t} timesteps x {self.mc_budget // n_t} masks"


def sample_elbo_masks(
    maskable: torch.Tensor,
    budget: int,
    n_timesteps: int,
    generator: torch.Generator,
    estimator: str = "timestep",
    eps: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Monte Carlo masks of the ELBO estimates of R answers: (R n, L) bool masks and (R n,) p, rows of answer r at
    r n .. r n + n - 1; n_t timesteps (or mask counts) per answer, each repeated for n / n_t independent masks.

    Args:
        maskable (`torch.BoolTensor` of shape `(R, L)`): the answer positions (never the prompt).
    """
    rows, length = maskable.shape
    per_timestep = budget // n_timesteps
    device = maskable.device
    row_maskable = maskable.repeat_interleave(budget, dim=0)  # (R n, L)
    if estimator == "timestep":
        p = sample_mask_probability(rows * n_timesteps, device=device, generator=generator, eps=eps)
        p = p.repeat_interleave(per_timestep)  # (R n,)
        return forward_mask(row_maskable.shape, p, row_maskable, generator=generator), p
    answer_length = maskable.sum(dim=1).repeat_interleave(n_timesteps)  # (R n_t,)
    u = torch.rand(rows * n_timesteps, device=device, generator=generator)
    counts = (u * answer_length).long().clamp_(max=answer_length - 1) + 1  # l ~ U{1..L}
    counts = counts.repeat_interleave(per_timestep)  # (R n,)
    masked = mask_exact_counts(counts, length, device=device, generator=generator, maskable=row_maskable)
    p = counts.float() / row_maskable.sum(dim=1).float()
    return masked, p


def elbo_estimates(
    model,
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    masked: torch.Tensor,
    p: torch.Tensor,
    mask_token_id: int,
    validate_inputs: bool = True,
    output_router_logits: bool = False,
):
    """(R,) Monte Carlo ELBO of each row's answer (per answer token) from the masks of `sample_elbo_masks`
    (`(elbos, model_output)` with `output_router_logits`, LLaDA-MoE: for the router losses).

    Args:
        input_ids (`torch.LongTensor` of shape `(R, L)`), maskable (`(R, L)` bool): the clean rows and their answers.
        masked (`(R n, L)` bool), p (`(R n,)`): the Monte Carlo masks, n per row, row-major.
    """
    budget = masked.shape[0] // input_ids.shape[0]
    result = masked_diffusion_loss_rows(
        model,
        input_ids.repeat_interleave(budget, dim=0),
        maskable.repeat_interleave(budget, dim=0),
        masked,
        p,
        mask_token_id,
        validate_inputs=validate_inputs,
        output_router_logits=output_router_logits,
    )  # (R n,)
    terms, out = result if output_router_logits else (result, None)
    elbos = -terms.view(input_ids.shape[0], budget).mean(dim=1)
    return (elbos, out) if output_router_logits else elbos


def _is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


def _vocabulary_size(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "padded_vocab_size", None) or getattr(config, "vocab_size", None)


class LLaDAVRPOTrainer(LLaDATrainer):
    """Preference optimization of LLaDA by VRPO (module docstring), with trl `DPOTrainer` ergonomics: a dataset of
    `prompt`/`chosen`/`rejected` examples, a reference model made for you, and trl's metrics in the logs
    (`rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`, `elbo/chosen`, `elbo/rejected`;
    a reward is beta * (B_theta - B_ref)).

    Args:
        model: the policy (an `LLaDAModelLM`, or a peft model of one).
        ref_model (*optional*): the reference. Default: a frozen copy of `model`, or for a peft model the same model
            with its adapter disabled. It must share the policy's vocabulary.
        args (`LLaDAVRPOConfig`).
        data_collator (*optional*): default `LLaDAPreferenceCollator(processing_class)`.
        Other arguments as `transformers.Trainer`.

    Example:

    ```python
    >>> from llada.training import LLaDAVRPOConfig, LLaDAVRPOTrainer
    >>> args = LLaDAVRPOConfig(output_dir="out", beta=0.1, per_device_train_batch_size=4, learning_rate=5e-7)
    >>> trainer = LLaDAVRPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    >>> trainer.train()
    ```
    """

    def __init__(self, model=None, ref_model=None, args=None, data_collator=None, processing_class=None, **kwargs):
        if not isinstance(args, LLaDAVRPOConfig):
            raise ValueError(
                f"LLaDAVRPOTrainer needs args=LLaDAVRPOConfig(...), got {type(args).__name__}; the VRPO options "
                "(beta, mc_budget, mc_timesteps, antithetic, elbo_estimator) live there."
            )
        if data_collator is None:
            if processing_class is None:
                raise ValueError(
                    "Pass data_collator=LLaDAPreferenceCollator(tokenizer) or processing_class=<tokenizer>."
                )
            data_collator = LLaDAPreferenceCollator(processing_class)
        super().__init__(
            model=model, args=args, data_collator=data_collator, processing_class=processing_class, **kwargs
        )
        self._stored_metrics = defaultdict(lambda: defaultdict(list))
        policy = self.accelerator.unwrap_model(self.model)
        if ref_model is None and not _is_peft_model(policy):
            ref_model = copy.deepcopy(policy)
        if ref_model is not None:
            ours, theirs = _vocabulary_size(policy), _vocabulary_size(ref_model)
            if ours != theirs:
                raise ValueError(
                    f"The reference model has {theirs} embeddings but the policy {ours}: VRPO compares the two on the "
                    "same tokens; start both from the same checkpoint (or pass ref_model=None for a copy)."
                )
            ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        self.ref_model = ref_model

    # ---- reference -----------------------------------------------------------------------------------------------

    def _reference(self, model):
        """(reference module, context) to score with the reference: the copy, or the policy without adapter."""
        if self.ref_model is not None:
            return self.ref_model, contextlib.nullcontext()
        policy = self.accelerator.unwrap_model(model)
        return policy, policy.disable_adapter()

    # ---- batches -------------------------------------------------------------------------------------------------

    batch_rows_key = "chosen_input_ids"  # the loss is averaged over the pairs of the whole optimizer step

    def sample_elbo_masks(
        self, input_ids: torch.Tensor, maskable: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(R n, L) masks and (R n,) p of the ELBO estimates of the (R, L) rows (override to fix them in tests)."""
        args = self.args
        return sample_elbo_masks(
            maskable, args.mc_budget, args.n_timesteps, generator, estimator=args.elbo_estimator, eps=args.mask_eps
        )

    # ---- loss ----------------------------------------------------------------------------------------------------

    def preference_terms(self, model, inputs: dict, seed: int) -> dict[str, torch.Tensor]:
        """Policy and reference ELBOs ((B,) each, for chosen and rejected) of a preference batch."""
        for key in ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"):
            if key not in inputs:
                raise ValueError(
                    f"A VRPO batch needs {key!r} (got keys {sorted(inputs)}); use LLaDAPreferenceCollator."
                )
        pairs = inputs["chosen_input_ids"].shape[0]
        input_ids = torch.cat([inputs["chosen_input_ids"], inputs["rejected_input_ids"]])  # (2B, L)
        maskable = torch.cat([inputs["chosen_labels"], inputs["rejected_labels"]]) != IGNORE_INDEX  # (2B, L)
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
        masked, p = self.sample_elbo_masks(input_ids, maskable, generator)
        router = self._router_options(model.training)  # LLaDA-MoE: the policy's router losses, as in LLaDATrainer
        policy = elbo_estimates(
            model,
            input_ids,
            maskable,
            masked,
            p,
            self.mask_token_id,
            validate_inputs=not self._inputs_validated,
            output_router_logits=router is not None,
        )
        extra = {}
        if router is not None:
            policy, out = policy
            extra["router_loss"] = self._router_loss(out, None, *router)  # per row of the 2 B n scored
        self._inputs_validated = True
        if not self.args.antithetic:
            generator = torch.Generator(device=input_ids.device).manual_seed(_mix_seed(seed, 2))
            masked, p = self.sample_elbo_masks(input_ids, maskable, generator)
        reference_model, context = self._reference(model)
        with torch.no_grad(), context:
            reference = elbo_estimates(
                reference_model, input_ids, maskable, masked, p, self.mask_token_id, validate_inputs=False
            )
        return {
            "policy_chosen": policy[:pairs],
            "policy_rejected": policy[pairs:],
            "reference_chosen": reference[:pairs],
            "reference_rejected": reference[pairs:],
            **extra,
        }

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """The VRPO loss of this micro-batch, scaled so that the micro-batches and processes of one optimizer step add
        up to the mean over the step's pairs (`num_items_in_batch` = its pairs on all processes)."""
        training = model.training
        terms = self.preference_terms(model, inputs, self._mask_seed(training))
        beta = self.args.beta
        chosen_rewards = beta * (terms["policy_chosen"] - terms["reference_chosen"])  # (B,)
        rejected_rewards = beta * (terms["policy_rejected"] - terms["reference_rejected"])
        losses = -F.logsigmoid(chosen_rewards - rejected_rewards)  # (B,)
        total = losses.sum()
        if "router_loss" in terms:  # LLaDA-MoE training: weighted per pair, like the preference loss
            total = total + losses.shape[0] * terms["router_loss"]
        if training and num_items_in_batch is not None:
            loss = total * self.accelerator.num_processes / num_items_in_batch
        else:
            loss = total / losses.shape[0]
        self._store_metrics(
            "train" if training else "eval",
            {
                "rewards/chosen": chosen_rewards,
                "rewards/rejected": rejected_rewards,
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
                "rewards/margins": chosen_rewards - rejected_rewards,
                "elbo/chosen": terms["policy_chosen"],
                "elbo/rejected": terms["policy_rejected"],
            },
        )
        return (loss, {**terms, "losses": losses}) if return_outputs else loss

    # ---- publishing ----------------------------------------------------------------------------------------------

    def model_card_method(self) -> str:
        """The "Training" paragraph of the model card for a VRPO run (`llada.hub.training_details` shows it)."""
        args = self.args
        reference = "a frozen copy of the starting model" if self.ref_model is not None else "the base model"
        if self.ref_model is None:
            reference += " (the policy with its LoRA adapter disabled)"
        text = (
            "Preference-optimized with **VRPO** (Variance-Reduced Preference Optimization, LLaDA 1.5): DPO with the "
            f"diffusion ELBO in place of the log-likelihood, beta = {args.beta}, reference model: {reference}. "
            f"ELBO estimator: `{args.elbo_estimator}`, Monte Carlo budget n = {args.mc_budget} per answer and model, "
            f"allocation: {args.allocation}, antithetic sampling: {'on' if args.antithetic else 'off'}."
        )
        dataset = self.train_dataset
        if dataset is not None and hasattr(dataset, "__len__"):
            text += f" Data: {len(dataset):,} preference pairs (prompt, chosen, rejected)."
        evals = [h for h in self.state.log_history if "eval_rewards/accuracies" in h]
        if evals:
            text += (
                f" Held-out reward accuracy {evals[-1]['eval_rewards/accuracies']:.3f} and margin "
                f"{evals[-1]['eval_rewards/margins']:.4f} at step {evals[-1].get('step', '?')}."
            )
        return text

    # ---- metrics -------------------------------------------------------------------------------------------------

    def _store_metrics(self, split: str, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            value = value.detach()
            if self.args.world_size > 1:
                value = self.accelerator.gather_for_metrics(value)
            self._stored_metrics[split][key].extend(value.float().cpu().tolist())

    def _pop_metrics(self, split: str, prefix: str = "") -> dict[str, float]:
        stored = self._stored_metrics.pop(split, {})
        return {f"{prefix}{key}": sum(values) / len(values) for key, values in stored.items() if values}

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Adds the means of trl's DPO metrics since the last log (training logs carry `loss`)."""
        if "loss" in logs:
            logs = {**logs, **self._pop_metrics("train")}
        return super().log(logs, *args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        self._stored_metrics.pop("eval", None)
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        output.metrics.update(self._pop_metrics("eval", f"{prefix}_"))
        return output


__all__ = ["ELBO_ESTIMATORS", "LLaDAVRPOConfig", "LLaDAVRPOTrainer", "elbo_estimates", "sample_elbo_masks"]
