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


def _token_weights(row_of_token: torch.Tensor, p: torch.Tensor, answer_length: torch.Tensor) -> torch.Tensor:
    """(N,) weight 1 / (p |answer|) of each masked token, from its row's p and answer length."""
    return 1.0 / (p[row_of_token] * answer_length[row_of_token].to(p.dtype))


def diffusion_loss_rows(
    token_nll: torch.Tensor, row_of_token: torch.Tensor, p: torch.Tensor, answer_length: torch.Tensor
) -> torch.Tensor:
    """(B,) per row: [ sum over the row's masked tokens of CE / p ] / |answer|  (DESIGN section 5), in float32.

    The per-sample term of the diffusion bound: its mean over rows is the training loss; minus it is a one-sample
    Monte Carlo estimate of the (per-token) ELBO of the row's answer, which preference optimization (VRPO) averages.

    Args:
        token_nll: (N,) cross-entropy of each masked token.
        row_of_token: (N,) row index of each masked token.
        p: (B,) masking probability of each row (for exact-count masks of l of L tokens, p = l / L).
        answer_length: (B,) number of maskable (response) tokens of each row.
    """
    weight = _token_weights(row_of_token, p, answer_length)
    rows = torch.zeros(p.shape[0], dtype=torch.float32, device=token_nll.device)
    return rows.index_add_(0, row_of_token, token_nll.float() * weight)


def diffusion_loss_sum(
    token_nll: torch.Tensor, row_of_token: torch.Tensor, p: torch.Tensor, answer_length: torch.Tensor
) -> torch.Tensor:
    """Sum over rows of [ sum over masked tokens of CE / p ] / |answer|  (DESIGN section 5).

    Divide by the number of rows (globally, across accumulation steps and processes) to get the loss. With every
    position maskable, |answer| = L and this is the pretraining loss sum CE / p / L; with prompts excluded it is
    the SFT loss. Arguments as `diffusion_loss_rows`.
    """
    weight = _token_weights(row_of_token, p, answer_length)
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
    return transfer_schedule(masked.sum(dim=1), steps)


def transfer_schedule(counts: torch.Tensor, steps: int) -> torch.Tensor:
    """`num_transfer_tokens` from the (B,) numbers of masked tokens (on any device, the host included)."""
    n = counts[:, None]  # (B, 1)
    base = n // steps
    remainder = n % steps
    j = torch.arange(steps, device=counts.device)[None]  # (1, steps)
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
    counts: torch.Tensor,
    length: int,
    device=None,
    generator: torch.Generator | None = None,
    maskable: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, length) bool: row j has exactly counts[j] True entries at uniformly random positions.

    With `maskable` ((B, length) bool), the positions are drawn among the row's maskable ones only (counts[j] must
    not exceed them).
    """
    counts = counts.to(device)
    scores = torch.rand(counts.shape[0], length, device=device, generator=generator)
    if maskable is not None:
        scores = scores.masked_fill(~maskable.to(scores.device), 2.0)  # never-maskable positions rank last
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a uniformly random permutation per row
    return ranks < counts[:, None]


def systematic_mask_counts(
    answer_length: int, num_rows: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(num_rows,) int64 counts in 1..L, sorted: l_j = ceil((j + 1 - u) L / n), u ~ U(0, 1).

    Systematic sampling of the diffusion time t ~ U(0, 1] (l = ceil(t L)): the average over the rows of any function
    of l is an unbiased estimate of its mean over l ~ U{1..L}, and every count appears n / L times (up to one).
    """
    u = torch.rand((), generator=generator, dtype=torch.float64)
    t = (torch.arange(num_rows, dtype=torch.float64) + 1 - u) / num_rows  # (n,) in (0, 1]
    return torch.ceil(t * answer_length).long().clamp_(1, answer_length)


def tiled_exact_masks(counts: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, length) bool: row j masks counts[j] positions; the rows of each count tile random permutations.

    The rows of count l take consecutive runs of l positions from a stream of passes over the positions, each pass
    a fresh uniformly random permutation; a row that straddles two passes takes the rest of the old pass and the
    first new positions it does not already hold (the skipped ones stay in the new pass for the next rows). So the
    rows of a count mask every position equally often (up to one pass), and since the construction commutes with
    any relabelling of the positions, each row is marginally a uniformly random l-subset: estimators that are
    unbiased with independent masks stay unbiased.

    Args:
        counts: (n,) int64 counts in 1..length.
    """
    masked = torch.zeros(counts.shape[0], length, dtype=torch.bool)
    for count in counts.unique().tolist():
        remaining: list[int] = []  # positions of the current pass not yet masked, in pass order
        for row in (counts == count).nonzero()[:, 0].tolist():
            chosen = remaining[:count]
            remaining = remaining[count:]
            if len(chosen) < count:
                held = set(chosen)
                fresh = torch.randperm(length, generator=generator).tolist()
                new = [p for p in fresh if p not in held][: count - len(chosen)]
                taken = set(new)
                remaining = [p for p in fresh if p not in taken]
                chosen += new
            masked[row, chosen] = True
    return masked


__all__ = [
    "MASK_EPS",
    "diffusion_loss_rows",
    "diffusion_loss_sum",
    "forward_mask",
    "mask_exact_counts",
    "mask_probability",
    "num_transfer_tokens",
    "transfer_schedule",
    "sample_mask_probability",
    "stratified_mask_counts",
    "systematic_mask_counts",
    "tiled_exact_masks",
]
