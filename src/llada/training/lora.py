"""LoRA for LLaDA with peft.

LLaDA keeps the published OLMo module names, where the suffix `ff_out` names two different things: the down
projection of every block (`model.transformer.blocks.{i}.ff_out`) and the LM head (`model.transformer.ff_out`).
A plain `target_modules=["ff_out"]` would adapt the 126k-row head too; `llada_lora_config` matches the block
modules only.

LLaDA-MoE (`moe=True`) has the published transformers-style names: attention `self_attn.{q,k,v,o}_proj`, the dense
MLPs `mlp.{gate,up,down}_proj` and the shared expert `shared_expert.{gate,up,down}_proj`. The router (`mlp.gate`) and
the head (`lm_head`) are never adapted; the routed experts (3D parameters `mlp.experts.gate_up_proj` / `down_proj`)
only with `experts=True` (peft's `target_parameters`).
"""

import re
from collections.abc import Sequence

#: The block linear layers: attention q/k/v and output, MLP gate (`ff_proj`), up and down (`ff_out`) projections.
LLADA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
#: LLaDA-MoE's linear layers inside its decoder layers (attention, dense MLPs, shared expert).
LLADA_MOE_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: The routed experts' 3D parameters (adapted with `experts=True`).
LLADA_MOE_EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def moe_lora_target_regex(modules: Sequence[str] = LLADA_MOE_LORA_TARGETS) -> str:
    """A regex selecting LLaDA-MoE's `modules` in attention, dense MLPs and shared experts (never `mlp.gate`, the
    router, nor `lm_head`)."""
    unknown = sorted(set(modules) - set(LLADA_MOE_LORA_TARGETS))
    if unknown or not modules:
        raise ValueError(
            f"LoRA target modules {list(modules)} must be a non-empty subset of the LLaDA-MoE layers "
            f"{list(LLADA_MOE_LORA_TARGETS)} (unknown: {unknown})."
        )
    attn = [m for m in modules if m in ("q_proj", "k_proj", "v_proj", "o_proj")]
    mlp = [m for m in modules if m in ("gate_proj", "up_proj", "down_proj")]
    parts = []
    if attn:
        parts.append(rf"self_attn\.({'|'.join(attn)})")
    if mlp:
        parts.append(rf"(mlp|shared_expert)\.({'|'.join(mlp)})")
    return rf".*\.layers\.\d+\.({'|'.join(parts)})"


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
    target_modules: Sequence[str] | None = None,
    moe: bool = False,
    experts: bool = False,
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
        target_modules (`Sequence[str]`, *optional*):
            Which layers to adapt, by their short names; defaults to `LLADA_LORA_TARGETS` (dense) or
            `LLADA_MOE_LORA_TARGETS` (`moe=True`).
        moe (`bool`, *optional*, defaults to `False`):
            Target a LLaDA-MoE model (`isinstance(model.config, LLaDAMoEConfig)`).
        experts (`bool`, *optional*, defaults to `False`):
            With `moe=True`, also adapt the routed experts' 3D parameters (peft `target_parameters`).
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
    if experts and not moe:
        raise ValueError("llada_lora_config(experts=True) needs moe=True: only LLaDA-MoE has routed experts.")
    if moe:
        pattern = moe_lora_target_regex(LLADA_MOE_LORA_TARGETS if target_modules is None else target_modules)
        if experts:
            kwargs.setdefault("target_parameters", list(LLADA_MOE_EXPERT_PARAMETERS))
    else:
        pattern = lora_target_regex(LLADA_LORA_TARGETS if target_modules is None else target_modules)
    return LoraConfig(
        r=r,
        lora_alpha=2 * r if lora_alpha is None else lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=pattern,
        bias="none",
        **kwargs,
    )


__all__ = [
    "LLADA_LORA_TARGETS",
    "LLADA_MOE_EXPERT_PARAMETERS",
    "LLADA_MOE_LORA_TARGETS",
    "llada_lora_config",
    "lora_target_regex",
    "moe_lora_target_regex",
]
