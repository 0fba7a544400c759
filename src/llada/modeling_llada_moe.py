"""LLaDA-MoE: the mixture-of-experts LLaDA (a bidirectional OLMoE-style Transformer with QK-norm and a shared expert).

Parameter names are those of the published checkpoints (`model.layers.{i}.self_attn.q_proj`, `mlp.gate` the router,
`mlp.experts.{j}.gate_proj`, `shared_expert.*`, `lm_head`, ...). The routed experts are held as 3D tensors
(`mlp.experts.gate_up_proj` (E, 2I, d), `mlp.experts.down_proj` (E, d, I)) and run through transformers' experts
kernels (`experts_implementation`: "grouped_mm" by default, "batched_mm", "eager"); a checkpoint conversion maps the
published per-expert keys to those tensors on load and back on save, so what we save is in the published layout.

Routing as published: softmax of the router logits in float32 (+ `expert_bias` when enabled), top-k; the weights are
those (biased) scores, not renormalised (see `LLaDAMoEConfig` for `llada_routing_options`).

Generation, likelihood and the KV cache are the dense model's (`LLaDAGenerationMixin`, `LLaDALikelihoodMixin`,
`LLaDAKVCache`).

Hub core: copied next to saved weights; imports only torch, transformers and its sibling files.
"""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

# Every hub-core file reachable from here is imported directly (transformers 4.x and 5.0 copy only those).
from .configuration_llada import LLaDAConfig, _major_minor  # noqa: F401
from .configuration_llada_moe import LLaDAMoEConfig
from .generation_llada import LLaDAGenerationMixin
from .likelihood_llada import LLaDALikelihoodMixin
from .masking_llada import num_transfer_tokens  # noqa: F401
from .modeling_llada import (
    GradientCheckpointingLayer,  # transformers' own, or its stand-in before 4.52
    LLaDAKVCache,
    LLaDAPreTrainedModel,
    LLaDARMSNorm,
    apply_rotary,
    attention_function,
    check_document_ids,
    copy_hub_core_files,
    document_mask_for,
    document_positions,
    padding_mask_for,
    rotary_cos_sin,
    select_positions,
)
from .rope_llada import plain_inv_freq

#: `auto_map` written into the config.json of our saves (trust_remote_code loads these classes).
MOE_AUTO_MAP = {
    "AutoConfig": "configuration_llada_moe.LLaDAMoEConfig",
    "AutoModel": "modeling_llada_moe.LLaDAMoEModelLM",
    "AutoModelForMaskedLM": "modeling_llada_moe.LLaDAMoEModelLM",
    "AutoModelForCausalLM": "modeling_llada_moe.LLaDAMoEModelLM",
}

#: The oldest transformers that computes LLaDA-MoE's numbers (5.0 loads a saved folder with different logits).
MOE_MIN_TRANSFORMERS_VERSION = "5.17"

try:  # transformers 5: experts kernels and checkpoint conversions (transformers 4.x has neither)
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter
    from transformers.integrations.moe import use_experts_implementation

    MOE_SUPPORTED = _major_minor(transformers.__version__) >= _major_minor(MOE_MIN_TRANSFORMERS_VERSION)
except ImportError:  # importing this file stays possible (e.g. `import llada`); building a model raises
    MOE_SUPPORTED = False

    def use_experts_implementation(cls):
        return cls


if MOE_SUPPORTED:
    # The published checkpoints keep one module per expert; the model holds them stacked.
    register_checkpoint_conversion_mapping(
        "LLaDAMoEModelLM",
        [
            WeightConverter(
                source_patterns=["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"],
                target_patterns="mlp.experts.gate_up_proj",
                operations=[MergeModulelist(dim=0), Concatenate(dim=1)],
            ),
            WeightConverter(
                source_patterns="mlp.experts.*.down_proj.weight",
                target_patterns="mlp.experts.down_proj",
                operations=[MergeModulelist(dim=0)],
            ),
        ],
        overwrite=True,
    )


class LLaDAMoEMLP(nn.Module):
    """SwiGLU MLP: `down_proj(silu(gate_proj(x)) * up_proj(x))` (dense layers and the shared expert)."""

    def __init__(self, config: LLaDAMoEConfig, intermediate_size: int):
        super().__init__()
        d = config.hidden_size
        self.gate_proj = nn.Linear(d, intermediate_size, bias=False)
        self.up_proj = nn.Linear(d, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, d, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


@use_experts_implementation
class LLaDAMoEExperts(nn.Module):
    """The routed experts as 3D tensors; `forward(x (N, d), top_k_index (N, k), top_k_weights (N, k))` -> (N, d)."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = config.expert_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim))
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states, top_k_index, top_k_weights):
        """The reference loop over experts ("eager"); the default kernels are transformers' grouped/batched mm."""
        out = torch.zeros_like(hidden_states)
        for e in range(self.num_experts):
            token, slot = torch.where(top_k_index == e)
            if token.numel() == 0:
                continue
            gate, up = F.linear(hidden_states[token], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(self.act_fn(gate) * up, self.down_proj[e]) * top_k_weights[token, slot, None]
            out.index_add_(0, token, y.to(out.dtype))
        return out


def route(config: LLaDAMoEConfig, router_logits: torch.Tensor, expert_bias: torch.Tensor | None):
    """(weights (N, k) float32, experts (N, k)) from router logits (N, E), as the published code routes."""
    scores = F.softmax(router_logits, dim=-1, dtype=torch.float32)
    if expert_bias is not None:
        scores = scores + expert_bias.float()
    weights, experts = torch.topk(scores, config.num_experts_per_tok, dim=-1)
    if config.llada_routing_options:
        if config.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights * config.routed_scaling_factor
    return weights, experts


class LLaDAMoESparseBlock(nn.Module):
    """Router (`gate`), routed experts, optional `expert_bias` buffer. Returns (output, router logits (N, E))."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__()
        self.config = config
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = LLaDAMoEExperts(config)
        if config.moe_router_enable_expert_bias:
            self.register_buffer("expert_bias", torch.zeros(config.num_experts, dtype=torch.float32))
        else:
            self.expert_bias = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, d)
        router_logits = self.gate(flat)  # (N, E)
        weights, experts = route(self.config, router_logits, self.expert_bias)
        out = self.experts(flat, experts, weights.to(flat.dtype))
        return out.reshape(shape), router_logits, experts


class LLaDAMoEAttention(nn.Module):
    """Bidirectional attention with per-head QK RMS norm, optional `clip_qkv`, partial rotary."""

    def __init__(self, config: LLaDAMoEConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        d, hd, bias = config.hidden_size, config.head_dim, config.attention_bias
        self.q_proj = nn.Linear(d, config.num_attention_heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, config.num_key_value_heads * hd, bias=bias)
        self.v_proj = nn.Linear(d, config.num_key_value_heads * hd, bias=bias)
        self.o_proj = nn.Linear(config.num_attention_heads * hd, d, bias=bias)
        if config.qk_layernorm:
            self.q_norm = LLaDARMSNorm(hd, config.rms_norm_eps)
            self.k_norm = LLaDARMSNorm(hd, config.rms_norm_eps)

    def _rotate(self, x, cos, sin):
        rot = cos.shape[-1]
        if rot == self.head_dim:
            return apply_rotary(x, cos, sin, full_precision=False)
        return torch.cat((apply_rotary(x[..., :rot], cos, sin, full_precision=False), x[..., rot:]), dim=-1)

    def forward(self, x, position_embeddings, attention_mask, past_key_values=None, window_start=0, **kwargs):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, -1, self.head_dim)
        k = self.k_proj(x).view(b, t, -1, self.head_dim)
        v = self.v_proj(x).view(b, t, -1, self.head_dim)
        if self.config.qk_layernorm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.config.clip_qkv is not None:
            c = self.config.clip_qkv
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, hd)
        cos, sin = position_embeddings
        q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.splice(self.layer_idx, window_start, k, v)
        attend = attention_function(self.config._attn_implementation)
        out, _ = attend(
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
        return self.o_proj(out.reshape(b, t, -1).contiguous()), k, v


class LLaDAMoEDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm layer: attention, then a dense MLP or (router + experts + shared expert)."""

    def __init__(self, config: LLaDAMoEConfig, layer_idx: int):
        super().__init__()
        self.is_moe = config.is_moe_layer(layer_idx)
        d = config.hidden_size
        self.input_layernorm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.self_attn = LLaDAMoEAttention(config, layer_idx)
        self.post_attention_layernorm = LLaDARMSNorm(d, config.rms_norm_eps)
        if self.is_moe:
            self.mlp = LLaDAMoESparseBlock(config)
            size = config.shared_expert_intermediate_size
            self.shared_expert = LLaDAMoEMLP(config, size) if size else None
        else:
            self.mlp = LLaDAMoEMLP(config, config.dense_intermediate_size)
            self.shared_expert = None

    def forward(self, hidden_states, position_embeddings, attention_mask=None, **kwargs):
        attn, k, v = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask, **kwargs)
        h = hidden_states + attn
        x = self.post_attention_layernorm(h)
        router_logits = selected = None
        if self.is_moe:
            y, router_logits, selected = self.mlp(x)
            if self.shared_expert is not None:
                y = y + self.shared_expert(x)
        else:
            y = self.mlp(x)
        return h + y, k, v, router_logits, selected


@dataclass
class LLaDAMoEOutput(ModelOutput):
    """
    logits (`torch.FloatTensor`): as `LLaDAOutput.logits` (`logits_to_keep` selects positions).
    last_hidden_state (`torch.FloatTensor`): after `model.norm` (only from `LLaDAMoEModel`).
    past_key_values (`LLaDAKVCache`, *optional*): with `use_cache=True`.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): embeddings and each layer's output.
    router_logits (`tuple(torch.FloatTensor)`, *optional*): with `output_router_logits=True`, per MoE layer the
        router logits (B * T, E).
    selected_experts (`tuple(torch.LongTensor)`, *optional*): with `output_router_logits=True`, per MoE layer the
        chosen experts (B * T, k), highest score first.
    """

    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    past_key_values: LLaDAKVCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    selected_experts: tuple[torch.LongTensor, ...] | None = None


class LLaDAMoEPreTrainedModel(LLaDAPreTrainedModel):
    config_class = LLaDAMoEConfig
    config: LLaDAMoEConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDAMoEDecoderLayer"]
    _can_record_outputs = None

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, LLaDAMoEExperts):
            nn.init.normal_(module.gate_up_proj, std=std)
            nn.init.normal_(module.down_proj, std=std)
        elif isinstance(module, LLaDAMoESparseBlock) and module.expert_bias is not None:
            nn.init.zeros_(module.expert_bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, LLaDARMSNorm):
            nn.init.ones_(module.weight)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained` in the published layout (per-expert keys), plus `auto_map` and the
        hub-core code files for `trust_remote_code=True`."""
        if kwargs.get("push_to_hub"):
            raise ValueError(
                "LLaDA-MoE: save_pretrained(push_to_hub=True) would upload before the code files are written; call "
                "model.push_to_hub(repo_id) instead."
            )
        self.config.auto_map = dict(MOE_AUTO_MAP)
        self.config.architectures = ["LLaDAMoEModelLM"]
        PreTrainedModel.save_pretrained(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            copy_hub_core_files(save_directory)


class LLaDAMoEModel(LLaDAMoEPreTrainedModel):
    """`model.{embed_tokens, layers, norm}`; returns the final hidden states (and router outputs on request)."""

    def __init__(self, config: LLaDAMoEConfig):
        if not MOE_SUPPORTED:
            raise ImportError(
                f"LLaDA-MoE needs transformers >= {MOE_MIN_TRANSFORMERS_VERSION} (its experts kernels and checkpoint "
                f"conversion); this is transformers {transformers.__version__}. Upgrade with "
                f"`pip install -U 'transformers>={MOE_MIN_TRANSFORMERS_VERSION}'`."
            )
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(LLaDAMoEDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        past_key_values: LLaDAKVCache | None = None,
        use_cache=None,
        cache_position=None,
        output_hidden_states=None,
        output_router_logits=None,
        validate_inputs: bool = True,
        document_ids=None,
        **kwargs,
    ) -> LLaDAMoEOutput:
        """Arguments as `LLaDAModel.forward` (`document_ids` included), plus `output_router_logits` (return each MoE
        layer's router logits and selected experts)."""
        if kwargs.pop("output_attentions", False):
            raise ValueError("LLaDA-MoE: output_attentions is not supported; use output_hidden_states=True.")
        kwargs.pop("return_dict", None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LLaDA-MoE: pass exactly one of input_ids or inputs_embeds.")
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref.dim() != (2 if input_ids is not None else 3):
            raise ValueError(
                f"LLaDA-MoE: input_ids must have shape (batch, sequence), got {tuple(ref.shape)}; add a batch "
                "dimension with input_ids[None]."
            )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        window = ref.shape[1]
        window_start = 0
        total_len = window
        if past_key_values is not None:
            if cache_position is None:
                raise ValueError("LLaDA-MoE: past_key_values needs cache_position (start..end-1 of the input).")
            window_start = int(cache_position[0])
            total_len = past_key_values.get_seq_length()
        if attention_mask is not None and tuple(attention_mask.shape) != (ref.shape[0], total_len):
            raise ValueError(
                f"LLaDA-MoE: attention_mask has shape {tuple(attention_mask.shape)} but must be (batch, sequence) = "
                f"({ref.shape[0]}, {total_len}), with 1 for real tokens and 0 for padding."
            )
        if validate_inputs and input_ids is not None and input_ids.numel() > 0:
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(
                    f"LLaDA-MoE: token id {lo if lo < 0 else hi} is outside the vocabulary [0, "
                    f"{self.config.vocab_size}); check that the tokenizer matches the model."
                )
        if document_ids is not None:
            check_document_ids(document_ids, ref.shape[0], total_len, contiguity=validate_inputs)
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None and document_ids is not None:
            position_ids = document_positions(document_ids)[:, window_start : window_start + window]
        elif position_ids is None:
            position_ids = torch.arange(window_start, window_start + window, device=x.device)[None]
        inv_freq = plain_inv_freq(self.config.rotary_dim, self.config.rope_theta, x.device)
        position_embeddings = rotary_cos_sin(position_ids, inv_freq)
        implementation = self.config._attn_implementation
        if document_ids is not None:
            mask = document_mask_for(implementation, document_ids, attention_mask, window_start, window, x.dtype)
        else:
            mask = padding_mask_for(implementation, attention_mask, window, x.dtype)
        hidden_states = (x,) if output_hidden_states else None
        keys, values, router_logits, selected = [], [], [], []
        for layer in self.layers:
            x, k, v, logits, experts = layer(
                x, position_embeddings, mask, past_key_values=past_key_values, window_start=window_start, **kwargs
            )
            if use_cache:
                keys.append(k)
                values.append(v)
            if output_router_logits and logits is not None:
                router_logits.append(logits)
                selected.append(experts)
            if output_hidden_states:
                hidden_states += (x,)
        x = self.norm(x)
        return LLaDAMoEOutput(
            last_hidden_state=x,
            past_key_values=LLaDAKVCache(keys, values) if use_cache else None,
            hidden_states=hidden_states,
            router_logits=tuple(router_logits) if output_router_logits else None,
            selected_experts=tuple(selected) if output_router_logits else None,
        )


class LLaDAMoEModelLM(LLaDAMoEPreTrainedModel, LLaDAGenerationMixin, LLaDALikelihoodMixin):
    """LLaDA-MoE with its LM head (`lm_head`): what `AutoModel`, `AutoModelForMaskedLM`, `AutoModelForCausalLM` and
    `LLaDAModelLM.from_pretrained` give for a LLaDA-MoE checkpoint. `generate` and `log_likelihood` are the dense
    model's."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__(config)
        self.model = LLaDAMoEModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        past_key_values: LLaDAKVCache | None = None,
        use_cache=None,
        cache_position=None,
        output_hidden_states=None,
        output_router_logits=None,
        return_dict=None,
        logits_to_keep=None,
        validate_inputs: bool = True,
        labels=None,
        **kwargs,
    ) -> LLaDAMoEOutput:
        """As `LLaDAModelLM.forward` (`logits_to_keep` included), plus `output_router_logits`."""
        if labels is not None:
            raise ValueError(
                "LLaDA-MoE: forward() computes no loss from labels; train with llada.training.LLaDATrainer."
            )
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            use_cache=use_cache,
            cache_position=cache_position,
            output_hidden_states=output_hidden_states,
            output_router_logits=output_router_logits,
            validate_inputs=validate_inputs,
            **kwargs,
        )
        logits = self.lm_head(select_positions(out.last_hidden_state, logits_to_keep))
        return LLaDAMoEOutput(
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            router_logits=out.router_logits,
            selected_experts=out.selected_experts,
        )


__all__ = ["LLaDAMoEModel", "LLaDAMoEModelLM", "LLaDAMoEPreTrainedModel", "route"]
