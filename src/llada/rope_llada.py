"""Rotary position embeddings of LLaDA and their context extensions (`config.rope_scaling`).

`rope_scaling` holds a `rope_type` and its parameters:

- the standard types `linear`, `dynamic`, `yarn`, `llama3` and `longrope`: the inverse frequencies come from
  transformers' own `ROPE_INIT_FUNCTIONS` (nothing re-implemented here);
- `ntk` with a `factor`: the base becomes `rope_theta * factor` (what UltraLLaDA's released evaluation code does);
- `diffusion_ntk` with a `factor` (UltraLLaDA's diffusion-aware NTK, see `diffusion_ntk_base`).

`original_max_position_embeddings` is the training length T_train (defaults to `max_sequence_length` when the
scaling is first set) and the target is T_target = T_train * factor; `max_sequence_length` is raised to the target, so
the model accepts the longer inputs and everything else (generation, likelihood) keeps refusing longer ones.

Hub core: imports only torch, transformers and the standard library.
"""

import math

import torch

#: rope types whose inverse frequencies come from `transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`.
TRANSFORMERS_ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3", "longrope")
#: rope types defined here.
DIFFUSION_ROPE_TYPES = ("ntk", "diffusion_ntk")
ROPE_TYPES = ("default", *TRANSFORMERS_ROPE_TYPES, *DIFFUSION_ROPE_TYPES)

# Keys each type needs besides `rope_type` (`original_max_position_embeddings` is always filled in).
_REQUIRED_KEYS = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
    "longrope": ("short_factor", "long_factor"),
    "ntk": ("factor",),
    "diffusion_ntk": ("factor",),
}


def normalize_rope_scaling(
    rope_scaling: dict | None, max_sequence_length: int, rope_theta: float
) -> tuple[dict | None, int, float]:
    """Check a `rope_scaling` (or transformers 5 `rope_parameters`) dict and return it in canonical form.

    Returns `(rope_scaling, max_sequence_length, rope_theta)`: `rope_scaling` is `None` for plain RoPE, otherwise a
    new dict with `rope_type` (the legacy key `type` is accepted) and `original_max_position_embeddings`; a
    `rope_theta` inside the dict (transformers 5 puts it there) replaces the config's; `max_sequence_length` is
    raised to the target length T_train * factor. Bad values raise a `ValueError` naming the value and the fix.
    """
    if rope_scaling is None:
        return None, max_sequence_length, rope_theta
    if not isinstance(rope_scaling, dict):
        raise ValueError(
            f"LLaDAConfig: rope_scaling must be a dict such as {{'rope_type': 'diffusion_ntk', 'factor': 4.0}} or "
            f"None, got {rope_scaling!r}."
        )
    params = dict(rope_scaling)
    if "rope_theta" in params:
        rope_theta = float(params.pop("rope_theta"))
    legacy_type = params.pop("type", None)
    rope_type = params.pop("rope_type", legacy_type or "default")
    if rope_type not in ROPE_TYPES:
        raise ValueError(
            f"LLaDAConfig: unknown rope_scaling rope_type {rope_type!r}; use one of {', '.join(ROPE_TYPES)} (or "
            "rope_scaling=None for plain RoPE)."
        )
    if rope_type == "default":
        if params.get("factor", 1.0) != 1.0:
            raise ValueError(
                f"LLaDAConfig: rope_type 'default' takes no factor (got {params['factor']!r}); choose a scaling type "
                f"({', '.join(ROPE_TYPES[1:])})."
            )
        return None, max_sequence_length, rope_theta
    missing = [key for key in _REQUIRED_KEYS[rope_type] if params.get(key) is None]
    if missing:
        raise ValueError(
            f"LLaDAConfig: rope_scaling of type {rope_type!r} needs {', '.join(missing)}; e.g. "
            f"{{'rope_type': {rope_type!r}, 'factor': 4.0}}."
        )
    factor = params.get("factor")
    if factor is not None:
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 0:
            raise ValueError(
                f"LLaDAConfig: rope_scaling factor must be a positive number (target length / training length), got "
                f"{factor!r}."
            )
        if factor < 1:
            raise ValueError(
                f"LLaDAConfig: rope_scaling factor {factor} < 1 asks for a target shorter than the training length; "
                "use a factor >= 1 (or no rope_scaling)."
            )
        params["factor"] = float(factor)
    original = params.get("original_max_position_embeddings", max_sequence_length)
    if isinstance(original, bool) or not isinstance(original, int) or original < 1:
        raise ValueError(
            "LLaDAConfig: rope_scaling original_max_position_embeddings (the training length) must be a positive "
            f"integer, got {original!r}."
        )
    params["original_max_position_embeddings"] = original
    target = math.ceil(original * factor) if factor is not None else max_sequence_length
    if target < original:
        raise ValueError(
            f"LLaDAConfig: the target length {target} is shorter than the training length {original}; raise "
            "max_sequence_length or lower original_max_position_embeddings."
        )
    if rope_type == "diffusion_ntk":
        diffusion_ntk_base(2, rope_theta, original, target)  # checks the training length
    return {"rope_type": rope_type, **params}, max(max_sequence_length, target), rope_theta


def diffusion_critical_dim(head_dim: int, base: float, train_length: int) -> int:
    """UltraLLaDA's critical dimension: d_crit = 2 * ceil((d / 2) * log_base(2 * T_train / (2 pi))).

    A bidirectional model sees relative distances in (-T_train, T_train), a range of about 2 * T_train. Rotary pair
    i (dims 2i, 2i+1) has period 2 pi * base^(2i / d); the pairs below d_crit / 2 turn through a full period within
    that range during training, the others only through part of it.
    """
    span = 2 * train_length / (2 * math.pi)
    if span <= 1:
        raise ValueError(
            f"LLaDAConfig: diffusion_ntk needs a training length above pi (got original_max_position_embeddings="
            f"{train_length}); set original_max_position_embeddings to the length the model was trained at."
        )
    return 2 * math.ceil((head_dim / 2) * math.log(span) / math.log(base))


def diffusion_ntk_base(head_dim: int, base: float, train_length: int, target_length: int) -> float:
    """The rotary base of UltraLLaDA's diffusion-aware NTK: (2 * T_target / (2 pi)) ** (d / d_crit).

    It stretches the critical pair's period to the target's relative-distance range 2 * T_target, so that the pairs
    that did not complete a period in training see no new angles at the target length. The base never drops below
    `base` (with a factor near 1 the rounding of d_crit can give a smaller value, which would shorten trained
    wavelengths); a factor of 1 therefore leaves the base unchanged. For LLaDA-8B (d = 128, base 5e5, 4K -> 128K):
    d_crit = 70 and a base of about 2.8e8.
    """
    d_crit = diffusion_critical_dim(head_dim, base, train_length)
    new_base = (2 * target_length / (2 * math.pi)) ** (head_dim / d_crit)
    return max(float(base), new_base)


class _RopeConfigView:
    """The attributes transformers' RoPE init functions read (4.x and 5.x), for one head and these parameters."""

    def __init__(self, params: dict, head_dim: int, max_position_embeddings: int):
        self.rope_parameters = params
        self.rope_scaling = params
        self.rope_theta = params["rope_theta"]
        self.head_dim = head_dim
        self.hidden_size = head_dim
        self.num_attention_heads = 1
        self.partial_rotary_factor = 1.0
        self.max_position_embeddings = max_position_embeddings

    def standardize_rope_params(self):
        """Already standard."""


def plain_inv_freq(dim: int, theta: float, device=None) -> torch.Tensor:
    """(dim / 2,) float32 inverse frequencies of plain RoPE: theta ** -(2i / dim)."""
    exponents = torch.arange(0, dim, 2, device=device, dtype=torch.float) / dim
    return 1.0 / (theta**exponents)


def rope_frequencies(config, seq_len: int | None = None, device=None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (head_dim / 2,) float32 and the cos/sin scale of `config`'s RoPE.

    `seq_len` is the length of the current sequence (read by `dynamic` and `longrope` only).
    """
    head_dim = config.head_dim
    theta = config.rope_theta
    scaling = getattr(config, "rope_scaling", None)
    rope_type = scaling["rope_type"] if scaling else "default"
    if rope_type in ("default", "ntk", "diffusion_ntk"):
        if rope_type == "ntk":
            theta = theta * scaling["factor"]
        elif rope_type == "diffusion_ntk":
            original = scaling["original_max_position_embeddings"]
            theta = diffusion_ntk_base(head_dim, theta, original, math.ceil(original * scaling["factor"]))
        return plain_inv_freq(head_dim, theta, device), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if rope_type == "longrope":
        for key in ("short_factor", "long_factor"):
            factors = scaling[key]
            if not isinstance(factors, list | tuple) or len(factors) != head_dim // 2:
                got = f"{len(factors)} numbers" if isinstance(factors, list | tuple) else repr(factors)
                raise ValueError(
                    f"LLaDAConfig: rope_scaling {key} must be a list of head_dim / 2 = {head_dim // 2} numbers (one "
                    f"per rotary pair), got {got}."
                )
    params = {**scaling, "rope_theta": theta}
    # `dynamic` reads max_position_embeddings as the training length; the others as the target length.
    if rope_type == "dynamic":
        max_positions = scaling["original_max_position_embeddings"]
    else:
        max_positions = config.max_sequence_length
    view = _RopeConfigView(params, head_dim, max_positions)
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](view, device, seq_len)
    return inv_freq.float(), float(attention_scaling)


def rotary_cos_sin(
    position_ids: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, float32, shape (B or 1, T, head_dim) in the half-split layout.

    Computed from the positions on every call (no buffer): cheap, and nothing to re-initialise after a meta-device
    load. `attention_scaling` multiplies both (YaRN and LongRoPE set it).
    """
    freqs = position_ids.float()[..., None] * inv_freq  # (B, T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
    cos, sin = emb.cos(), emb.sin()
    if attention_scaling != 1.0:
        cos, sin = cos * attention_scaling, sin * attention_scaling
    return cos, sin


__all__ = [
    "DIFFUSION_ROPE_TYPES",
    "ROPE_TYPES",
    "TRANSFORMERS_ROPE_TYPES",
    "diffusion_critical_dim",
    "diffusion_ntk_base",
    "normalize_rope_scaling",
    "plain_inv_freq",
    "rope_frequencies",
    "rotary_cos_sin",
]
