"""LLaDA configuration.

The field names are those of the published LLaDA checkpoints (OLMo-style: `d_model`, `n_heads`, ...), so their
`config.json` loads unchanged and what we save loads in the published code. The usual transformers names
(`hidden_size`, `num_attention_heads`, ...) are aliases of these fields.

Hub core: this file is copied next to saved weights; it imports only torch, transformers and the standard library.
"""

import math
import re

import transformers
from transformers import PretrainedConfig

from .rope_llada import normalize_rope_scaling

#: The oldest transformers that loads a saved folder through `trust_remote_code` with the same numbers (checked: the
#: logits, generations and likelihoods of the saving process, bit for bit). Older ones are refused here, at load.
MIN_TRANSFORMERS_VERSION = "4.40"


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else (0, 0)


if _major_minor(transformers.__version__) < _major_minor(MIN_TRANSFORMERS_VERSION):
    raise ImportError(
        f"LLaDA's model code needs transformers >= {MIN_TRANSFORMERS_VERSION}, but transformers "
        f"{transformers.__version__} is installed; upgrade it: "
        f"pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'"
    )

# Values of the published fields that this network implements. Anything else is rejected, never ignored.
_SUPPORTED_VALUES = {
    "activation_type": ("silu",),
    "block_type": ("llama",),
    "layer_norm_type": ("rms",),
    "alibi": (False,),
    "rope": (True,),
    "include_bias": (False,),
    "include_qkv_bias": (False, None),
    "bias_for_layer_norm": (False, None),
    "layer_norm_with_affine": (True,),
    "attention_layer_norm": (False,),
    "scale_logits": (False,),
    "input_emb_norm": (False,),
    "block_group_size": (1,),
}


# Types and ranges of the numeric and boolean fields, checked when a config is built (a `config.json` that says
# `"weight_tying": "false"` or `"n_heads": 0` is an error naming the field, not a model that fails later or silently
# differs). (kind, lower bound, lower bound included, may be None)
_FIELD_RULES = {
    "vocab_size": ("int", 1, True, False),
    "embedding_size": ("int", 1, True, True),
    "d_model": ("int", 1, True, False),
    "n_heads": ("int", 1, True, False),
    "n_kv_heads": ("int", 1, True, False),
    "n_layers": ("int", 1, True, False),
    "mlp_hidden_size": ("int", 1, True, True),
    "mlp_ratio": ("int", 1, True, False),
    "max_sequence_length": ("int", 1, True, False),
    "rope_theta": ("float", 0, False, False),
    "rms_norm_eps": ("float", 0, False, False),
    "init_std": ("float", 0, True, False),
    "attention_dropout": ("float", 0, True, False),
    "residual_dropout": ("float", 0, True, False),
    "embedding_dropout": ("float", 0, True, False),
    "mask_token_id": ("int", 0, True, True),
    "eos_token_id": ("int", 0, True, True),
    "pad_token_id": ("int", 0, True, True),
    "bos_token_id": ("int", 0, True, True),
    "weight_tying": ("bool", None, None, False),
    "rope_full_precision": ("bool", None, None, False),
}


def _check_field(name: str, value):
    kind, low, inclusive, optional = _FIELD_RULES[name]
    if value is None:
        if optional:
            return
        raise ValueError(f"LLaDAConfig: {name} is None; set it in config.json (see the LLaDAConfig docstring).")
    if kind == "bool":
        if not isinstance(value, bool):
            guess = "true" if str(value).lower() in ("true", "1") else "false"
            raise TypeError(
                f"LLaDAConfig: {name} ({value!r}) must be a JSON boolean (true or false), got "
                f'{type(value).__name__}; write "{name}": {guess} (no quotes) in config.json.'
            )
        return
    numeric = (int,) if kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric) or (kind == "float" and not math.isfinite(value)):
        what = "an integer" if kind == "int" else "a finite number"
        raise TypeError(
            f"LLaDAConfig: {name} ({value!r}) must be {what}, got {type(value).__name__}; write the number without "
            "quotes in config.json."
        )
    if value < low or (value == low and not inclusive):
        bound = f">= {low}" if inclusive else f"> {low}"
        raise ValueError(f"LLaDAConfig: {name} ({value!r}) must be {bound}; fix it in config.json.")


class LLaDAConfig(PretrainedConfig):
    r"""
    Configuration of a LLaDA masked diffusion language model. The defaults describe LLaDA-8B
    (`GSAI-ML/LLaDA-8B-Base` / `-Instruct`).

    Args:
        vocab_size (`int`, *optional*, defaults to 126464):
            Number of tokens the tokenizer can produce.
        embedding_size (`int`, *optional*, defaults to 126464):
            Rows of the embedding matrix and of the LM head (may exceed `vocab_size` for padding); `None` means
            `vocab_size`. The logits have this many entries.
        d_model (`int`, *optional*, defaults to 4096):
            Hidden size. Alias: `hidden_size`.
        n_heads (`int`, *optional*, defaults to 32):
            Attention (query) heads per block. Alias: `num_attention_heads`.
        n_kv_heads (`int`, *optional*, defaults to 32):
            Key/value heads (grouped-query attention when smaller than `n_heads`); `None` means `n_heads`.
            Alias: `num_key_value_heads`.
        n_layers (`int`, *optional*, defaults to 32):
            Transformer blocks. Alias: `num_hidden_layers`.
        mlp_hidden_size (`int`, *optional*, defaults to 12288):
            Inner size of the gated MLP; `None` means `mlp_ratio * d_model`. Alias: `intermediate_size`.
        mlp_ratio (`int`, *optional*, defaults to 4):
            Used only when `mlp_hidden_size` is `None`.
        max_sequence_length (`int`, *optional*, defaults to 4096):
            Longest sequence (prompt plus canvas) the model accepts. Alias: `max_position_embeddings`.
        rope_theta (`float`, *optional*, defaults to 500000.0):
            Base of the rotary position embedding.
        rope_scaling (`dict`, *optional*):
            Context extension of RoPE: `{"rope_type": ..., "factor": ...}` with `rope_type` one of `linear`,
            `dynamic`, `yarn`, `llama3`, `longrope` (transformers' functions), `ntk` (base * factor) or
            `diffusion_ntk` (UltraLLaDA's diffusion-aware NTK); see `rope_llada.py`. `original_max_position_embeddings`
            (the training length) defaults to `max_sequence_length`, which is then raised to the training length
            times `factor`. transformers 5's `rope_parameters` is accepted too (its `rope_theta` replaces ours).
        rms_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the RMS norms.
        weight_tying (`bool`, *optional*, defaults to `False`):
            Use the embedding matrix as the LM head (then no `ff_out` head weight exists).
            Alias: `tie_word_embeddings`.
        mask_token_id (`int`, *optional*, defaults to 126336):
            Id of the mask token `<|mdm_mask|>`: the noise the diffusion process writes and the sampler fills.
        eos_token_id (`int`, *optional*, defaults to 126081):
            End of text; SFT fills samples to the batch length with it.
        pad_token_id (`int`, *optional*, defaults to 126081):
            Padding id of batched prompts (left padding).
        bos_token_id (`int`, *optional*):
            Beginning of text (126080 in the 8B tokenizer; the published config leaves it unset).
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities (training only).
        residual_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention and MLP outputs before the residual add (training only).
        embedding_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the token embeddings (training only).
        init_std (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal init of new weights. Alias: `initializer_range`.
        activation_type (`str`, *optional*, defaults to `"silu"`):
            MLP activation. Only `"silu"` (SwiGLU with a separate `up_proj`) is implemented.
        block_type (`str`, *optional*, defaults to `"llama"`):
            Block layout. Only `"llama"` (separate q/k/v projections, pre-norm) is implemented.
        layer_norm_type (`str`, *optional*, defaults to `"rms"`):
            Only `"rms"` is implemented.
        rope (`bool`, *optional*, defaults to `True`), alibi (`bool`, *optional*, defaults to `False`):
            Position encoding; only RoPE is implemented.
        rope_full_precision (`bool`, *optional*, defaults to `True`):
            Apply RoPE in float32 (the published numerics). `False` applies it in the activation dtype.
        include_bias, include_qkv_bias, bias_for_layer_norm (`bool`, *optional*, defaults to `False`):
            Biases; the published models have none and none are implemented.
        layer_norm_with_affine (`bool`, *optional*, defaults to `True`), attention_layer_norm (`bool`, defaults
        to `False`), scale_logits (`bool`, defaults to `False`), input_emb_norm (`bool`, defaults to `False`),
        block_group_size (`int`, defaults to 1):
            Published OLMo options; only the values the LLaDA checkpoints use are implemented.
        multi_query_attention (`bool`, *optional*):
            Published legacy switch: `True` means one key/value head.
        use_cache (`bool`, *optional*, defaults to `False`):
            Kept for compatibility with the published config; caches are chosen per `generate` call.
        flash_attention (`bool`, *optional*, defaults to `False`):
            Published preference flag, kept for round trips. The backend is chosen with
            `attn_implementation` (`"sdpa"`, `"eager"`, `"flash_attention_2"`, `"flex_attention"`).
        precision, init_device, init_fn, init_cutoff_factor, alibi_bias_max:
            Published training metadata, stored and saved unchanged; they do not change the network.

    Example:

    ```python
    >>> from llada import LLaDAConfig, LLaDAModelLM
    >>> config = LLaDAConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=176, vocab_size=320,
    ...                      embedding_size=320, mask_token_id=317, eos_token_id=316, pad_token_id=316)
    >>> model = LLaDAModelLM(config)
    ```
    """

    model_type = "llada"
    _rope_scaling = None
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
        "tie_word_embeddings": "weight_tying",
        "initializer_range": "init_std",
    }

    def __init__(
        self,
        vocab_size=126464,
        embedding_size=126464,
        d_model=4096,
        n_heads=32,
        n_kv_heads=32,
        n_layers=32,
        mlp_hidden_size=12288,
        mlp_ratio=4,
        max_sequence_length=4096,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        weight_tying=False,
        mask_token_id=126336,
        eos_token_id=126081,
        pad_token_id=126081,
        bos_token_id=None,
        attention_dropout=0.0,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        init_std=0.02,
        activation_type="silu",
        block_type="llama",
        layer_norm_type="rms",
        rope=True,
        alibi=False,
        rope_full_precision=True,
        include_bias=False,
        include_qkv_bias=False,
        bias_for_layer_norm=False,
        layer_norm_with_affine=True,
        attention_layer_norm=False,
        attention_layer_norm_with_affine=True,
        scale_logits=False,
        input_emb_norm=False,
        block_group_size=1,
        multi_query_attention=None,
        use_cache=False,
        flash_attention=False,
        precision="amp_bf16",
        init_device="meta",
        init_fn="mitchell",
        init_cutoff_factor=None,
        alibi_bias_max=8.0,
        **kwargs,
    ):
        # Accept the transformers names too, so LLaDAConfig(hidden_size=...) works like other configs.
        aliases = {alias: kwargs.pop(alias) for alias in list(self.attribute_map) if alias in kwargs}
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.d_model = aliases.get("hidden_size", d_model)
        self.n_heads = aliases.get("num_attention_heads", n_heads)
        self.n_layers = aliases.get("num_hidden_layers", n_layers)
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = aliases.get("intermediate_size", mlp_hidden_size)
        self.max_sequence_length = aliases.get("max_position_embeddings", max_sequence_length)
        self.weight_tying = aliases.get("tie_word_embeddings", weight_tying)
        self.init_std = aliases.get("initializer_range", init_std)
        self.multi_query_attention = multi_query_attention
        n_kv_heads = aliases.get("num_key_value_heads", n_kv_heads)
        if n_kv_heads is None:
            n_kv_heads = 1 if multi_query_attention else self.n_heads
        self.n_kv_heads = n_kv_heads
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.embedding_dropout = embedding_dropout
        self.activation_type = activation_type
        self.block_type = block_type
        self.layer_norm_type = layer_norm_type
        self.rope = rope
        self.alibi = alibi
        self.rope_full_precision = rope_full_precision
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.bias_for_layer_norm = bias_for_layer_norm
        self.layer_norm_with_affine = layer_norm_with_affine
        self.attention_layer_norm = attention_layer_norm
        self.attention_layer_norm_with_affine = attention_layer_norm_with_affine
        self.scale_logits = scale_logits
        self.input_emb_norm = input_emb_norm
        self.block_group_size = block_group_size
        self.use_cache = use_cache
        self.flash_attention = flash_attention
        self.precision = precision
        self.init_device = init_device
        self.init_fn = init_fn
        self.init_cutoff_factor = init_cutoff_factor
        self.alibi_bias_max = alibi_bias_max
        self._check_supported()
        published = dict(self.__dict__)
        rope_scaling = kwargs.pop("rope_scaling", None)
        rope_parameters = kwargs.pop("rope_parameters", None)
        super().__init__(**kwargs)
        # transformers 4.x's `PretrainedConfig.__init__` assigns its own defaults to fields it also defines
        # (`tie_word_embeddings=True`, routed by `attribute_map` onto `weight_tying`; `pad_token_id=None`, ...): the
        # published fields set above win, whatever the version.
        for name, value in published.items():
            if getattr(self, name) is not value:
                setattr(self, name, value)
        # Set after super().__init__, which (transformers 5) would move rope_scaling into rope_parameters.
        self.rope_scaling = rope_scaling if rope_scaling is not None else rope_parameters

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """As `PretrainedConfig.from_dict`; a LLaDA-MoE config (same `model_type` "llada", MoE fields) gives a
        `LLaDAMoEConfig`, so `AutoConfig` and `LLaDAModelLM.from_pretrained` load either kind. Where a dict holds
        both a published field and its transformers alias (`weight_tying` and `tie_word_embeddings`, ...), the
        published field is the one read."""
        if cls is LLaDAConfig and (
            "num_experts" in config_dict or "LLaDAMoEModelLM" in (config_dict.get("architectures") or ())
        ):
            from .configuration_llada_moe import LLaDAMoEConfig

            return LLaDAMoEConfig.from_dict(config_dict, **kwargs)
        config_dict = {
            key: value
            for key, value in config_dict.items()
            if not (key in cls.attribute_map and cls.attribute_map[key] in config_dict)
        }
        return super().from_dict(config_dict, **kwargs)

    def _check_supported(self):
        for name in _FIELD_RULES:
            _check_field(name, getattr(self, name))
        for name, allowed in _SUPPORTED_VALUES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"LLaDAConfig: {name}={value!r} is not implemented by this network (supported: "
                    f"{', '.join(repr(a) for a in allowed)}). Set {name}={allowed[0]!r} or use a checkpoint of the "
                    "LLaDA architecture."
                )
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"LLaDAConfig: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}).")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"LLaDAConfig: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})."
            )
        if (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError(
                f"LLaDAConfig: the head dimension d_model / n_heads = {self.d_model // self.n_heads} must be even "
                "for rotary embeddings."
            )
        if self.embedding_size is not None and self.embedding_size < self.vocab_size:
            raise ValueError(
                f"LLaDAConfig: embedding_size ({self.embedding_size}) must be at least vocab_size "
                f"({self.vocab_size}), or None."
            )
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.padded_vocab_size:
                raise ValueError(
                    f"LLaDAConfig: {name} ({value}) is outside the embedding table (size {self.padded_vocab_size})."
                )

    @property
    def rope_scaling(self) -> dict | None:
        """The RoPE context extension (canonical dict, see `rope_llada.normalize_rope_scaling`), or None.

        Setting it (also through `from_pretrained(..., rope_scaling=...)`) validates it and raises
        `max_sequence_length` to the target length; it overrides transformers 5's alias of `rope_parameters`."""
        return self._rope_scaling

    @rope_scaling.setter
    def rope_scaling(self, value: dict | None):
        self._rope_scaling, self.max_sequence_length, self.rope_theta = normalize_rope_scaling(
            value, self.max_sequence_length, self.rope_theta
        )

    def to_dict(self) -> dict:
        # `rope_scaling` only when set: transformers' base config (which the Trainer uses to peek at a checkpoint)
        # warns on a `rope_scaling` key, and the published configs have none.
        output = super().to_dict()
        output.pop("_rope_scaling", None)
        if self._rope_scaling is not None:
            output["rope_scaling"] = self._rope_scaling
        return output

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and of the head: `embedding_size`, or `vocab_size` when that is `None`."""
        return self.embedding_size or self.vocab_size

    @property
    def mlp_size(self) -> int:
        """The inner MLP width actually built."""
        return self.mlp_hidden_size or self.mlp_ratio * self.d_model


__all__ = ["LLaDAConfig"]
