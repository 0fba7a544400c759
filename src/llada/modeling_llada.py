"""The LLaDA network: a Llama-style Transformer with bidirectional attention.

What differs from `transformers`' Llama: no causal mask (every query sees every non-padding key), the published
OLMo parameter names (`model.transformer.blocks.{i}.q_proj`, `ff_proj` = gate, `ff_out` = down projection and,
at the top level, the LM head), RoPE applied in float32, logits at position i predict token i (no shift), and an
optional head restricted to the positions that need it (`logits_to_keep`), since a diffusion step or a training
step needs logits only at a few positions of a 126k vocabulary.

A `LLaDAKVCache` holds the keys/values of a whole sequence; a forward pass given one and a contiguous window of
positions (`cache_position`) recomputes only that window and attends to the cached keys elsewhere. Generation
builds its prefix and dual caches on this.

Hub core: copied next to saved weights; imports only torch, transformers and its sibling files.
"""

import functools
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

# transformers 4.x copies into its module cache only the files that the loaded file imports itself (`from .x import`,
# indented ones included): every hub-core file that a sibling imports is therefore imported here too (the unused ones).
from .configuration_llada import LLaDAConfig
from .configuration_llada_moe import LLaDAMoEConfig  # noqa: F401
from .generation_llada import LLaDAGenerationMixin
from .likelihood_llada import LLaDALikelihoodMixin
from .masking_llada import num_transfer_tokens  # noqa: F401
from .rope_llada import rope_frequencies, rotary_cos_sin

try:  # transformers >= 4.52
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:

    class GradientCheckpointingLayer(nn.Module):
        """What transformers >= 4.52 provides: `gradient_checkpointing_enable` sets `gradient_checkpointing` and
        `_gradient_checkpointing_func` on every module that has the attribute, and the call goes through the latter
        in training. Keyword arguments are bound first (the reentrant checkpoint takes positional ones only)."""

        gradient_checkpointing = False

        def __call__(self, *args, **kwargs):
            if self.gradient_checkpointing and self.training:
                return self._gradient_checkpointing_func(functools.partial(super().__call__, **kwargs), *args)
            return super().__call__(*args, **kwargs)


try:  # transformers >= 4.48
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
except ImportError:
    ALL_ATTENTION_FUNCTIONS = None


class LLaDARMSNorm(nn.Module):
    """RMS norm computed in float32, cast back to the input dtype, then scaled (the published order)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, full_precision: bool) -> torch.Tensor:
    """Rotate x (B, H, T, hd); in float32 when `full_precision` (the published `rope_full_precision`)."""
    dtype = x.dtype
    if full_precision:
        x = x.float()
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (B, 1, T, hd)
    return (x * cos + rotate_half(x) * sin).to(dtype)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, T, hd) -> (B, Hkv * n_rep, T, hd)."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain attention with a float32 softmax; `attention_mask` is additive, broadcastable to (B, H, Tq, Tk)."""
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, Tq, H, hd)
    return out, probs


def sdpa_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """torch's scaled_dot_product_attention, for transformers < 4.48 (which has no attention registry);
    `attention_mask` is boolean, True = attend."""
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=False
    )
    return out.transpose(1, 2).contiguous(), None


def attention_function(implementation: str):
    if implementation in (None, "eager"):
        return eager_attention_forward
    if ALL_ATTENTION_FUNCTIONS is None:
        if implementation == "sdpa":
            return sdpa_attention_forward
        raise ValueError(
            f"LLaDA: attn_implementation={implementation!r} needs transformers >= 4.48 (found "
            f"{transformers.__version__}); upgrade transformers, or load with attn_implementation='sdpa' or 'eager'."
        )
    return ALL_ATTENTION_FUNCTIONS[implementation]


def padding_mask_for(implementation: str, attention_mask: torch.Tensor | None, q_len: int, dtype: torch.dtype):
    """The padding mask in the form the attention backend wants. `attention_mask` is (B, Tk), 1 = real token.

    Keys at padding are hidden from every query; queries at padding are still computed (as in the published
    code). Flash attention takes the 2D mask itself; sdpa a boolean (B, 1, 1, Tk); eager an additive float mask;
    flex a `BlockMask`.
    """
    if attention_mask is None:
        return None
    if implementation is not None and implementation.startswith(("flash_attention", "kernels-community")):
        return attention_mask
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        keys_kept = attention_mask.bool()  # (B, Tk)

        def keep_real_keys(b, h, q, kv):
            return keys_kept[b, kv]

        batch, key_len = keys_kept.shape
        return create_block_mask(keep_real_keys, batch, None, q_len, key_len, device=keys_kept.device)
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
    if implementation == "sdpa":
        return keep
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) rotary positions that restart at 0 where each document (a run of equal `document_ids`) begins."""
    index = torch.arange(document_ids.shape[1], device=document_ids.device)[None].expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, 0).cummax(dim=1).values  # start of the document of each position
    return index - first


def check_document_ids(document_ids: torch.Tensor, batch: int, total_len: int, contiguity: bool = True):
    """A document layout must be (B, total length) integers with each document one contiguous run (checked with
    one host sync when `contiguity`)."""
    if not isinstance(document_ids, torch.Tensor) or document_ids.dtype.is_floating_point or document_ids.dim() != 2:
        raise ValueError(
            "LLaDA: document_ids must be an integer tensor (batch, sequence) giving each token's document, got "
            f"{type(document_ids).__name__} {getattr(document_ids, 'dtype', '')} "
            f"{tuple(getattr(document_ids, 'shape', ()))}."
        )
    if tuple(document_ids.shape) != (batch, total_len):
        raise ValueError(
            f"LLaDA: document_ids has shape {tuple(document_ids.shape)} but must match the rows, (batch, sequence) = "
            f"({batch}, {total_len})."
        )
    if not contiguity:
        return
    runs = 1 + (document_ids[:, 1:] != document_ids[:, :-1]).sum(dim=1)
    ordered = document_ids.sort(dim=1).values
    distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)
    if bool((runs != distinct).any()):
        row = int((runs != distinct).nonzero()[0, 0])
        raise ValueError(
            f"LLaDA: document_ids row {row} has a document split into several runs ({document_ids[row].tolist()}); "
            "each document must be one contiguous run of positions (number them 0, 0, 1, 1, 1, 2, ...)."
        )


def document_mask_for(
    implementation: str,
    document_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    window_start: int,
    q_len: int,
    dtype: torch.dtype,
):
    """Attention restricted to each query's own document (and to real keys when `attention_mask` is given).

    `document_ids` is (B, Tk) over the whole sequence; the queries are positions window_start..window_start+q_len-1.
    flex: a `BlockMask`; sdpa: a boolean (B, 1, Tq, Tk); eager: an additive float mask. A padding query whose
    document has no real key sees itself, so no row is empty.
    """
    if implementation is not None and implementation.startswith(("flash_attention", "kernels-community")):
        raise ValueError(
            f"LLaDA: document_ids (document masking) is not implemented for attn_implementation={implementation!r}; "
            "load the model with attn_implementation='flex_attention', 'sdpa' or 'eager'."
        )
    keys_kept = attention_mask.bool() if attention_mask is not None else None  # (B, Tk)
    batch, key_len = document_ids.shape
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        def same_document(b, h, q, kv):
            keep = document_ids[b, q + window_start] == document_ids[b, kv]
            if keys_kept is not None:
                keep = keep & (keys_kept[b, kv] | (q + window_start == kv))
            return keep

        return create_block_mask(same_document, batch, None, q_len, key_len, device=document_ids.device)
    queries = document_ids[:, window_start : window_start + q_len]
    keep = (queries[:, :, None] == document_ids[:, None, :])[:, None]  # (B, 1, Tq, Tk)
    if keys_kept is not None:
        diagonal = torch.arange(q_len, device=keep.device)[:, None] + window_start == torch.arange(
            key_len, device=keep.device
        )
        keep = keep & (keys_kept[:, None, None, :] | diagonal)
    if implementation == "sdpa":
        return keep
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def select_positions(h: torch.Tensor, logits_to_keep) -> torch.Tensor:
    """The hidden states (B, T, d) where the LM head runs, as `logits_to_keep` selects (see `LLaDAModelLM.forward`)."""
    if logits_to_keep is None:
        return h
    if isinstance(logits_to_keep, int):
        return h[:, -logits_to_keep:] if logits_to_keep > 0 else h
    if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dtype == torch.bool:
        if logits_to_keep.shape != h.shape[:2]:
            raise ValueError(
                f"LLaDA: a boolean logits_to_keep must have the input's shape {tuple(h.shape[:2])}, got "
                f"{tuple(logits_to_keep.shape)}."
            )
        return h[logits_to_keep]  # (N, d)
    return h[:, logits_to_keep]


class LLaDAKVCache:
    """Keys/values (after RoPE) of every position of a sequence, per layer: lists of (B, Hkv, T, hd) tensors.

    Made by a forward pass with `use_cache=True`. A later forward pass given this cache and a window
    `cache_position = arange(start, end)` computes the window only, and each layer attends to
    `cat(cached[:start], window, cached[end:])`. By default the cache is never modified. With `write_in_place=True`
    the window's keys/values are written into the cache instead of concatenated (no full-length copy per layer and
    step): exact when every later pass covers the same window, as in the sampler's steps within one block, whose
    cache is private to that block.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], write_in_place: bool = False):
        self.keys = keys
        self.values = values
        self.write_in_place = write_in_place

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[2]

    def __len__(self) -> int:
        return len(self.keys)

    def splice(self, layer_idx: int, start: int, key: torch.Tensor, value: torch.Tensor):
        """The full-length keys and values of a layer with positions [start, start + window) replaced."""
        end = start + key.shape[2]
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if start == 0 and end == k.shape[2]:
            return key, value
        if self.write_in_place:
            k[:, :, start:end] = key
            v[:, :, start:end] = value
            return k, v
        return (
            torch.cat((k[:, :, :start], key, k[:, :, end:]), dim=2),
            torch.cat((v[:, :, :start], value, v[:, :, end:]), dim=2),
        )


class LLaDABlock(GradientCheckpointingLayer):
    """Pre-norm block: h = x + attn_out(Attn(attn_norm(x))); y = h + ff_out(silu(ff_proj(n)) * up_proj(n))."""

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.n_heads // config.n_kv_heads
        self.scaling = self.head_dim**-0.5
        # sdpa reads a missing attribute as causal: LLaDA never is.
        self.is_causal = False
        d, hd = config.d_model, config.head_dim
        self.attn_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(config.n_heads * hd, d, bias=False)
        self.ff_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_size, d, bias=False)
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: LLaDAKVCache | None = None,
        window_start: int = 0,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        b, t, _ = hidden_states.shape
        x = self.attn_norm(hidden_states)
        q = self.q_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        cos, sin = position_embeddings
        q = apply_rotary(q, cos, sin, self.config.rope_full_precision)
        k = apply_rotary(k, cos, sin, self.config.rope_full_precision)
        if past_key_values is not None:
            k, v = past_key_values.splice(self.layer_idx, window_start, k, v)  # (B, Hkv, Tk, hd)
        # The attention probabilities exist only on the eager path: it serves the calls that ask for them.
        attend = eager_attention_forward if output_attentions else attention_function(self.config._attn_implementation)
        attn, weights = attend(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
            **kwargs,
        )
        attn = attn.reshape(b, t, -1).contiguous()  # (B, T, H * hd)
        h = hidden_states + self.dropout(self.attn_out(attn))
        n = self.ff_norm(h)
        y = h + self.dropout(self.ff_out(F.silu(self.ff_proj(n)) * self.up_proj(n)))
        return y, k, v, weights if output_attentions else None


@dataclass
class LLaDAModelOutput(ModelOutput):
    """
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, d_model)`): after `ln_f`.
    past_key_values (`LLaDAKVCache`, *optional*): keys/values of the whole sequence when `use_cache=True`.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): the embeddings and each block's output.
    attentions (`tuple(torch.FloatTensor)`, *optional*): with `output_attentions=True`, each block's attention
        probabilities `(batch_size, n_heads, query_length, key_length)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    past_key_values: LLaDAKVCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class LLaDAOutput(ModelOutput):
    """
    logits (`torch.FloatTensor`): `(batch_size, sequence_length, vocab)`, or only the positions selected by
        `logits_to_keep` (see `LLaDAModelLM.forward`). Position i predicts token i (no shift).
    past_key_values (`LLaDAKVCache`, *optional*): keys/values of the whole sequence when `use_cache=True`.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): the embeddings and each block's output.
    attentions (`tuple(torch.FloatTensor)`, *optional*): each block's attention probabilities (see `LLaDAModelOutput`).
    """

    logits: torch.FloatTensor | None = None
    past_key_values: LLaDAKVCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


#: The files that travel with a checkpoint so that `trust_remote_code=True` loads it without this package.
HUB_CORE_FILES = (
    "configuration_llada.py",
    "modeling_llada.py",
    "generation_llada.py",
    "masking_llada.py",
    "likelihood_llada.py",
    "rope_llada.py",
    "configuration_llada_moe.py",
    "modeling_llada_moe.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_llada.LLaDAConfig",
    "AutoModel": "modeling_llada.LLaDAModelLM",
    "AutoModelForMaskedLM": "modeling_llada.LLaDAModelLM",
    "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
}


def copy_hub_core_files(save_directory: str | os.PathLike) -> list[str]:
    """Copy the hub-core code files next to a checkpoint; returns the written paths."""
    here = os.path.dirname(os.path.abspath(__file__))
    written = []
    for name in HUB_CORE_FILES:
        target = os.path.join(save_directory, name)
        if os.path.abspath(os.path.join(here, name)) != os.path.abspath(target):
            shutil.copyfile(os.path.join(here, name), target)
        written.append(target)
    return written


def _local_model_folder(pretrained_model_name_or_path, kwargs) -> str | None:
    """The local folder `from_pretrained` reads (None for a Hub id); one without config.json is refused (instead of
    building the 8B default and failing on sizes)."""
    if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
        return None
    folder = os.path.normpath(os.path.join(pretrained_model_name_or_path, kwargs.get("subfolder") or ""))
    if not os.path.isdir(folder):
        path = os.fspath(pretrained_model_name_or_path)
        # A path that cannot be a Hub id ("name" or "owner/name"): say it is missing, not that the id is malformed.
        if not os.path.exists(path) and (
            os.path.isabs(path) or path.startswith(("./", "../", "~", ".\\", "..\\")) or path.count("/") > 1
        ):
            raise OSError(f"model path {path} does not exist; pass a folder written by save_pretrained or a Hub id.")
        return None
    if kwargs.get("config") is None and not os.path.isfile(os.path.join(folder, "config.json")):
        raise OSError(
            f"{folder} has no config.json, so it does not hold a model; pass a folder written by save_pretrained "
            "(or config=LLaDAConfig(...))."
        )
    return folder


class LLaDAMissingWeightsWarning(UserWarning):
    """`from_pretrained` built parameters that the checkpoint does not hold: they are random, and the model's outputs
    are meaningless (typically a `config.json` that does not describe the weights). The `llada` CLI makes it an
    error; `warnings.simplefilter("error", LLaDAMissingWeightsWarning)` does the same in Python."""


#: Weight files that `save_pretrained` may write; an older save's ones that a new save did not write are removed.
_WEIGHT_FILE_PREFIXES = ("model.safetensors", "model-", "pytorch_model")


def _atomic_save(save_directory: str, write) -> None:
    """Call `write(folder)` on a hidden temporary sibling of `save_directory`, then move its files in.

    A failure while writing (full disk, a killed process) leaves the old checkpoint untouched and no temporary folder
    behind; a new folder appears at once (a rename). Into an existing folder the finished files are moved with
    renames, and weight files of an older save that the new one did not write are removed.
    """
    target = os.path.abspath(save_directory)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".{name}.saving-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(temporary)
        write(temporary)
        if not os.path.isdir(target):
            os.replace(temporary, target)
            return
        written = sorted(os.listdir(temporary), key=lambda f: f == "config.json")  # config.json last
        for stale in os.listdir(target):
            if stale.startswith(_WEIGHT_FILE_PREFIXES) and stale not in written:
                os.remove(os.path.join(target, stale))
        for file in written:
            os.replace(os.path.join(temporary, file), os.path.join(target, file))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAConfig
    config: LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    #: Set by `import llada` to `llada.hub.push_to_hub` (model card, tokenizer, code files, one commit). Code loaded
    #: with trust_remote_code leaves it None and falls back to transformers' `push_to_hub`, which uploads what
    #: `save_pretrained` writes (weights, config with auto_map, code files, generation config).
    push_to_hub_function = None

    def push_to_hub(self, repo_id: str, **kwargs):
        """Publish weights, code files, generation config, the tokenizer (`tokenizer=`) and a model card in one
        commit (see `llada.hub.push_to_hub` for the arguments)."""
        push = LLaDAPreTrainedModel.push_to_hub_function
        if push is None:
            return super().push_to_hub(repo_id, **kwargs)
        return push(self, repo_id, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus `auto_map` in `config.json` and the hub-core code files, so that
        `AutoModel.from_pretrained(folder, trust_remote_code=True)` works where `llada` is not installed. The keys
        and config fields stay those of the published checkpoints."""
        if kwargs.get("push_to_hub"):
            raise ValueError(
                "LLaDA: save_pretrained(push_to_hub=True) would upload before the code files are written; call "
                "model.push_to_hub(repo_id) instead."
            )
        if os.path.exists(save_directory) and not os.path.isdir(save_directory):
            raise ValueError(
                f"LLaDA: save_pretrained({str(save_directory)!r}): this path is a file; save_pretrained writes a "
                "folder (config, weights, code files). Pass a folder path, or remove the file."
            )
        self.config.auto_map = dict(AUTO_MAP)
        if not kwargs.get("is_main_process", True):  # other processes of a distributed run write nothing of their own
            super().save_pretrained(save_directory, *args, **kwargs)
            return

        def write(folder):
            super(LLaDAPreTrainedModel, self).save_pretrained(folder, *args, **kwargs)
            copy_hub_core_files(folder)

        # Atomic per folder: a save that fails halfway (full disk) never leaves new config beside old weights.
        _atomic_save(str(save_directory), write)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus a `LLaDAMissingWeightsWarning` naming the parameters that the
        checkpoint does not hold (they stay random), so that a config that does not describe the weights is never a
        silently random model; and loading errors that name the file: a local folder without `config.json` is refused
        (instead of building the 8B default), unreadable weights name their file."""
        want_info = kwargs.pop("output_loading_info", False)
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        folder = _local_model_folder(source, kwargs)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except Exception as error:
            if type(error).__name__ != "SafetensorError":
                raise
            files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")) if folder else []
            where = ", ".join(os.path.join(folder, f) for f in files) if files else str(source)
            raise OSError(
                f"cannot read the weights in {where}: {error}; the file is damaged or incomplete, download or save it "
                "again."
            ) from error
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            warnings.warn(
                LLaDAMissingWeightsWarning(
                    f"LLaDA: the checkpoint {source} does not hold {len(missing)} parameters of the model built from "
                    f"its config ({shown}); they are randomly initialized and the outputs are meaningless. Check that "
                    "config.json describes the weights (n_layers, d_model, weight_tying, ...)."
                ),
                stacklevel=2,
            )
        return (model, info) if want_info else model


class LLaDAModel(LLaDAPreTrainedModel):
    """The published `LLaDAModel`: `transformer.{wte, blocks, ln_f, ff_out}`. Returns the final hidden states;
    the LM head `transformer.ff_out` lives here (that is where published checkpoints keep it) and is applied by
    `LLaDAModelLM`."""

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        modules = {
            "wte": nn.Embedding(config.padded_vocab_size, config.d_model),
            "emb_drop": nn.Dropout(config.embedding_dropout),
            "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
            "ln_f": LLaDARMSNorm(config.d_model, config.rms_norm_eps),
        }
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.transformer = nn.ModuleDict(modules)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding):
        self.transformer.wte = value

    def head_weight(self) -> torch.Tensor:
        """The (V, d) LM head matrix: `ff_out`, or the embedding matrix when the weights are tied."""
        return self.transformer.wte.weight if self.config.weight_tying else self.transformer.ff_out.weight

    def _check_inputs(self, input_ids, inputs_embeds, attention_mask, total_len, validate_inputs):
        ref = input_ids if input_ids is not None else inputs_embeds
        if total_len > self.config.max_sequence_length:
            raise ValueError(
                f"LLaDA: sequence length {total_len} exceeds max_sequence_length "
                f"({self.config.max_sequence_length}); shorten the input or the canvas."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (ref.shape[0], total_len):
            raise ValueError(
                f"LLaDA: attention_mask has shape {tuple(attention_mask.shape)} but must be (batch, sequence) = "
                f"({ref.shape[0]}, {total_len}), with 1 for real tokens and 0 for padding."
            )
        # The check reads the ids on the host: skipped while torch.compile / torch.export trace the forward pass.
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        if validate_inputs and not tracing and input_ids is not None and input_ids.numel() > 0:
            lo, hi = int(input_ids.min()), int(input_ids.max())
            size = self.config.padded_vocab_size
            if lo < 0 or hi >= size:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"LLaDA: token id {bad} is outside the vocabulary [0, {size}); check that the tokenizer matches "
                    "the model."
                )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        past_key_values: LLaDAKVCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        validate_inputs: bool = True,
        document_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> LLaDAModelOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids; masked positions hold `config.mask_token_id`.
            attention_mask (`torch.Tensor` of shape `(batch_size, total_length)`, *optional*):
                1 for tokens, 0 for (left) padding. Padding keys are hidden from every query. With a cache,
                `total_length` is the full cached length.
            position_ids (`torch.LongTensor`, *optional*):
                Rotary positions; defaults to `cache_position`, or `0..T-1`.
            past_key_values (`LLaDAKVCache`, *optional*):
                Keys/values of the whole sequence; the input is then the window `cache_position` of it.
            use_cache (`bool`, *optional*):
                Return the keys/values of the whole sequence as `past_key_values`.
            cache_position (`torch.LongTensor`, *optional*):
                Contiguous positions `start..end-1` of the input inside the cached sequence. Only its first entry is
                read (as a Python int): keep it on the CPU to avoid a device sync.
            validate_inputs (`bool`, *optional*, defaults to `True`):
                Check that the ids are inside the vocabulary (one host sync). Hot loops that validated their
                input once pass `False`.
            document_ids (`torch.LongTensor` of shape `(batch_size, total_length)`, *optional*):
                Packed rows: the document of each token (each document one contiguous run). Attention stays within
                a document and, unless `position_ids` is given, rotary positions restart at 0 in each document, so
                each document is computed as if it were alone. `None`: one document per row.
        """
        output_attentions = kwargs.pop("output_attentions", None)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LLaDA: pass exactly one of input_ids or inputs_embeds.")
        if input_ids is not None and input_ids.dim() != 2 or inputs_embeds is not None and inputs_embeds.dim() != 3:
            shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape)
            raise ValueError(
                f"LLaDA: input_ids must have shape (batch, sequence), got {shape}; add a batch dimension with "
                "input_ids[None]."
            )
        window = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        window_start = 0
        if past_key_values is not None:
            if cache_position is None:
                raise ValueError(
                    "LLaDA: past_key_values needs cache_position, the positions (start..end-1) of the input inside "
                    "the cached sequence."
                )
            window_start = int(cache_position[0])
            total_len = past_key_values.get_seq_length()
            if window_start + window > total_len:
                raise ValueError(
                    f"LLaDA: cache_position {window_start}..{window_start + window - 1} runs past the cached "
                    f"length {total_len}."
                )
        else:
            total_len = window
        self._check_inputs(input_ids, inputs_embeds, attention_mask, total_len, validate_inputs)
        if document_ids is not None:
            batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
            check_document_ids(document_ids, batch, total_len, contiguity=validate_inputs)

        x = self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds
        x = self.transformer.emb_drop(x)  # (B, T, d)
        if position_ids is None and document_ids is not None:
            position_ids = document_positions(document_ids)[:, window_start : window_start + window]
        elif position_ids is None:
            position_ids = torch.arange(window_start, window_start + window, device=x.device)[None]
        position_embeddings = rotary_cos_sin(position_ids, *rope_frequencies(self.config, total_len, x.device))
        implementation = "eager" if output_attentions else self.config._attn_implementation
        if document_ids is not None:
            mask = document_mask_for(implementation, document_ids, attention_mask, window_start, window, x.dtype)
        else:
            mask = padding_mask_for(implementation, attention_mask, window, x.dtype)

        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        keys, values = [], []
        for block in self.transformer.blocks:
            x, k, v, weights = block(
                x,
                position_embeddings,
                mask,
                past_key_values=past_key_values,
                window_start=window_start,
                output_attentions=output_attentions,
                **kwargs,
            )
            if output_attentions:
                attentions += (weights,)
            if use_cache:
                keys.append(k)
                values.append(v)
            if output_hidden_states:
                hidden_states += (x,)
        x = self.transformer.ln_f(x)
        cache = LLaDAKVCache(keys, values) if use_cache else None
        if not return_dict:
            return tuple(v for v in (x, cache, hidden_states, attentions) if v is not None)
        return LLaDAModelOutput(
            last_hidden_state=x, past_key_values=cache, hidden_states=hidden_states, attentions=attentions
        )


# The mixins come before the base class: under transformers < 4.50 `PreTrainedModel` itself inherits transformers'
# `GenerationMixin`, whose `generate` and `generation_config` must not shadow LLaDA's.
class LLaDAModelLM(LLaDAGenerationMixin, LLaDALikelihoodMixin, LLaDAPreTrainedModel):
    """LLaDA with its LM head: what `AutoModel`, `AutoModelForMaskedLM` and `AutoModelForCausalLM` load.

    `forward` returns `logits`; `generate` runs the reverse diffusion process; `log_likelihood` estimates
    log p(answer | prompt) with the Monte Carlo bound.
    """

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a LLaDA-MoE checkpoint (same `model_type`) gives `LLaDAMoEModelLM`."""
        config = kwargs.get("config")
        _local_model_folder(pretrained_model_name_or_path, kwargs)
        if cls is LLaDAModelLM and config is None and pretrained_model_name_or_path is not None:
            hub = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")
            config = LLaDAConfig.from_pretrained(
                pretrained_model_name_or_path, **{k: kwargs[k] for k in hub if k in kwargs}
            )
        # Duck-typed: with trust_remote_code, transformers may load the config module twice (two LLaDAConfig classes).
        if cls is LLaDAModelLM and getattr(config, "num_experts", None) is not None:
            from .modeling_llada_moe import LLaDAMoEModelLM

            # The folder's own config is loaded again there unless the caller gave one, so that config overrides
            # (`from_pretrained(path, router_aux_loss_coef=...)`) reach the config rather than the model's __init__.
            return LLaDAMoEModelLM.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Module | None:
        return None if self.config.weight_tying else self.model.transformer.ff_out

    def set_output_embeddings(self, value: nn.Linear):
        self.model.transformer.ff_out = value

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """`PreTrainedModel.resize_token_embeddings`, keeping the published field layout: `vocab_size` is the
        number of tokens asked for, `embedding_size` the rows of the (padded) table and head."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        rows = embeddings.weight.shape[0]
        self.config.embedding_size = rows
        self.config.vocab_size = min(new_num_tokens, rows) if new_num_tokens is not None else rows
        return embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        past_key_values: LLaDAKVCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | slice | torch.Tensor | None = None,
        validate_inputs: bool = True,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> LLaDAOutput | tuple:
        r"""
        Arguments are those of `LLaDAModel.forward` (including `document_ids` for packed rows), plus:

            logits_to_keep (`int`, `slice` or `torch.Tensor`, *optional*):
                Where to apply the LM head. `None`: every position, logits `(B, T, V)`. An `int` n: the last n
                positions, `(B, n, V)`. A `slice` or 1D index tensor over the sequence: those positions,
                `(B, k, V)`. A boolean tensor `(B, T)`: the selected positions of every row, flattened in row-major
                order, `(N, V)`; training uses it to compute logits only at masked positions.
            labels:
                Not accepted (an error says so): the diffusion loss is computed by `LLaDATrainer`.

        Example:

        ```python
        >>> out = model(input_ids)            # out.logits: (B, T, V)
        >>> out.logits.argmax(-1)             # prediction for every position (masked ones are what matters)
        ```
        """
        if labels is not None:
            raise ValueError(
                "LLaDA: forward() computes no loss from labels: the diffusion loss needs the masks and their "
                "probabilities. Train with llada.training.LLaDATrainer, or call "
                "llada.training.masked_diffusion_loss_sum(model, input_ids, maskable, masked, p, mask_token_id)."
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            use_cache=use_cache,
            cache_position=cache_position,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            validate_inputs=validate_inputs,
            **kwargs,
        )
        h = select_positions(out.last_hidden_state, logits_to_keep)
        logits = F.linear(h, self.model.head_weight())
        if not return_dict:
            return tuple(v for v in (logits, out.past_key_values, out.hidden_states, out.attentions) if v is not None)
        return LLaDAOutput(
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


__all__ = ["LLaDAKVCache", "LLaDAMissingWeightsWarning", "LLaDAModel", "LLaDAModelLM", "LLaDAPreTrainedModel"]
