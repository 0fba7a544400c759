"""Diffusion generation for LLaDA: the reverse (unmasking) process as `model.generate`.

The canvas `x = prompt ++ [mask] * max_new_tokens` is filled block by block (semi-autoregressive blocks of
`block_length` tokens, `steps / num_blocks` steps each). Every step predicts all masked tokens of the current block,
scores each prediction with a remasking strategy (a confidence) and keeps the most confident ones; the rest stay
masked for the next step. At temperature 0 this reproduces the published sampler token for token.

What differs from the published `generate.py`:

- the LM head runs only on the positions of the current block (`logits_to_keep`), and float64 Gumbel noise is drawn
  only when `temperature > 0`, and only for those positions;
- steps that would unmask no token in any row (more steps than masks) are skipped: same result, fewer forward passes;
- options beyond the reference: `kv_cache="prefix" | "dual"`, parallel decoding (`threshold`, `factor`), `early_exit`,
  `margin` / `entropy` remasking, infilling (masks anywhere in the input) and canvases streamed per step.

Example:

```python
>>> from transformers import AutoTokenizer
>>> from llada import LLaDAModelLM
>>> from llada.generation_llada import decode_generation
>>> tokenizer = AutoTokenizer.from_pretrained("GSAI-ML/LLaDA-8B-Instruct")
>>> model = LLaDAModelLM.from_pretrained("GSAI-ML/LLaDA-8B-Instruct", dtype="bfloat16")
>>> messages = [{"role": "user", "content": "What is 7 * 8?"}]
>>> ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
>>> out = model.generate(ids["input_ids"], max_new_tokens=64, steps=64, block_length=32)
>>> decode_generation(tokenizer, out, prompt_length=ids["input_ids"].shape[1])
['7 * 8 = 56.']
>>> fast = model.generate(ids["input_ids"], max_new_tokens=64, block_length=32, kv_cache="dual", threshold=0.9,
...                       return_dict_in_generate=True)
>>> fast.nfe  # forward passes used
```

Hub core: copied next to saved weights; imports only torch, transformers, the standard library and sibling files.
"""

import copy
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import GenerationConfig
from transformers.utils import ModelOutput, logging

from .masking_llada import transfer_schedule

logger = logging.get_logger(__name__)

#: `<|eot_id|>` of the LLaDA-8B tokenizer (end of an Instruct turn). Used as the EoT default for models whose mask
#: id is the 8B one; other vocabularies set `eot_token_id` in their generation config.
LLADA_8B_EOT_TOKEN_ID = 126348
LLADA_8B_MASK_TOKEN_ID = 126336

# --------------------------------------------------------------------------------------------------------------------
# Remasking strategies: (logits (B, W, V), x0 (B, W), generator) -> confidence (B, W); higher is unmasked first.
# --------------------------------------------------------------------------------------------------------------------

RemaskingFunction = Callable[..., torch.Tensor]
REMASKING_FUNCTIONS: dict[str, RemaskingFunction] = {}


def register_remasking(name: str) -> Callable[[RemaskingFunction], RemaskingFunction]:
    """Register a remasking strategy under `name`, usable as `model.generate(..., remasking=name)`.

    The function is called as `fn(logits, x0, generator=generator)` with the logits `(B, W, V)` of the `W` positions
    of the current block (after the EOS options were applied) and the proposed tokens `x0` `(B, W)`; it returns a
    confidence `(B, W)`. At each step the most confident masked positions are unmasked. Registering an existing name
    replaces it.

    Example:

    ```python
    >>> @register_remasking("max_logit")
    ... def max_logit(logits, x0, generator=None):
    ...     return logits.gather(-1, x0[..., None]).squeeze(-1).float()
    ```
    """

    def decorator(fn: RemaskingFunction) -> RemaskingFunction:
        REMASKING_FUNCTIONS[name] = fn
        return fn

    return decorator


@register_remasking("low_confidence")
def low_confidence_remasking(logits: torch.Tensor, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """p(x0): the model's probability of the proposed token (the published default). Computed in the logits'
    dtype, as published: in bf16 many confidences are equal, and the published tie-breaking is then reproduced."""
    p = F.softmax(logits, dim=-1)  # (B, W, V)
    return p.gather(-1, x0[..., None]).squeeze(-1)


@register_remasking("random")
def random_remasking(logits: torch.Tensor, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """U(0, 1): unmask in random order (the published `random` strategy)."""
    return torch.rand(x0.shape, device=x0.device, generator=generator)


@register_remasking("margin")
def margin_remasking(logits: torch.Tensor, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """p(x0) minus the largest probability of any other token."""
    p = F.softmax(logits, dim=-1, dtype=torch.float32)  # (B, W, V)
    top = p.topk(2, dim=-1)
    p_x0 = p.gather(-1, x0[..., None]).squeeze(-1)
    runner_up = torch.where(top.indices[..., 0] == x0, top.values[..., 1], top.values[..., 0])
    return p_x0 - runner_up


@register_remasking("entropy")
def entropy_remasking(logits: torch.Tensor, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """Negative entropy of the predicted distribution (low entropy first)."""
    logp = F.log_softmax(logits, dim=-1, dtype=torch.float32)  # (B, W, V)
    # A token with -inf logit (EOS options, suppressed ids) has p log p = 0, not 0 * -inf = NaN.
    return (logp.exp() * logp.masked_fill(logp == float("-inf"), 0.0)).sum(-1)


# --------------------------------------------------------------------------------------------------------------------
# Configuration and output
# --------------------------------------------------------------------------------------------------------------------

KV_CACHE_MODES = (None, "prefix", "dual")

# `GenerationConfig` fields of autoregressive decoding that have no diffusion meaning: an error, not silently ignored.
_AUTOREGRESSIVE_ONLY = {
    "num_beams": 1,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "output_attentions": False,
    "output_hidden_states": False,
}

# Keywords of `generate` that mean something to the reverse process (besides the diffusion fields below). Any other
# `GenerationConfig` field passed to `generate` (top_k, repetition_penalty, min_new_tokens, ...) is an error rather
# than silently ignored.
_MEANINGFUL_KWARGS = {
    "max_new_tokens",
    "temperature",
    "do_sample",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "return_dict_in_generate",
}

_DIFFUSION_DEFAULTS = {
    "steps": None,
    "block_length": None,
    "remasking": "low_confidence",
    "cfg_scale": 0.0,
    "logits_eos_inf": False,
    "confidence_eos_eot_inf": False,
    "kv_cache": None,
    "threshold": None,
    "factor": None,
    "early_exit": False,
    "output_history": False,
    "mask_token_id": None,
    "eot_token_id": None,
}


class LLaDAGenerationConfig(GenerationConfig):
    r"""
    Settings of LLaDA's reverse diffusion process, saved as `generation_config.json` next to the weights. Any field
    can also be passed to `generate` as a keyword (`max_length` is read as prompt length + `max_new_tokens`). Fields
    of `GenerationConfig` that belong to autoregressive decoding (`top_k`, `repetition_penalty`, beams, ...) are
    ignored when saved in a config and rejected when passed to `generate`.

    Args:
        max_new_tokens (`int`, *optional*, defaults to 128):
            Length of the canvas appended to the prompt. 0 with masks in the input: fill only those (infilling).
        steps (`int`, *optional*):
            Denoising steps over the whole canvas, split evenly over the blocks. `None`: one token per step
            (`max_new_tokens`, or the number of masks when infilling).
        block_length (`int`, *optional*):
            Tokens per semi-autoregressive block; must divide `max_new_tokens`. `None`: one block.
        temperature (`float`, *optional*, defaults to 0.0):
            0 picks the argmax; > 0 samples with Gumbel-max noise (float64) at this temperature.
        remasking (`str`, *optional*, defaults to `"low_confidence"`):
            Confidence used to choose which predictions to keep: `"low_confidence"` (p(x0)), `"random"`, `"margin"`,
            `"entropy"`, or a name added with `register_remasking`.
        cfg_scale (`float`, *optional*, defaults to 0.0):
            Classifier-free guidance weight w: logits = un + (w + 1) (cond - un), where the unconditional input has
            every prompt position masked. 0 disables it (one forward pass per step instead of a double batch).
        logits_eos_inf (`bool`, *optional*, defaults to `False`):
            Published option: set the EOS logits to -inf, so EOS is never proposed.
        confidence_eos_eot_inf (`bool`, *optional*, defaults to `False`):
            Published option: EOS and EoT are excluded from the confidence distribution and a position that proposes
            either is unmasked last, which keeps the model from ending early. (This is what the published code does
            at temperature 0; at temperature > 0 it excludes only EoT, which we treat as a slip and do not copy.)
        kv_cache (`str`, *optional*):
            `None` (exact path: the whole sequence every step), `"prefix"` (keys/values before the current block are
            computed at the block's first step and reused) or `"dual"` (also those after the block; each step feeds
            only the block). Approximate: the cached keys/values are those of the block's first step.
        threshold (`float`, *optional*):
            Parallel decoding: each step also unmasks every masked position of the block whose confidence is at
            least `threshold` (in (0, 1]); at least the scheduled number, and at least one, are unmasked.
        factor (`float`, *optional*):
            Parallel decoding, factor rule: each step unmasks the largest n top-confidence positions with
            (n + 1)(1 - c_n) < factor (c_n the n-th largest confidence); at least the scheduled number and one.
        early_exit (`bool`, *optional*, defaults to `False`):
            At each block boundary, stop once every row has emitted an EOS/EoT and fill the rest of the canvas with
            EOS (what an Instruct model writes after its answer). Saves forward passes; may differ from the exact
            path where a model would write something else after EOS.
        output_history (`bool`, *optional*, defaults to `False`):
            Also return the canvas after every step (implies `return_dict_in_generate=True`).
        mask_token_id (`int`, *optional*):
            The mask token; defaults to the model config's.
        eot_token_id (`int`, *optional*):
            End-of-turn token (`<|eot_id|>`, 126348 in the 8B tokenizer), treated like EOS by
            `confidence_eos_eot_inf`, `early_exit` and `decode_generation`.
        eos_token_id, pad_token_id (`int`, *optional*):
            Default to the model config's.

    Example:

    ```python
    >>> config = LLaDAGenerationConfig(max_new_tokens=256, steps=256, block_length=32, temperature=0.0)
    >>> model.generate(input_ids, generation_config=config)
    ```
    """

    def __init__(self, **kwargs):
        for name, default in _DIFFUSION_DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, default))
        kwargs.setdefault("max_new_tokens", 128)
        kwargs.setdefault("temperature", 0.0)
        # `do_sample` follows the temperature, and is always saved (see `to_diff_dict`): callers such as the
        # text-generation pipeline add their own sampling defaults when the model's config leaves it unset.
        kwargs.setdefault("do_sample", bool(kwargs["temperature"]))
        super().__init__(**kwargs)

    def to_diff_dict(self) -> dict:
        diff = super().to_diff_dict()
        diff["do_sample"] = bool(self.do_sample)
        return diff

    def validate(self, *args, **kwargs):
        """`GenerationConfig.validate`, plus the diffusion fields. The diffusion `temperature` (0 is greedy) and
        `max_new_tokens=0` (infilling) are valid here although autoregressive decoding would flag them."""
        self._check_types()
        hidden = {"temperature": self.temperature}
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            hidden["max_new_tokens"] = self.max_new_tokens
        for name in hidden:
            setattr(self, name, None)
        try:
            super().validate(*args, **kwargs)  # (strict=False) in recent transformers, (is_init=False) in older
        finally:
            for name, value in hidden.items():
                setattr(self, name, value)
        self.validate_diffusion()

    def validate_diffusion(self):
        """Raise a `ValueError` (or a `TypeError` for a value of the wrong type) for diffusion settings that are
        invalid whatever the input."""
        self._check_types()
        if self.max_new_tokens is not None and self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must be >= 0.")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps ({self.steps}) must be >= 1.")
        if self.block_length is not None and self.block_length < 1:
            raise ValueError(f"block_length ({self.block_length}) must be >= 1, or None for a single block.")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0 (0 is greedy).")
        if self.cfg_scale is not None and self.cfg_scale < 0:
            raise ValueError(f"cfg_scale ({self.cfg_scale}) must be >= 0 (0 disables classifier-free guidance).")
        if self.kv_cache not in KV_CACHE_MODES:
            raise ValueError(f"kv_cache={self.kv_cache!r} is not a cache mode; use None, 'prefix' or 'dual'.")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold ({self.threshold}) must be in (0, 1], or None.")
        if self.factor is not None and not self.factor > 0:
            raise ValueError(f"factor ({self.factor}) must be > 0, or None.")
        if self.threshold is not None and self.factor is not None:
            raise ValueError(
                f"threshold ({self.threshold}) and factor ({self.factor}) are two parallel decoding rules; set one."
            )

    def _check_types(self):
        """Numbers of the wrong type or not finite (`"8"`, `3.0`, `True`, `nan`): an error naming the field."""
        for name in ("max_new_tokens", "steps", "block_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"{name} ({value!r}) must be an int, got {type(value).__name__}; e.g. {name}=64.")
        for name in ("temperature", "cfg_scale", "threshold", "factor"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} ({value!r}) must be a number, got {type(value).__name__}.")
            if not math.isfinite(value):
                raise ValueError(f"{name} ({value}) must be a finite number.")
        for name in ("mask_token_id", "eot_token_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"{name} ({value!r}) must be an int token id.")

    @classmethod
    def from_model_config(cls, model_config) -> "LLaDAGenerationConfig":
        """LLaDA defaults with the mask, EOS and pad ids of a model config (a `LLaDAConfig` or its dict)."""
        get = model_config.get if isinstance(model_config, dict) else lambda k, d=None: getattr(model_config, k, d)
        mask = get("mask_token_id")
        eot = get("eot_token_id")
        if eot is None and mask == LLADA_8B_MASK_TOKEN_ID:
            eot = LLADA_8B_EOT_TOKEN_ID
        config = cls(
            mask_token_id=mask,
            eos_token_id=get("eos_token_id"),
            pad_token_id=get("pad_token_id"),
            bos_token_id=get("bos_token_id"),
            eot_token_id=eot,
        )
        config._original_object_hash = hash(config)
        return config

    @classmethod
    def from_generation_config(cls, config: GenerationConfig, model_config=None) -> "LLaDAGenerationConfig":
        """Convert any `GenerationConfig` (e.g. a plain one, or one of another copy of this class); unset special
        ids are taken from `model_config`."""
        if model_config is not None and getattr(config, "_from_model_config", False):
            return cls.from_model_config(model_config)
        values = {k: v for k, v in config.to_dict().items() if v is not None and k != "transformers_version"}
        values.pop("_from_model_config", None)
        new = cls(**values)
        if model_config is not None:
            new.fill_special_ids(model_config)
        return new

    def fill_special_ids(self, model_config):
        """Take the mask/EOS/pad/EoT ids that this config leaves unset from the model config."""
        defaults = LLaDAGenerationConfig.from_model_config(model_config)
        for name in ("mask_token_id", "eos_token_id", "pad_token_id", "eot_token_id", "bos_token_id"):
            if getattr(self, name, None) is None:
                setattr(self, name, getattr(defaults, name))


@dataclass
class LLaDAGenerateOutput(ModelOutput):
    """
    sequences (`torch.LongTensor` of shape `(batch_size, prompt_length + max_new_tokens)`):
        The prompt followed by the generated tokens.
    history (`tuple(torch.LongTensor)`, *optional*):
        With `output_history=True`: the canvas `(batch_size, total_length)` after every forward step.
    nfe (`int`):
        Forward passes of the model for the whole batch (a classifier-free guidance step is one pass over the
        doubled batch).
    tokens_per_forward (`torch.FloatTensor` of shape `(batch_size,)`):
        As in transformers' diffusion models: the tokens each row got from the sampler (the canvas and any masks of
        the input), not counting `pad_token_id`, divided by `nfe`.
    """

    sequences: torch.LongTensor | None = None
    history: tuple[torch.LongTensor, ...] | None = None
    nfe: int | None = None
    tokens_per_forward: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------------------------
# Decoding helpers
# --------------------------------------------------------------------------------------------------------------------


def stop_token_ids_of(tokenizer) -> list[int]:
    """EOS and, when the tokenizer knows it, `<|eot_id|>`: the tokens after which a generation is over."""
    ids = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(tokenizer.eos_token_id)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    if eot is not None:
        ids.append(eot)
    return ids


def strip_after_eos(ids, stop_token_ids) -> list[int]:
    """The token ids before the first stop token (EOS/EoT), as a list."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    stops = set(stop_token_ids)
    for i, token in enumerate(ids):
        if token in stops:
            return ids[:i]
    return ids


def decode_generation(
    tokenizer, sequences, prompt_length: int, stop_token_ids=None, skip_special_tokens: bool = True
) -> list[str]:
    """Decode the generated part of each row of `generate`'s output, cut at the first EOS/EoT.

    Args:
        sequences (`torch.LongTensor` of shape `(batch, total_length)`, or a `LLaDAGenerateOutput`):
            What `generate` returned.
        prompt_length (`int`): Length of the (padded) prompt, `input_ids.shape[1]`.
        stop_token_ids (`list[int]`, *optional*): Defaults to the tokenizer's EOS and `<|eot_id|>`.
    """
    if isinstance(sequences, LLaDAGenerateOutput) or hasattr(sequences, "sequences"):
        sequences = sequences.sequences
    stops = stop_token_ids if stop_token_ids is not None else stop_token_ids_of(tokenizer)
    return [
        tokenizer.decode(strip_after_eos(row[prompt_length:], stops), skip_special_tokens=skip_special_tokens)
        for row in sequences
    ]


# --------------------------------------------------------------------------------------------------------------------
# One denoising step
# --------------------------------------------------------------------------------------------------------------------


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """argmax of exp(logits) / (-log u)^temperature, u ~ U(0, 1), in float64 (the published sampling rule)."""
    logits = logits.double()
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return (logits.exp() / (-torch.log(u)) ** temperature).argmax(dim=-1)


def select_transfer(
    confidence: torch.Tensor,
    candidate: torch.Tensor,
    k: torch.Tensor,
    k_rows: list[int],
    threshold: float | None = None,
    factor: float | None = None,
    start: int = 0,
    total_length: int | None = None,
) -> torch.Tensor:
    """Which candidate positions of the block to unmask: the `k[b]` most confident of row b, or more under a
    parallel decoding rule.

    Args:
        confidence: (B, W) confidences of the block, -inf where not a candidate.
        candidate: (B, W) bool, the masked positions of the block.
        k: (B,) scheduled numbers of tokens to unmask (on the device).
        k_rows: the same numbers as host ints, so that the exact rule needs no host sync.
        threshold, factor: the parallel rules (`LLaDAGenerationConfig`); both `None` for the exact rule.
        start, total_length: where the block sits in the canvas. The exact rule runs top-k on a full-length row
            that is -inf outside the block, row by row, as the published sampler does, so that equal confidences
            (frequent in bf16) are broken the same way.
    Returns:
        (B, W) bool.
    """
    batch, width = confidence.shape
    if threshold is None and factor is None:
        total_length = total_length or start + width
        row = confidence.new_full((batch, total_length), float("-inf"))
        row[:, start : start + width] = confidence
        transfer = torch.zeros(batch, total_length, dtype=torch.bool, device=confidence.device)
        # One top-k per distinct count (usually one per step) instead of one per row: top-k of the same k on each
        # row of a batch gives the same indices as on that row alone, ties included.
        rows_of_k: dict[int, list[int]] = {}
        for b, k_b in enumerate(k_rows):
            if k_b:
                rows_of_k.setdefault(k_b, []).append(b)
        for k_b, rows in rows_of_k.items():
            if len(rows) == batch:
                transfer.scatter_(1, row.topk(k_b, dim=1).indices, True)
            else:
                picked = torch.tensor(rows, device=confidence.device)
                index = row.index_select(0, picked).topk(k_b, dim=1).indices
                transfer[picked[:, None], index] = True
        return transfer[:, start : start + width] & candidate
    values, index = confidence.float().sort(dim=1, descending=True)  # (B, W)
    if threshold is not None:
        n = (values >= threshold).sum(dim=1)
    else:
        rank = torch.arange(1, width + 1, device=values.device, dtype=values.dtype)[None]
        n = ((rank + 1) * (1 - values) < factor).int().cumprod(dim=1).sum(dim=1)
    n = torch.maximum(n, k.clamp(min=1))
    take = torch.arange(width, device=k.device)[None] < n[:, None]
    take &= values > float("-inf")  # never more than the candidates
    return torch.zeros_like(candidate).scatter(1, index, take)


@dataclass
class _Plan:
    """Resolved, validated settings of one `generate` call (host-side values only)."""

    prompt_length: int
    total_length: int
    num_blocks: int
    block_length: int
    steps_per_block: int
    first_window_start: int
    first_window_end: int
    temperature: float
    cfg_scale: float
    remasking: RemaskingFunction
    mask_id: int
    eos_ids: list[int]
    stop_ids: list[int]
    logits_eos_inf: bool
    confidence_eos_eot_inf: bool
    kv_cache: str | None
    threshold: float | None
    factor: float | None
    early_exit: bool
    vocab_size: int | None = None
    _tensors: dict = field(default_factory=dict)

    def window(self, block: int) -> tuple[int, int]:
        """Positions [start, end) of the canvas that block `block` unmasks. Block 0 also holds masks of the input."""
        if block == 0:
            return self.first_window_start, self.first_window_end
        start = self.prompt_length + block * self.block_length
        return start, start + self.block_length

    def propose(self, logits: torch.Tensor, candidate: torch.Tensor, generator=None):
        """Proposed tokens and their confidence (-inf off the candidates) from the logits (B, W, V) of a block."""
        if self.logits_eos_inf:
            logits[..., self.eos_ids] = float("-inf")
        # Never propose the mask token (it would stay a hole) nor a padding row of the embedding (ids >= vocab_size,
        # which no tokenizer produces): their logits are -inf while x0 is drawn, then restored, so the confidences
        # stay those of the published sampler (its outputs are unchanged wherever it did not propose them).
        banned = self.banned_ids(logits)
        saved = logits[..., banned].clone()  # (B, W, few)
        logits[..., banned] = float("-inf")
        if self.temperature > 0:
            x0 = gumbel_argmax(logits, self.temperature, generator)
        else:
            x0 = logits.argmax(dim=-1)  # (B, W)
        logits[..., banned] = saved
        if self.confidence_eos_eot_inf:
            logits[..., self.stop_ids] = float("-inf")  # in place: after x0 only the remasking reads the logits
        confidence = self.remasking(logits, x0, generator=generator)  # (B, W)
        lowest = torch.finfo(confidence.dtype).min
        # A NaN confidence (a custom strategy on -inf logits) would never be selected and leave masks behind.
        confidence = confidence.nan_to_num(nan=lowest)
        if self.confidence_eos_eot_inf:
            confidence = confidence.masked_fill(torch.isin(x0, self.stop_tensor(x0.device)), lowest)
        # Candidates always rank above non-candidates, so every scheduled token finds a position.
        confidence = torch.where(candidate, confidence.clamp(min=lowest), float("-inf"))
        return x0, confidence

    def banned_ids(self, logits: torch.Tensor) -> torch.Tensor:
        """The ids never proposed (the mask id, rows of the embedding >= vocab_size) as an index tensor on the logits'
        device, made once per call of `generate`."""
        key = ("banned", str(logits.device), logits.shape[-1])
        if key not in self._tensors:
            banned = [self.mask_id]
            if self.vocab_size is not None and self.vocab_size < logits.shape[-1]:
                banned += range(self.vocab_size, logits.shape[-1])
            self._tensors[key] = torch.tensor(banned, device=logits.device)
        return self._tensors[key]

    def stop_tensor(self, device) -> torch.Tensor:
        """The stop ids as a tensor on `device`, made once per call of `generate` (not once per step)."""
        key = str(device)
        if key not in self._tensors:
            self._tensors[key] = torch.tensor(self.stop_ids, device=device)
        return self._tensors[key]


# --------------------------------------------------------------------------------------------------------------------
# The mixin
# --------------------------------------------------------------------------------------------------------------------


class LLaDAGenerationMixin:
    """Gives `LLaDAModelLM` its `generate` (the reverse diffusion process) and an `LLaDAGenerationConfig`.

    Whatever is assigned to `model.generation_config` (transformers assigns a plain `GenerationConfig` at init) is
    stored as an `LLaDAGenerationConfig` with the model's special ids, so `save_pretrained` writes the diffusion
    fields and `from_pretrained` restores them.
    """

    @classmethod
    def can_generate(cls) -> bool:
        """Always. (transformers < 4.45 guesses it from where `generate` is defined, reads "GenerationMixin" in this
        class's name as transformers' own, and would then neither make nor load a generation config.)"""
        return True

    @property
    def generation_config(self) -> LLaDAGenerationConfig | None:
        return self.__dict__.get("_llada_generation_config")

    @generation_config.setter
    def generation_config(self, value):
        if value is not None and not isinstance(value, LLaDAGenerationConfig):
            value = LLaDAGenerationConfig.from_generation_config(value, getattr(self, "config", None))
        self.__dict__["_llada_generation_config"] = value

    def adjust_generation_fn(
        self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path, **kwargs
    ):
        """Called by `PreTrainedModel.from_pretrained`: load `generation_config.json` as an `LLaDAGenerationConfig`
        (ids it leaves unset come from the model config); keep the model-config defaults when there is none."""
        if generation_config is not None:
            self.generation_config = copy.deepcopy(generation_config)
            return
        if pretrained_model_name_or_path is None:
            return
        keys = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
        loading = {k: kwargs[k] for k in keys if kwargs.get(k) is not None}
        folder = os.path.join(str(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        name = os.path.join(folder, "generation_config.json")
        try:
            config = LLaDAGenerationConfig.from_pretrained(
                pretrained_model_name_or_path, _from_auto=from_auto_class, _from_pipeline=from_pipeline, **loading
            )
        except OSError as error:
            # No generation config: the model-config defaults. One that exists but does not parse is an error, never
            # silently replaced by the defaults.
            if os.path.isfile(name) or "valid JSON" in str(error):
                raise ValueError(
                    f"{name} is not a valid generation config ({str(error).strip().splitlines()[0]}); fix the file "
                    "or delete it to use the model's defaults."
                ) from error
            return
        except (ValueError, TypeError) as error:
            raise type(error)(f"{name}: {error} Fix the file or delete it to use the model's defaults.") from error
        config.fill_special_ids(self.config)
        self.generation_config = config

    # ----------------------------------------------------------------------------------------------------------------

    def _resolve_generation_config(self, generation_config, kwargs) -> LLaDAGenerationConfig:
        base = generation_config if generation_config is not None else self.generation_config
        if base is None:
            config = LLaDAGenerationConfig.from_model_config(self.config)
        elif isinstance(base, LLaDAGenerationConfig):
            config = copy.deepcopy(base)
        else:
            config = LLaDAGenerationConfig.from_generation_config(base, self.config)
        config.fill_special_ids(self.config)
        meaningless = sorted(set(kwargs) - _MEANINGFUL_KWARGS - set(_DIFFUSION_DEFAULTS) - set(_AUTOREGRESSIVE_ONLY))
        meaningless = [name for name in meaningless if hasattr(config, name)]
        if meaningless:
            raise ValueError(
                f"generate() got {', '.join(meaningless)}: autoregressive decoding options with no meaning for the "
                "reverse diffusion process. Drop them; the diffusion controls are steps, block_length, temperature, "
                "remasking, cfg_scale, threshold and factor."
            )
        unused = config.update(**kwargs)
        if unused:
            names = ", ".join(sorted(unused))
            raise ValueError(
                f"generate() got unknown arguments: {names}. Use the fields of LLaDAGenerationConfig (max_new_tokens, "
                "steps, block_length, temperature, remasking, cfg_scale, kv_cache, threshold, factor, ...)."
            )
        config.validate_diffusion()
        for name, supported in _AUTOREGRESSIVE_ONLY.items():
            value = getattr(config, name, None)
            if value is not None and value != supported:
                raise ValueError(
                    f"{name}={value!r} is not supported by diffusion generation; leave it at {supported!r}."
                )
        if kwargs.get("do_sample") and not config.temperature:
            raise ValueError(
                "do_sample=True: diffusion sampling is controlled by temperature; pass temperature > 0 (e.g. 0.5)."
            )
        if config.output_history:
            config.return_dict_in_generate = True
        return config

    def _plan(self, config: LLaDAGenerationConfig, input_ids, attention_mask) -> _Plan:
        """Check the input against the settings (one host sync at most) and resolve blocks, steps and windows."""
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must have shape (batch, prompt_length), got {tuple(input_ids.shape)}; add a batch "
                "dimension with input_ids[None]."
            )
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}.")
        mask_id = config.mask_token_id
        if mask_id is None:
            raise ValueError("mask_token_id is not set: pass mask_token_id=... or set it in the model config.")
        batch, prompt_length = input_ids.shape
        new = config.max_new_tokens or 0
        total = prompt_length + new
        max_len = self.config.max_sequence_length
        if total > max_len:
            raise ValueError(
                f"prompt_length ({prompt_length}) + max_new_tokens ({new}) = {total} exceeds max_sequence_length "
                f"({max_len}); shorten the prompt or lower max_new_tokens."
            )
        vocab = self.config.padded_vocab_size
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
            raise ValueError(f"input_ids hold ids outside the vocabulary [0, {vocab}); check the tokenizer.")

        if attention_mask is not None:
            if tuple(attention_mask.shape) != (batch, prompt_length):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}; it must match input_ids "
                    f"{(batch, prompt_length)}."
                )
            keep = attention_mask.bool()
            if bool((keep[:, :-1] & ~keep[:, 1:]).any()):
                raise ValueError(
                    "attention_mask has padding after a real token (right padding); LLaDA generates after the prompt, "
                    "so pad on the left: tokenizer.padding_side = 'left'."
                )
            if not bool(keep.all()) and (config.pad_token_id == mask_id or bool((input_ids[~keep] == mask_id).any())):
                raise ValueError(
                    f"padded positions hold the mask token ({mask_id}) (pad_token_id={config.pad_token_id}), so they "
                    "would be generated. Pad with the EOS token: tokenizer.pad_token = tokenizer.eos_token."
                )

        input_masks = input_ids == mask_id  # (B, P)
        columns = input_masks.any(dim=0).nonzero().flatten().tolist()  # columns holding masks to infill
        if new == 0:
            if not columns:
                raise ValueError(
                    "max_new_tokens is 0 and the input holds no mask token to fill; set max_new_tokens > 0 or put "
                    f"mask tokens ({mask_id}) where text should be infilled."
                )
            num_blocks, block_length = 1, 0
            window = (columns[0], columns[-1] + 1)
            steps = config.steps or int(input_masks.sum(dim=1).max())
        else:
            block_length = config.block_length or new
            if new % block_length != 0:
                raise ValueError(
                    f"block_length ({block_length}) must divide max_new_tokens ({new}); e.g. block_length="
                    f"{_largest_divisor_at_most(new, block_length)}."
                )
            num_blocks = new // block_length
            steps = config.steps or new
            window = (min([prompt_length, *columns[:1]]), prompt_length + block_length)
        if steps % num_blocks != 0:
            suggestion = max(num_blocks, steps // num_blocks * num_blocks)
            raise ValueError(
                f"steps ({steps}) must be a multiple of the number of blocks max_new_tokens / block_length = "
                f"{new} / {block_length} = {num_blocks}; e.g. steps={suggestion}."
            )
        remasking = config.remasking
        if callable(remasking):
            function = remasking
        elif remasking in REMASKING_FUNCTIONS:
            function = REMASKING_FUNCTIONS[remasking]
        else:
            raise ValueError(
                f"remasking={remasking!r} is not a registered strategy; use one of {sorted(REMASKING_FUNCTIONS)} or "
                "register one with llada.generation_llada.register_remasking."
            )
        eos = config.eos_token_id
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        stop_ids = eos_ids + ([config.eot_token_id] if config.eot_token_id is not None else [])
        named = [
            ("mask_token_id", mask_id),
            ("pad_token_id", config.pad_token_id),
            ("eot_token_id", config.eot_token_id),
        ]
        for name, value in [*named, *(("eos_token_id", e) for e in eos_ids)]:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < vocab
            ):
                raise ValueError(
                    f"{name} ({value!r}) is outside the vocabulary [0, {vocab}) of this model; set it to an id of the "
                    "model's tokenizer (see the model config)."
                )
        if (config.logits_eos_inf or config.early_exit) and not eos_ids:
            raise ValueError("logits_eos_inf and early_exit need eos_token_id; set it in the generation config.")
        if config.confidence_eos_eot_inf and not stop_ids:
            raise ValueError("confidence_eos_eot_inf needs eos_token_id or eot_token_id; set one.")
        return _Plan(
            prompt_length=prompt_length,
            total_length=total,
            num_blocks=num_blocks,
            block_length=block_length,
            steps_per_block=steps // num_blocks,
            first_window_start=window[0],
            first_window_end=window[1],
            temperature=float(config.temperature or 0.0),
            cfg_scale=float(config.cfg_scale or 0.0),
            remasking=function,
            mask_id=mask_id,
            eos_ids=eos_ids,
            stop_ids=stop_ids,
            logits_eos_inf=bool(config.logits_eos_inf),
            confidence_eos_eot_inf=bool(config.confidence_eos_eot_inf),
            kv_cache=config.kv_cache,
            threshold=config.threshold,
            factor=config.factor,
            early_exit=bool(config.early_exit),
            vocab_size=self.config.vocab_size,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        streamer=None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> torch.LongTensor | LLaDAGenerateOutput:
        r"""
        Fill `max_new_tokens` masked positions after the prompt (and any mask tokens inside it) with the reverse
        diffusion process.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`):
                Left-padded prompts. Mask tokens inside them are filled too (with the first block); with
                `max_new_tokens=0` only they are filled, as one block (infilling). Other tokens never change.
            attention_mask (`torch.Tensor` of shape `(batch_size, prompt_length)`, *optional*):
                1 for tokens, 0 for left padding.
            generation_config (`GenerationConfig`, *optional*):
                Defaults to `model.generation_config`; keyword arguments override its fields (see
                `LLaDAGenerationConfig`).
            streamer (`BaseStreamer`, *optional*):
                Receives `put(prompt)`, then `put(block)` with the tokens of each block as it is finished
                (`(batch, block_length)`, so a `TextStreamer` prints the text), then `end()`. A streamer that also has
                `on_step(canvas, step=..., prompt_length=...)` gets the whole canvas `(batch, total_length)` after
                every step (see `llada.streaming.LLaDATerminalStreamer`). One with `put_draft` (transformers'
                `TextDiffusionStreamer`) gets the current block after every step, its masks shown as the model's
                current proposals.
            generator (`torch.Generator`, *optional*):
                Source of randomness for `temperature > 0` and `remasking="random"`.
            kwargs:
                Fields of `LLaDAGenerationConfig`: `max_new_tokens`, `steps`, `block_length`, `temperature`,
                `remasking`, `cfg_scale`, `logits_eos_inf`, `confidence_eos_eot_inf`, `kv_cache`, `threshold`,
                `factor`, `early_exit`, `return_dict_in_generate`, `output_history`, ...

        Returns:
            `torch.LongTensor` `(batch_size, prompt_length + max_new_tokens)`, or a `LLaDAGenerateOutput`
            (`sequences`, `history`, `nfe`, `tokens_per_forward`) when `return_dict_in_generate=True`.
        """
        if input_ids is None:
            raise ValueError("generate() needs input_ids (batch, prompt_length).")
        _check_tensor_input(input_ids, "input_ids")
        if attention_mask is not None:
            _check_tensor_input(attention_mask, "attention_mask")
        if kwargs.get("max_length") is not None:
            if kwargs.get("max_new_tokens") is not None:
                raise ValueError("pass max_new_tokens or max_length, not both.")
            kwargs["max_new_tokens"] = kwargs.pop("max_length") - input_ids.shape[-1]
            if kwargs["max_new_tokens"] < 0:
                raise ValueError(
                    f"max_length ({kwargs['max_new_tokens'] + input_ids.shape[-1]}) is shorter than the prompt "
                    f"({input_ids.shape[-1]} tokens); use max_new_tokens for the canvas length."
                )
        kwargs.pop("max_length", None)
        config = self._resolve_generation_config(generation_config, kwargs)
        device = self.device
        input_ids = input_ids.to(device)
        attention_mask = attention_mask.to(device) if attention_mask is not None else None
        plan = self._plan(config, input_ids, attention_mask)
        _warn_if_left_padded_without_mask(input_ids, attention_mask, config.pad_token_id)

        batch, prompt_length = input_ids.shape
        x = torch.full((batch, plan.total_length), plan.mask_id, dtype=torch.long, device=device)
        x[:, :prompt_length] = input_ids
        if attention_mask is not None:
            if bool(attention_mask.bool().all()):
                attention_mask = None  # no padding: keep the fast unmasked attention path
            else:
                ones = attention_mask.new_ones(batch, plan.total_length - prompt_length)
                attention_mask = torch.cat((attention_mask, ones), dim=1)  # (B, T)
        # CFG: the unconditional row masks every position that was not a mask in the input (padding included, as
        # in the published sampler) and uses the same attention mask.
        uncond_keep = (x == plan.mask_id) if plan.cfg_scale > 0 else None
        model_mask = attention_mask
        if plan.cfg_scale > 0 and attention_mask is not None:
            model_mask = torch.cat((attention_mask, attention_mask), dim=0)

        history = [] if config.output_history else None
        on_step = getattr(streamer, "on_step", None)
        put_draft = getattr(streamer, "put_draft", None)  # transformers' TextDiffusionStreamer and its kind
        takes_logits = bool(getattr(streamer, "_takes_logits", False))
        if streamer is not None:
            streamer.put(input_ids.cpu())

        nfe = 0
        step_index = 0
        for block in range(plan.num_blocks):
            start, end = plan.window(block)
            block_masks = x[:, start:end] == plan.mask_id  # (B, W)
            # Steps beyond the number of masks unmask nothing (the schedule gives them 0 tokens; parallel decoding
            # finishes the block by then): cap the work by the masks, not by `steps` (steps=10**9 stays cheap).
            counts = block_masks.sum(dim=1).cpu()  # (B,) on the host: the one sync per block
            steps_here = min(plan.steps_per_block, int(counts.max()))
            host_schedule = transfer_schedule(counts, max(1, steps_here))  # (B, s)
            schedule_rows = host_schedule.T.tolist()  # (s, B) host ints
            schedule = host_schedule.to(device)
            cache = None
            for j in range(steps_here):
                parallel = plan.threshold is not None or plan.factor is not None
                if not any(schedule_rows[j]) and not parallel:
                    continue  # no row unmasks anything at this step: skipping it changes nothing
                model_input = x if uncond_keep is None else torch.cat((x, x.where(uncond_keep, plan.mask_id)))
                logits, cache = self._block_logits(model_input, model_mask, start, end, plan.kv_cache, cache)
                if uncond_keep is not None:
                    cond, uncond = logits.chunk(2, dim=0)
                    logits = uncond + (plan.cfg_scale + 1) * (cond - uncond)
                nfe += 1
                current = x[:, start:end]
                candidate = current == plan.mask_id  # (B, W)
                x0, confidence = plan.propose(logits, candidate, generator)
                transfer = select_transfer(
                    confidence,
                    candidate,
                    schedule[:, j],
                    schedule_rows[j],
                    plan.threshold,
                    plan.factor,
                    start=start,
                    total_length=plan.total_length,
                )
                x[:, start:end] = torch.where(transfer, x0, current)
                if put_draft is not None:  # the block as it would read now: the proposals where masks remain
                    if takes_logits:
                        put_draft(logits=logits.cpu())
                    else:
                        put_draft(torch.where(x[:, start:end] == plan.mask_id, x0, x[:, start:end]).cpu())
                if history is not None:
                    history.append(x.clone())
                if on_step is not None:
                    on_step(x, step=step_index, prompt_length=prompt_length)
                step_index += 1
                if parallel and not bool((x[:, start:end] == plan.mask_id).any()):
                    break  # the block is finished (sync per step only in parallel decoding)
            generated_end = max(end, prompt_length)
            if streamer is not None and plan.block_length:
                streamer.put(x[:, generated_end - plan.block_length : generated_end].cpu())
            if plan.early_exit and block + 1 < plan.num_blocks and self._all_finished(x, plan, generated_end):
                rest = x[:, generated_end:]
                x[:, generated_end:] = rest.masked_fill(rest == plan.mask_id, plan.eos_ids[0])
                if streamer is not None:
                    streamer.put(x[:, generated_end:].cpu())
                break

        if streamer is not None:
            streamer.end()
        if not config.return_dict_in_generate:
            return x
        canvas = x.new_ones(batch, plan.total_length - prompt_length, dtype=torch.bool)
        filled = torch.cat((input_ids == plan.mask_id, canvas), dim=1)  # (B, T): what the sampler wrote
        if config.pad_token_id is not None:
            filled &= x != config.pad_token_id
        tokens_per_forward = filled.sum(dim=1) / max(nfe, 1)
        return LLaDAGenerateOutput(
            sequences=x,
            history=tuple(history) if history is not None else None,
            nfe=nfe,
            tokens_per_forward=tokens_per_forward,
        )

    @staticmethod
    def _all_finished(x: torch.Tensor, plan: _Plan, end: int) -> bool:
        """Every row has a stop token among its generated tokens before `end` (all of which are decoded)."""
        generated = x[:, plan.prompt_length : end]
        return bool(torch.isin(generated, plan.stop_tensor(x.device)).any(dim=1).all())

    def _block_logits(self, x, attention_mask, start: int, end: int, kv_cache: str | None, cache):
        """Logits (B, end - start, V) of the block's positions, and the cache to reuse at the block's next step.

        Exact path: the whole sequence, head on the block only. With a cache mode, the block's first step runs the
        whole sequence and keeps its keys/values; later steps feed the block and what follows it ("prefix") or the
        block only ("dual"), attending to the cached keys/values elsewhere.
        """
        if kv_cache is None or cache is None:
            out = self(
                x,
                attention_mask=attention_mask,
                use_cache=kv_cache is not None,
                logits_to_keep=slice(start, end),
                validate_inputs=False,
            )
            if out.past_key_values is not None:
                # The block's own cache: later steps rewrite the same window, so they may write it in place.
                out.past_key_values.write_in_place = True
            return out.logits, out.past_key_values
        stop = x.shape[1] if kv_cache == "prefix" else end
        out = self(
            x[:, start:stop],
            attention_mask=attention_mask,
            past_key_values=cache,
            cache_position=torch.arange(start, stop),  # on the host: the model reads its first value without a sync
            logits_to_keep=slice(0, end - start),
            validate_inputs=False,
        )
        return out.logits, cache


def _warn_if_left_padded_without_mask(input_ids, attention_mask, pad_token_id):
    """Warn (once) when rows start with the pad id and no attention_mask says it is padding: the padding is then
    attended to as text, and each row differs from what it would give alone."""
    if attention_mask is not None or pad_token_id is None or input_ids.shape[0] < 2 or input_ids.shape[1] == 0:
        return
    if bool((input_ids[:, 0] == pad_token_id).any()):
        logger.warning_once(
            f"Some rows of input_ids start with the pad token ({pad_token_id}) and no attention_mask was passed: the "
            "padding is read as text, so those rows differ from each prompt alone. Pass the attention_mask of the "
            "tokenizer (tokenizer(prompts, padding=True, return_tensors='pt')) to generate()."
        )


def _check_tensor_input(value, name: str):
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (batch, prompt_length), got {type(value).__name__}; e.g. "
            f"torch.tensor([ids]) or tokenizer(text, return_tensors='pt').{name}."
        )
    if value.is_meta:
        raise ValueError(f"{name} is on the meta device (no data); pass a tensor on the CPU or the model's device.")


def _largest_divisor_at_most(n: int, bound: int) -> int:
    return max(d for d in range(1, min(n, bound) + 1) if n % d == 0)


__all__ = [
    "KV_CACHE_MODES",
    "REMASKING_FUNCTIONS",
    "LLaDAGenerateOutput",
    "LLaDAGenerationConfig",
    "LLaDAGenerationMixin",
    "decode_generation",
    "register_remasking",
    "stop_token_ids_of",
    "strip_after_eos",
]
