"""`LLaDATrainingArguments`: `TrainingArguments` plus the options of the diffusion forward process."""

from dataclasses import dataclass, field, fields

import torch
from transformers import TrainingArguments

from ..masking_llada import MASK_EPS

#: The `TrainingArguments` field that turns on activation (gradient) checkpointing: newer transformers 5.x renamed
#: `gradient_checkpointing` to `activation_checkpointing` (keeping the old name as a deprecated alias).
CHECKPOINTING_ARGUMENT = (
    "activation_checkpointing"
    if "activation_checkpointing" in {f.name for f in fields(TrainingArguments)}
    else "gradient_checkpointing"
)


@dataclass
class LLaDATrainingArguments(TrainingArguments):
    """`TrainingArguments` for `LLaDATrainer`.

    Besides the options below, two `TrainingArguments` defaults change: `remove_unused_columns=False` (the
    collators read raw columns such as `text` or `messages`) and `label_names=["labels"]`.

    Example:

    ```python
    >>> args = LLaDATrainingArguments(output_dir="out", per_device_train_batch_size=8, random_length_prob=0.0)
    ```
    """

    mask_eps: float = field(
        default=MASK_EPS,
        metadata={
            "help": "Smallest masking probability of the forward process: each sequence draws t ~ U(0, 1) and masks "
            "each maskable token with probability p = (1 - mask_eps) t + mask_eps."
        },
    )
    random_length_prob: float = field(
        default=0.01,
        metadata={
            "help": "Probability that a pretraining batch is cut to a random length in [1, L] (LLaDA does this for "
            "1%% of the data so that the model also sees short sequences). Applies only to batches without prompt "
            "positions (labels never -100); 0 disables it."
        },
    )
    mask_token_id: int | None = field(
        default=None,
        metadata={"help": "Id of the mask token; defaults to the model's config.mask_token_id."},
    )
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={
            "help": "LLaDA-MoE: weight of the router load-balancing loss; defaults to the model's "
            "config.router_aux_loss_coef (0 disables it). Ignored for dense models."
        },
    )
    router_z_loss_coef: float | None = field(
        default=None,
        metadata={"help": "LLaDA-MoE: weight of the router z-loss; defaults to config.router_z_loss_coef (0: off)."},
    )
    expert_bias_update_rate: float = field(
        default=0.0,
        metadata={
            "help": "LLaDA-MoE with moe_router_enable_expert_bias: after each optimizer step, expert_bias += rate * "
            "sign(mean load - load) (auxiliary-loss-free balancing). 0 (default) leaves the bias alone."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep dataset columns such as `text` or `messages`: the LLaDA collators read them."},
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"],
        metadata={"help": "Batch keys holding the labels (`labels`: -100 marks never-masked prompt positions)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.dataloader_pin_memory and (self.use_cpu or not torch.accelerator.is_available()):
            # Pinned memory only helps copies to an accelerator; on the CPU torch just warns that it is unused.
            self.dataloader_pin_memory = False
        if not 0.0 <= self.mask_eps < 1.0:
            raise ValueError(f"mask_eps ({self.mask_eps}) must be in [0, 1); LLaDA uses 1e-3.")
        for name in ("router_aux_loss_coef", "router_z_loss_coef", "expert_bias_update_rate"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} ({value}) must be >= 0 (0 disables it).")
        if not 0.0 <= self.random_length_prob <= 1.0:
            raise ValueError(
                f"random_length_prob ({self.random_length_prob}) must be in [0, 1]; LLaDA uses 0.01, 0 disables it."
            )


__all__ = ["CHECKPOINTING_ARGUMENT", "LLaDATrainingArguments"]
