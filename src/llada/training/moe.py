"""Router losses and the expert-bias update for training LLaDA-MoE with `LLaDATrainer`.

- Load-balancing loss (switch style, over the selected experts), per MoE layer and averaged over layers:
  `E * sum_e f_e * P_e`, with f_e the share of the (token, slot) selections that went to expert e and P_e the mean
  router probability of e, over the real tokens (attention_mask). It is 1 when routing is uniform.
- Router z-loss: mean over real tokens and layers of `logsumexp(router_logits)^2`.
- Auxiliary-loss-free balancing (`expert_bias_update_rate` > 0, for models with `moe_router_enable_expert_bias`):
  after each optimizer step, `bias += rate * sign(mean load - load)` per layer, with the loads counted over every
  micro-batch (and process) of the step. The bias is a buffer: it never receives gradients.
"""

import torch
from transformers import TrainerCallback


def is_moe(model) -> bool:
    return getattr(getattr(model, "config", None), "num_experts", None) is not None


def router_losses(
    router_logits: tuple[torch.Tensor, ...],
    selected_experts: tuple[torch.Tensor, ...],
    num_experts: int,
    token_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(load-balancing loss, z-loss), float32 scalars, averaged over the MoE layers.

    Args:
        router_logits: per MoE layer, (N, E) router logits of the N = B * T tokens.
        selected_experts: per MoE layer, (N, k) chosen experts.
        token_mask: (B, T) or (N,), 1 for real tokens; None: all tokens.
    """
    aux, z = [], []
    for logits, experts in zip(router_logits, selected_experts, strict=True):
        logits = logits.float()
        weight = (
            torch.ones(logits.shape[0], device=logits.device)
            if token_mask is None
            else token_mask.reshape(-1).to(logits.device, torch.float32)
        )
        tokens = weight.sum().clamp_min(1.0)
        probs = torch.softmax(logits, dim=-1)  # (N, E)
        mean_prob = (probs * weight[:, None]).sum(0) / tokens  # (E,)
        counts = torch.zeros(num_experts, device=logits.device).index_add_(
            0, experts.reshape(-1), weight.repeat_interleave(experts.shape[-1])
        )
        share = counts / (tokens * experts.shape[-1])  # (E,), no gradient (selections are discrete)
        aux.append(num_experts * (share * mean_prob).sum())
        z.append((torch.logsumexp(logits, dim=-1).pow(2) * weight).sum() / tokens)
    return torch.stack(aux).mean(), torch.stack(z).mean()


def expert_loads(selected_experts: tuple[torch.Tensor, ...], num_experts: int, token_mask=None) -> torch.Tensor:
    """(layers, E) float32 counts of (token, slot) selections per expert, over the real tokens."""
    rows = []
    for experts in selected_experts:
        weight = (
            torch.ones(experts.shape[0], device=experts.device)
            if token_mask is None
            else token_mask.reshape(-1).to(experts.device, torch.float32)
        )
        rows.append(
            torch.zeros(num_experts, device=experts.device).index_add_(
                0, experts.reshape(-1), weight.repeat_interleave(experts.shape[-1])
            )
        )
    return torch.stack(rows)


class ExpertBiasUpdate(TrainerCallback):
    """After each optimizer step, moves each MoE layer's `expert_bias` towards balance (see the module docstring)."""

    def __init__(self, trainer, rate: float):
        self.trainer = trainer
        self.rate = rate

    def on_optimizer_step(self, args, state, control, **kwargs):
        loads = self.trainer._expert_loads
        self.trainer._expert_loads = None
        if loads is None:
            return
        if args.world_size > 1:
            loads = self.trainer.accelerator.reduce(loads, reduction="sum")
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        biases = [m.expert_bias for m in model.modules() if getattr(m, "expert_bias", None) is not None]
        with torch.no_grad():
            for bias, load in zip(biases, loads, strict=True):
                bias += self.rate * torch.sign(load.mean() - load).to(bias.device, bias.dtype)


__all__ = ["ExpertBiasUpdate", "expert_loads", "is_moe", "router_losses"]
