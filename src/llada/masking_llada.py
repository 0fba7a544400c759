"""The diffusion math of LLaDA in one place: the forward (masking) process and the schedules built on it.

The trainer (loss), the sampler (how many tokens each step unmasks) and the likelihood estimator (stratified
mask counts) all call these functions; none re-implements them.

Forward process: a sequence x0 is corrupted by masking each token independently with probability p, where
p = (1 - eps) * t + eps and t ~ U(0, 1) per sequence. The loss weights each masked token's cross-entropy by 1/p.

Hub core: imports only torch and the standard library.
"""

import torch

#: Smallest masking probability of the forward process (t = 0 still masks with probability eps).
MASK_EPS = 1e-3


def mask_probability(t: torch.Tensor, eps: float = MASK_EPS) -> torch.Tensor:
    """p = (1 - eps) * t + eps: the masking probability at diffusion time t in [0, 1]."""
    return (1 - eps) * t + eps


def sample_mask_probability(
    batch_size: int, device=None, generator: torch.Generator | None = None, eps: float = MASK_EPS
) -> torch.Tensor:
    """One masking probability per sequence: t ~ U(0, 1), p = (1 - eps) t + eps. Shape (batch_size,), float32."""
    t = torch.rand(batch_size, device=device, generator=generator)
    return mask_probability(t, eps)


def forward_mask(
    shape: tuple[int, int],
    p: torch.Tensor,
    maskable: torch.Tensor | None = None,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which tokens the forward process masks: each maskable token independently with its row's probability p.

    Args:
        shape: (B, L).
        p: (B,) masking probabilities.
        maskable: optional (B, L) bool; False positions (SFT prompts) are never masked.
    Returns:
        (B, L) bool.
    """
    u = torch.rand(shape, device=device if device is not None else p.device, generator=generator)
    masked = u < p[:, None]
    if maskable is not None:
        masked &= maskable
    return masked


def diffusion_loss_sum(
    token_nll: torch.Tensor, row_of_token: torch.Tensor, p: torch.Tensor, answer_length: torch.Tensor
) -> torch.Tensor:
    """Sum over rows of [ sum over masked tokens of CE / p ] / |answer|  (DESIGN section 5).

    Divide by the number of rows (globally, across accumulation steps and processes) to get the loss. With every
    position maskable, |answer| = L and this is the pretraining loss sum CE / p / L; with prompts excluded it is
    the SFT loss.

    Args:
        token_nll: (N,) cross-entropy of each masked token.
        row_of_token: (N,) row index of each masked token.
        p: (B,) masking probability of each row.
        answer_length: (B,) number of maskable (response) tokens of each row.
    """
    weight = 1.0 / (p[row_of_token] * answer_length[row_of_token].to(p.dtype))
    return (token_nll.float() * weight).sum()


def num_transfer_tokens(masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens each of `steps` steps unmasks, per row, so that all masked tokens are filled.

    Row b with n masked tokens unmasks n // steps + (1 if j < n % steps else 0) tokens at step j (the published
    schedule: the remainder goes to the first steps).

    Args:
        masked: (B, L) bool, the masked positions of the current block.
    Returns:
        (B, steps) int64.
    """
    n = masked.sum(dim=1, keepdim=True)  # (B, 1)
    base = n // steps
    remainder = n % steps
    j = torch.arange(steps, device=masked.device)[None]  # (1, steps)
    return base + (j < remainder).to(base.dtype)


def stratified_mask_counts(answer_length: int, batch_size: int, k: int) -> torch.Tensor:
    """Numbers of answer tokens to mask in each of `batch_size` rows of the likelihood estimator.

    l_j = ((round(k + j L / b) - 1) mod L) + 1 for j = 0..b-1, with k ~ U{1..L} drawn by the caller: the counts
    cover 1..L evenly (stratified), which lowers the variance of the Monte Carlo bound.
    """
    L, b = answer_length, batch_size
    raw = torch.round(torch.linspace(float(k), k + (b - 1) * (L / b), steps=b)).long()
    return ((raw - 1) % L) + 1


def mask_exact_counts(
    counts: torch.Tensor, length: int, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, length) bool: row j has exactly counts[j] True entries at uniformly random positions."""
    counts = counts.to(device)
    scores = torch.rand(counts.shape[0], length, device=device, generator=generator)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a uniformly random permutation per row
    return ranks < counts[:, None]


__all__ = [
    "MASK_EPS",
    "diffusion_loss_sum",
    "forward_mask",
    "mask_exact_counts",
    "mask_probability",
    "num_transfer_tokens",
    "sample_mask_probability",
    "stratified_mask_counts",
]
