"""LLaDA-MoE configuration.

The field names and defaults are those of the published LLaDA-MoE checkpoints (`inclusionAI/LLaDA-MoE-7B-A1B-Base`
/ `-Instruct`): transformers-style names (`hidden_size`, `num_experts`, ...), and `model_type` "llada" like the dense
model. `LLaDAConfig.from_dict` hands such a dict to this class, so `AutoConfig` gives the right one for either.

Which fields change the network (the published forward reads them) and which are stored only:

- honoured: shapes, `moe_layer_freq` (one entry per layer: 0 dense MLP, else MoE), `dense_intermediate_size`,
  `expert_intermediate_size`, `shared_expert_intermediate_size` (None: no shared expert), `num_experts`,
  `num_experts_per_tok`, `moe_router_enable_expert_bias`, `qk_layernorm`, `clip_qkv`, `attention_bias`,
  `hidden_act`, `rms_norm_eps`, `rope_theta`, `partial_rotary_factor`, `tie_word_embeddings`.
- stored, ignored by the published forward: `norm_topk_prob`, `routed_scaling_factor`, `router_num_group`,
  `router_topk_group`, `moe_router_score_function` (always softmax), `router_aux_loss_coef` (used by
  `LLaDATrainer` only), `max_position_embeddings` (a bound for generation planning only here).

`norm_topk_prob` and `routed_scaling_factor` take effect only when `llada_routing_options=True`, a field that only
this package writes: a published checkpoint keeps computing what the published code computes, whatever those
stored values say. Values the network cannot honour (another score function, router groups) raise a ValueError.

Hub core: this file is copied next to saved weights; it imports only transformers and the standard library.
"""

from transformers import PretrainedConfig


class LLaDAMoEConfig(PretrainedConfig):
    r"""
    Configuration of a LLaDA-MoE masked diffusion language model. The defaults describe LLaDA-MoE-7B-A1B.

    Args:
        vocab_size (`int`, *optional*, defaults to 157184): rows of the embedding and of the LM head.
        hidden_size (`int`, *optional*, defaults to 2048), num_hidden_layers (`int`, defaults to 16),
        num_attention_heads (`int`, defaults to 16), num_key_value_heads (`int`, defaults to None = heads): shapes;
            head_dim = hidden_size / num_attention_heads.
        dense_intermediate_size (`int`, defaults to 8192): MLP width of the dense layers (`moe_layer_freq` 0).
        expert_intermediate_size (`int`, defaults to 1024): width of every routed expert.
        shared_expert_intermediate_size (`int`, *optional*): width of the always-on shared expert of MoE layers;
            None: none.
        num_experts (`int`, defaults to 64), num_experts_per_tok (`int`, defaults to 8): routed experts and top-k.
        moe_layer_freq (`list[int]`, *optional*): one entry per layer, 0 = dense MLP, anything else = MoE. None
            means every layer is MoE.
        moe_router_enable_expert_bias (`bool`, defaults to `False`): a per-expert bias added to the routing scores
            (a saved buffer `mlp.expert_bias`, never trained by gradients).
        qk_layernorm (`bool`, defaults to `True`): RMS norm of each query/key head before rotary.
        clip_qkv (`float`, *optional*): clamp q, k, v to [-clip_qkv, clip_qkv].
        partial_rotary_factor (`float`, defaults to 1.0): share of each head's dims that are rotated, in (0, 1].
        rope_theta (`float`, defaults to 50000.0), rope_scaling (`dict`, *optional*): rotary base; only
            `rope_scaling=None` is implemented.
        norm_topk_prob (`bool`), routed_scaling_factor (`float`): see the module docstring and
            `llada_routing_options`.
        llada_routing_options (`bool`, defaults to `False`): honour `norm_topk_prob` (renormalise the top-k
            weights) and `routed_scaling_factor` (multiply them). Only this package's checkpoints set it.
        router_aux_loss_coef (`float`, defaults to 0.01), router_z_loss_coef (`float`, defaults to 0.0):
            weights of the load-balancing loss and of the router z-loss that `LLaDATrainer` adds.
        mask_token_id (`int`, *optional*, defaults to 156895): id of the mask token.
        max_position_embeddings (`int`, defaults to 8192): longest prompt plus canvas that generation plans for
            (the network itself has no length limit).
    """

    model_type = "llada"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=157184,
        hidden_size=2048,
        dense_intermediate_size=8192,
        expert_intermediate_size=1024,
        shared_expert_intermediate_size=None,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=None,
        hidden_act="silu",
        max_position_embeddings=8192,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        use_cache=False,
        pad_token_id=156892,
        bos_token_id=None,
        eos_token_id=156892,
        mask_token_id=156895,
        tie_word_embeddings=False,
        rope_theta=50000.0,
        rope_scaling=None,
        attention_bias=False,
        attention_dropout=0.0,
        clip_qkv=None,
        num_experts=64,
        num_experts_per_tok=8,
        norm_topk_prob=False,
        output_router_logits=False,
        router_aux_loss_coef=0.01,
        router_z_loss_coef=0.0,
        qk_layernorm=True,
        moe_layer_freq=None,
        moe_router_enable_expert_bias=False,
        moe_router_score_function="softmax",
        routed_scaling_factor=1,
        router_num_group=None,
        router_topk_group=None,
        partial_rotary_factor=1.0,
        llada_routing_options=False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.dense_intermediate_size = dense_intermediate_size
        self.expert_intermediate_size = expert_intermediate_size
        self.shared_expert_intermediate_size = shared_expert_intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.mask_token_id = mask_token_id
        self.rope_theta = rope_theta
        # Only None is implemented; not stored: transformers 5 turns `rope_scaling` into `rope_parameters`, and the
        # published config class defaults it to None.
        self.rope_scaling = rope_scaling  # the property below: refuses anything but None
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.clip_qkv = clip_qkv
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.norm_topk_prob = norm_topk_prob
        self.output_router_logits = output_router_logits
        self.router_aux_loss_coef = router_aux_loss_coef
        self.router_z_loss_coef = router_z_loss_coef
        self.qk_layernorm = qk_layernorm
        self.moe_layer_freq = list(moe_layer_freq) if moe_layer_freq is not None else [1] * num_hidden_layers
        self.moe_router_enable_expert_bias = moe_router_enable_expert_bias
        self.moe_router_score_function = moe_router_score_function
        self.routed_scaling_factor = routed_scaling_factor
        self.router_num_group = router_num_group
        self.router_topk_group = router_topk_group
        self.partial_rotary_factor = partial_rotary_factor
        self.llada_routing_options = llada_routing_options
        self._check()
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def _check(self):
        def fail(field, value, fix):
            raise ValueError(f"LLaDAMoEConfig: {field}={value!r} {fix}")

        if self.hidden_size % self.num_attention_heads != 0:
            fail(
                "num_attention_heads",
                self.num_attention_heads,
                f"does not divide hidden_size ({self.hidden_size}): head_dim must be an integer.",
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            fail(
                "num_key_value_heads",
                self.num_key_value_heads,
                f"must divide num_attention_heads ({self.num_attention_heads}).",
            )
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            fail(
                "num_experts_per_tok",
                self.num_experts_per_tok,
                f"must be between 1 and num_experts ({self.num_experts}).",
            )
        if len(self.moe_layer_freq) != self.num_hidden_layers:
            fail(
                "moe_layer_freq",
                self.moe_layer_freq,
                f"needs one entry per layer (num_hidden_layers = {self.num_hidden_layers}): 0 dense, 1 MoE.",
            )
        if not 0 < self.partial_rotary_factor <= 1:
            fail("partial_rotary_factor", self.partial_rotary_factor, "must be in (0, 1].")
        rot = int(self.head_dim * self.partial_rotary_factor)
        if rot < 2 or rot % 2:
            fail(
                "partial_rotary_factor",
                self.partial_rotary_factor,
                f"gives {rot} rotated dims of head_dim {self.head_dim}; they must be a positive even number.",
            )
        if self.moe_router_score_function != "softmax":
            fail(
                "moe_router_score_function",
                self.moe_router_score_function,
                "is not implemented; LLaDA-MoE routes with 'softmax'.",
            )
        for name in ("router_num_group", "router_topk_group"):
            value = getattr(self, name)
            if value is not None and value > 1:
                fail(name, value, "(group-limited routing) is not implemented; set it to None.")
        if self.hidden_act != "silu":
            fail("hidden_act", self.hidden_act, "is not implemented; LLaDA-MoE uses 'silu' (SwiGLU).")
        if self.mask_token_id is not None and not 0 <= self.mask_token_id < self.vocab_size:
            fail("mask_token_id", self.mask_token_id, f"is outside the vocabulary (size {self.vocab_size}).")

    @property
    def rope_scaling(self) -> None:
        """Always None: no RoPE extension is implemented for LLaDA-MoE. Setting another value (also through
        `from_pretrained(..., rope_scaling=...)`) raises."""
        return None

    @rope_scaling.setter
    def rope_scaling(self, value):
        if value is not None:
            raise ValueError(
                f"LLaDAMoEConfig: rope_scaling={value!r} is not implemented for LLaDA-MoE; set it to None."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def padded_vocab_size(self) -> int:
        return self.vocab_size

    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings

    def is_moe_layer(self, layer_idx: int) -> bool:
        return bool(self.moe_layer_freq[layer_idx])


__all__ = ["LLaDAMoEConfig"]
