"""The exact transfer rule batched: the same positions as one top-k per row (the published sampler's loop)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llada.generation_llada import select_transfer


def per_row_reference(confidence, candidate, k_rows, start, total_length):
    """The published loop: top-k of each row on a full-length row that is -inf outside the block."""
    batch, width = confidence.shape
    transfer = torch.zeros(batch, total_length, dtype=torch.bool)
    for b, k_b in enumerate(k_rows):
        row = torch.full((total_length,), float("-inf"), dtype=confidence.dtype)
        row[start : start + width] = confidence[b]
        if k_b:
            transfer[b, row.topk(k_b).indices] = True
    return transfer[:, start : start + width] & candidate


@st.composite
def blocks(draw):
    batch = draw(st.integers(1, 6))
    width = draw(st.integers(1, 40))
    start = draw(st.integers(0, 20))
    total_length = start + width + draw(st.integers(0, 20))
    # Few distinct values, so that ties are the rule rather than the exception (as in bf16).
    levels = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    confidence = (torch.randint(0, levels, (batch, width), generator=g).to(dtype)) / levels
    candidate = torch.rand(batch, width, generator=g) < draw(st.floats(0.2, 1.0))
    confidence = torch.where(candidate, confidence, float("-inf"))
    k_rows = [draw(st.integers(0, int(candidate[b].sum()))) for b in range(batch)]
    return confidence, candidate, k_rows, start, total_length


@settings(max_examples=300, deadline=None)
@given(blocks())
def test_batched_exact_rule_equals_the_per_row_loop(block):
    confidence, candidate, k_rows, start, total_length = block
    expected = per_row_reference(confidence, candidate, k_rows, start, total_length)
    got = select_transfer(confidence, candidate, torch.tensor(k_rows), k_rows, start=start, total_length=total_length)
    assert torch.equal(got, expected)
    assert got.sum(dim=1).tolist() == k_rows


def test_batched_exact_rule_breaks_ties_like_top_k():
    # Every confidence equal: which positions win is top-k's tie rule, the same batched as row by row.
    confidence = torch.zeros(3, 16)
    candidate = torch.ones(3, 16, dtype=torch.bool)
    k_rows = [5, 5, 2]
    got = select_transfer(confidence, candidate, torch.tensor(k_rows), k_rows, start=4, total_length=30)
    assert torch.equal(got, per_row_reference(confidence, candidate, k_rows, 4, 30))
