"""Fast generation: prefix / dual KV caches, parallel decoding (threshold, factor), early exit, nfe. CPU, offline.

The fixture has random weights: its predictive distributions are nearly flat (top probability about 0.011 over 320
tokens), so the small differences that caching introduces (keys/values outside the block are those of the block's
first step) flip many argmaxes. Measured on the fixture, 20 random prompts (lengths 4..20), 32 new tokens, block 8,
32 steps, temperature 0, torch 2.13 CPU: generated tokens equal to the exact path's: prefix 0.497, dual 0.370
(whole sequences equal: 0 of 20; first blocks equal: prefix 7/20, dual 2/20). Chance agreement would be about 0.003.
The floors below leave a margin for other BLAS/torch builds. The cache plumbing itself is checked exactly: where the
canvas has not changed since the cache was filled, cached logits equal full-sequence logits.
"""

from pathlib import Path

import pytest
import torch

from llada import LLaDAModelLM
from llada.generation_llada import select_transfer

FIXTURE = Path(__file__).parent / "fixtures" / "official-llada-tiny"
MASK, EOS = 317, 316
PROMPT = torch.tensor([[145, 151, 203, 307, 234, 82, 12, 81, 97, 206, 194, 55]])
PAD_IDS = torch.tensor([[EOS, EOS, EOS, 32, 209, 197, 208, 247, 187, 66, 123, 9], PROMPT[0].tolist()])
PAD_MASK = torch.tensor([[0, 0, 0] + [1] * 9, [1] * 12])
AGREEMENT_FLOOR = {"prefix": 0.45, "dual": 0.33}


@pytest.fixture(scope="module")
def model():
    return LLaDAModelLM.from_pretrained(FIXTURE)


def random_prompts(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [int(v) for v in torch.randint(4, 21, (n,), generator=g)]
    return [torch.randint(0, 316, (1, length), generator=g) for length in lengths]


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_outputs_agree_with_exact_path_at_documented_rate(model, mode):
    kwargs = dict(max_new_tokens=32, steps=32, block_length=8)
    same = total = 0
    for prompt in random_prompts():
        exact = model.generate(prompt, **kwargs, return_dict_in_generate=True)
        cached = model.generate(prompt, kv_cache=mode, **kwargs, return_dict_in_generate=True)
        assert cached.nfe == exact.nfe == 32
        assert torch.equal(cached.sequences[:, : prompt.shape[1]], prompt)
        assert not bool((cached.sequences == MASK).any())
        same += int((cached.sequences == exact.sequences)[:, prompt.shape[1] :].sum())
        total += 32
    assert same / total >= AGREEMENT_FLOOR[mode], same / total


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_cached_logits_equal_full_logits_where_canvas_is_unchanged(model, mode, cfg):
    x = torch.cat((PAD_IDS, torch.full((2, 16), MASK)), dim=1)
    mask = torch.cat((PAD_MASK, torch.ones(2, 16, dtype=torch.long)), dim=1)
    if cfg:
        x, mask = torch.cat((x, x.masked_fill(x != MASK, MASK))), torch.cat((mask, mask))
    x[:, 12:14] = torch.tensor([5, 6])  # an unmasked part of the block
    with torch.no_grad():
        full, cache = model._block_logits(x, mask, 12, 20, mode, None)
        windowed, same_cache = model._block_logits(x, mask, 12, 20, mode, cache)
    assert same_cache is cache and windowed.shape == full.shape == (x.shape[0], 8, 320)
    torch.testing.assert_close(windowed, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_one_step_per_block_is_exact_with_a_cache(model, mode):
    # Each block's only step is the full pass that fills the cache: nothing is approximated.
    kwargs = dict(attention_mask=PAD_MASK, max_new_tokens=32, steps=4, block_length=8)
    assert torch.equal(model.generate(PAD_IDS, kv_cache=mode, **kwargs), model.generate(PAD_IDS, **kwargs))


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_batch_equals_each_prompt_alone(model, mode):
    kwargs = dict(max_new_tokens=16, steps=16, block_length=8, kv_cache=mode)
    out = model.generate(PAD_IDS, attention_mask=PAD_MASK, **kwargs)
    alone = model.generate(PAD_IDS[:1, 3:], **kwargs)
    assert torch.equal(out[0, 12:], alone[0, 9:])
    assert torch.equal(out[1:], model.generate(PAD_IDS[1:], **kwargs))


@pytest.mark.parametrize("mode", [None, "prefix", "dual"])
@pytest.mark.parametrize("remasking", ["low_confidence", "random", "margin", "entropy"])
def test_caches_work_with_padding_cfg_and_every_strategy(model, mode, remasking):
    gen = torch.Generator().manual_seed(0)
    out = model.generate(PAD_IDS, attention_mask=PAD_MASK, max_new_tokens=16, steps=8, block_length=8,
                         cfg_scale=1.0, kv_cache=mode, remasking=remasking, generator=gen)  # fmt: skip
    assert torch.equal(out[:, :12], PAD_IDS) and not bool((out == MASK).any())


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_caches_with_infilling(model, mode):
    ids = PROMPT.clone()
    ids[0, [3, 8]] = MASK
    out = model.generate(ids, max_new_tokens=8, steps=8, kv_cache=mode)
    assert not bool((out == MASK).any()) and torch.equal(out[:, :12][ids != MASK], ids[ids != MASK])
    out = model.generate(ids, max_new_tokens=0, kv_cache=mode)
    assert not bool((out == MASK).any()) and out.shape == ids.shape


# ---------------------------------------------------------------------------------------------------------------------
# Parallel decoding
# ---------------------------------------------------------------------------------------------------------------------


def test_select_transfer_rules():
    inf = float("-inf")
    confidence = torch.tensor([[0.95, 0.2, 0.91, inf, 0.5], [0.3, 0.1, inf, inf, inf]])
    candidate = confidence > inf
    k = torch.tensor([1, 2])
    plain = select_transfer(confidence, candidate, k, [1, 2])
    assert plain.tolist() == [[True, False, False, False, False], [True, True, False, False, False]]
    high = select_transfer(confidence, candidate, k, [1, 2], threshold=0.9)  # all >= 0.9, at least k
    assert high.tolist() == [[True, False, True, False, False], [True, True, False, False, False]]
    zero = torch.tensor([0, 0])
    assert select_transfer(confidence, candidate, zero, [0, 0], threshold=0.99).sum(1).tolist() == [1, 1]
    # factor rule: sorted c = 0.95, 0.91, 0.5, 0.2; (n + 1)(1 - c_n) = 0.1, 0.27, 2.0, 4.0 -> n = 2 for factor 1.
    factor = select_transfer(confidence, candidate, torch.tensor([1, 1]), [1, 1], factor=1.0)
    assert factor.tolist() == [[True, False, True, False, False], [True, False, False, False, False]]
    # never more than the candidates
    assert select_transfer(confidence, candidate, torch.tensor([5, 5]), [5, 5]).sum(1).tolist() == [4, 2]
    # the exact rule places the block inside a full-length row (published tie-breaking); same selection here
    placed = select_transfer(confidence, candidate, k, [1, 2], start=3, total_length=10)
    assert torch.equal(placed, plain)


@pytest.mark.parametrize("mode", [None, "prefix", "dual"])
@pytest.mark.parametrize("rule", [dict(threshold=1.0), dict(factor=1e-3)])
def test_parallel_settings_that_reduce_to_the_exact_sampler(model, mode, rule):
    for steps in (16, 8):  # one and two tokens per step
        kwargs = dict(attention_mask=PAD_MASK, max_new_tokens=16, steps=steps, block_length=8, kv_cache=mode)
        plain = model.generate(PAD_IDS, **kwargs, return_dict_in_generate=True)
        parallel = model.generate(PAD_IDS, **kwargs, **rule, return_dict_in_generate=True)
        assert torch.equal(parallel.sequences, plain.sequences) and parallel.nfe == plain.nfe


@pytest.mark.parametrize("mode", [None, "prefix", "dual"])
@pytest.mark.parametrize("rule", [dict(threshold=0.01), dict(factor=4.0)])
def test_parallel_decoding_cuts_forward_passes(model, mode, rule):
    # The fixture's top probabilities are about 0.0105-0.011, so these settings unmask several tokens per step.
    kwargs = dict(max_new_tokens=32, steps=32, block_length=8, kv_cache=mode, return_dict_in_generate=True)
    exact = model.generate(PROMPT, **kwargs)
    fast = model.generate(PROMPT, **kwargs, **rule)
    assert exact.nfe == 32 and 4 <= fast.nfe < 20
    assert not bool((fast.sequences == MASK).any()) and torch.equal(fast.sequences[:, :12], PROMPT)


# ---------------------------------------------------------------------------------------------------------------------
# Early exit
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def eos_model(model):
    """The fixture with the EOS head row set to 1.05 x token 145's: EOS is written where 145 would be."""
    w = model.model.transformer.ff_out.weight
    saved = w[EOS].clone()
    with torch.no_grad():
        w[EOS] = w[145] * 1.05
    yield model
    with torch.no_grad():
        w[EOS] = saved


@pytest.mark.parametrize("mode", [None, "dual"])
def test_early_exit_stops_after_eos_and_fills_with_eos(eos_model, mode):
    kwargs = dict(max_new_tokens=32, steps=32, block_length=8, kv_cache=mode, return_dict_in_generate=True)
    full = eos_model.generate(PROMPT, **kwargs)
    early = eos_model.generate(PROMPT, early_exit=True, **kwargs)
    first = (full.sequences[0, 12:] == EOS).nonzero()[0].item()
    block_end = 12 + (first // 8 + 1) * 8
    assert early.nfe == block_end - 12 < full.nfe
    assert torch.equal(early.sequences[:, :block_end], full.sequences[:, :block_end])
    assert bool((early.sequences[:, block_end:] == EOS).all())


def test_early_exit_waits_for_every_row(eos_model):
    # Row 0 never writes EOS; row 1 (the prompt above) does: no early exit, same output as without it.
    kwargs = dict(attention_mask=PAD_MASK, max_new_tokens=32, steps=32, block_length=8, return_dict_in_generate=True)
    full = eos_model.generate(PAD_IDS, **kwargs)
    assert not bool((full.sequences[0, 12:] == EOS).any()) and bool((full.sequences[1, 12:] == EOS).any())
    early = eos_model.generate(PAD_IDS, early_exit=True, **kwargs)
    assert torch.equal(early.sequences, full.sequences) and early.nfe == full.nfe


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kv_cache="full"), r"kv_cache='full' is not a cache mode; use None, 'prefix' or 'dual'"),
        (dict(threshold=0.0), r"threshold \(0.0\) must be in \(0, 1\]"),
        (dict(threshold=1.5), r"threshold \(1.5\) must be in \(0, 1\]"),
        (dict(factor=0.0), r"factor \(0.0\) must be > 0"),
        (dict(factor=-2.0), r"factor \(-2.0\) must be > 0"),
        (dict(threshold=0.9, factor=1.0), r"set one"),
    ],
)
def test_bad_fast_options(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, max_new_tokens=8, **kwargs)
