"""Bound-based perplexity of a text: exp of minus the likelihood bound per token.

A diffusion model has no left-to-right factorisation, so the text is cut into chunks and each chunk is scored as the
answer of `log_likelihood` given the tokens just before it (at most `context_length` of them; none for the first
chunk, nor for any chunk with the default `context_length=0`):

    log p(text) >= sum_i bound(chunk_i | context_i),      perplexity = exp(-sum_i bound_i / number of tokens)

Each bound is a lower bound of log p(chunk | context) in expectation, so the reported perplexity is an upper bound of
the model's perplexity on this chunking (up to Monte Carlo noise; the default `"stratified"` estimator is unbiased
and has several times less variance than the published one). Chunks of `chunk_length` tokens (default: the model's
`max_sequence_length` minus `context_length`) fit the model's maximum length with their context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PerplexityResult:
    """`log_likelihood`: the summed bound (nats); `num_tokens`: tokens scored; `num_chunks`: answers scored."""

    log_likelihood: float
    num_tokens: int
    num_chunks: int

    @property
    def nll_per_token(self) -> float:
        return -self.log_likelihood / self.num_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)


def chunk_pairs(input_ids, chunk_length: int, context_length: int = 0) -> list[tuple[list[int], list[int]]]:
    """Cut `input_ids` into (context, chunk) pairs: chunks of `chunk_length` tokens, each with up to
    `context_length` preceding tokens as its prompt."""
    ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
    if chunk_length < 1:
        raise ValueError(f"chunk_length ({chunk_length}) must be at least 1.")
    if context_length < 0:
        raise ValueError(f"context_length ({context_length}) must be >= 0.")
    return [
        (ids[max(0, start - context_length) : start], ids[start : start + chunk_length])
        for start in range(0, len(ids), chunk_length)
    ]


def bound_perplexity(
    model,
    input_ids,
    mc_num: int = 128,
    chunk_length: int | None = None,
    context_length: int = 0,
    estimator: str = "stratified",
    generator: torch.Generator | None = None,
    chunks_per_call: int = 8,
    progress: bool = False,
    **likelihood_kwargs,
) -> PerplexityResult:
    r"""
    The bound-based perplexity of one token sequence, or of several (a list of documents; each is chunked on its own
    and the bounds and token counts are summed).

    Args:
        model (`LLaDAModelLM`): The model (its `log_likelihood` does the scoring).
        input_ids (`list[int]`, `torch.LongTensor`, or a list of them): The text(s), tokenized.
        mc_num (`int`, *optional*, defaults to 128): Monte Carlo rows per chunk.
        chunk_length (`int`, *optional*): Tokens per chunk; defaults to `max_sequence_length - context_length`.
        context_length (`int`, *optional*, defaults to 0): Preceding tokens given to each chunk as its prompt.
        estimator (`str`, *optional*, defaults to `"stratified"`): See `LLaDALikelihoodMixin.log_likelihood`.
        generator (`torch.Generator`, *optional*): Makes the estimate reproducible.
        chunks_per_call (`int`, *optional*, defaults to 8): Chunks scored together (one progress-bar step).
        progress (`bool`, *optional*, defaults to `False`): Show a tqdm progress bar over the chunks.
        likelihood_kwargs: Passed to `log_likelihood` (`batch_size`, `max_batch_tokens`).
    """
    max_len = model.config.max_sequence_length
    if chunk_length is None:
        chunk_length = max_len - context_length
    if chunk_length + context_length > max_len:
        raise ValueError(
            f"chunk_length ({chunk_length}) + context_length ({context_length}) exceeds the model's "
            f"max_sequence_length ({max_len}); lower one of them."
        )
    documents = input_ids
    if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1 or (input_ids and isinstance(input_ids[0], int)):
        documents = [input_ids]
    pairs = [pair for doc in documents for pair in chunk_pairs(doc, chunk_length, context_length)]
    if not pairs:
        raise ValueError("the text is empty: there is nothing to score.")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="perplexity", unit="chunk", disable=None)  # only on a terminal
    total = 0.0
    for start in range(0, len(pairs), chunks_per_call):
        group = pairs[start : start + chunks_per_call]
        scores = model.log_likelihood(
            [context for context, _ in group],
            [chunk for _, chunk in group],
            mc_num=mc_num,
            estimator=estimator,
            generator=generator,
            **likelihood_kwargs,
        )
        total += float(scores.sum())
        if bar is not None:
            bar.update(len(group))
            bar.set_postfix(ppl=f"{math.exp(-total / sum(len(c) for _, c in pairs[: start + len(group)])):.3g}")
    if bar is not None:
        bar.close()
    return PerplexityResult(total, sum(len(chunk) for _, chunk in pairs), len(pairs))
