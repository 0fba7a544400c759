"""LoRA for LLaDA with peft.

LLaDA keeps the published OLMo module names, where the suffix `ff_out` names two different things: the down
projection of every block (`model.transformer.blocks.{i}.ff_out`) and the LM head (`model.transformer.ff_out`).
A plain `target_modules=["ff_out"]` would adapt the 126k-row head too; `llada_lora_config` matches the block
modules only.
"""

import re
from collections.abc import Sequence

#: The block linear layers: attention q/k/v and output, MLP gate (`ff_proj`), up and down (`ff_out`) projections.
LLADA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")


def lora_target_regex(modules: Sequence[str] = LLADA_LORA_TARGETS) -> str:
    """A regex (peft full-matches it against module names) selecting `modules` inside the blocks only.

    Example:

    ```python
    >>> import re
    >>> pattern = lora_target_regex(["ff_out"])
    >>> bool(re.fullmatch(pattern, "model.transformer.blocks.3.ff_out"))  # a block's down projection
    True
    >>> bool(re.fullmatch(pattern, "model.transformer.ff_out"))  # the LM head
    False
    ```
    """
    unknown = sorted(set(modules) - set(LLADA_LORA_TARGETS))
    if unknown or not modules:
        raise ValueError(
            f"LoRA target modules {list(modules)} must be a non-empty subset of the LLaDA block layers "
            f"{list(LLADA_LORA_TARGETS)} (unknown: {unknown})."
        )
    names = "|".join(re.escape(name) for name in modules)
    return rf".*\.blocks\.\d+\.({names})"


def llada_lora_config(
    r: int = 16,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.0,
    target_modules: Sequence[str] = LLADA_LORA_TARGETS,
    **kwargs,
):
    """A peft `LoraConfig` adapting LLaDA's block layers (never the LM head).

    Args:
        r (`int`, *optional*, defaults to 16):
            LoRA rank.
        lora_alpha (`int`, *optional*):
            Scaling numerator (the update is scaled by `lora_alpha / r`); defaults to `2 * r`.
        lora_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the LoRA input.
        target_modules (`Sequence[str]`, *optional*, defaults to `LLADA_LORA_TARGETS`):
            Which block layers to adapt, by their short names.
        kwargs:
            Passed to `LoraConfig` (e.g. `modules_to_save`, `use_rslora`, `init_lora_weights`).

    Example:

    ```python
    >>> from peft import get_peft_model
    >>> model = get_peft_model(LLaDAModelLM.from_pretrained(path), llada_lora_config(r=8))
    >>> model.print_trainable_parameters()
    ```
    """
    from peft import LoraConfig

    if r < 1:
        raise ValueError(f"LoRA rank r ({r}) must be at least 1.")
    return LoraConfig(
        r=r,
        lora_alpha=2 * r if lora_alpha is None else lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_target_regex(target_modules),
        bias="none",
        **kwargs,
    )


__all__ = ["LLADA_LORA_TARGETS", "llada_lora_config", "lora_target_regex"]
