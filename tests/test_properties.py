"""Property-based tests over the options of `generate` and `log_likelihood` (issue 11).

For any combination of options (valid or not): a result, or a `ValueError`/`TypeError` that names the offending
option; a generation never holds the mask id nor an id outside [0, vocab_size), never changes a prompt token, and
fills every mask; a log-likelihood is a finite number <= 0. Bounded example counts (derandomized, so CI is
reproducible) on a tiny random model: a few seconds.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llada import LLaDAModelLM
from llada.generation_llada import REMASKING_FUNCTIONS

from .conftest import tiny_config

MASK, EOS, VOCAB = 99, 98, 100
GENERATE_EXAMPLES = 150
LIKELIHOOD_EXAMPLES = 100

torch.manual_seed(0)
MODEL = LLaDAModelLM(tiny_config(n_layers=1)).eval()
MODEL.generation_config.max_new_tokens = 8  # the default when a call does not set it

NAN, INF = float("nan"), float("inf")
token = st.one_of(st.integers(0, VOCAB - 1), st.just(MASK), st.just(EOS))
bad_token = st.sampled_from([-1, VOCAB + 10, 10**6])


def mostly(valid, bad):
    """`valid` nine times in ten, `bad` (an invalid value) otherwise."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 0 else valid)


GENERATE_OPTIONS = {
    "max_new_tokens": mostly(st.sampled_from([0, 4, 8, 12]), st.sampled_from([-2, None, 3.0, "8", True, 100])),
    "steps": mostly(st.sampled_from([None, 1, 2, 4, 8, 12, 24, 10**6]), st.sampled_from([0, -1, 2.5, 7])),
    "block_length": mostly(st.sampled_from([None, 2, 4]), st.sampled_from([0, -1, 5])),
    "temperature": mostly(st.sampled_from([0.0, 0.7, 1.0]), st.sampled_from([NAN, INF, -1.0, "0.5"])),
    "remasking": mostly(st.sampled_from(sorted(REMASKING_FUNCTIONS)), st.just("bogus")),
    "cfg_scale": mostly(st.sampled_from([0.0, 0.0, 1.5]), st.sampled_from([NAN, INF, -1.0])),
    "logits_eos_inf": st.booleans(),
    "confidence_eos_eot_inf": st.booleans(),
    "kv_cache": mostly(st.sampled_from([None, "prefix", "dual"]), st.just("bogus")),
    "threshold": mostly(st.sampled_from([None, None, 0.5, 1.0]), st.sampled_from([0.0, NAN, 2.0])),
    "factor": mostly(st.sampled_from([None, None, 1.0]), st.sampled_from([NAN, -1.0])),
    "early_exit": st.booleans(),
}


@st.composite
def generate_calls(draw):
    batch = draw(st.integers(1, 2))
    length = draw(st.integers(1, 6))
    rows = [draw(st.lists(token, min_size=length, max_size=length)) for _ in range(batch)]
    if draw(st.integers(0, 19)) == 0:  # now and then an id outside the vocabulary
        rows[0][0] = draw(bad_token)
    options = {name: draw(strategy) for name, strategy in GENERATE_OPTIONS.items() if draw(st.booleans())}
    return torch.tensor(rows), options, draw(st.integers(0, 2**31))


def _names_the_problem(error: Exception, options: dict) -> bool:
    text = str(error)
    return bool(text) and any(name in text for name in [*options, "input_ids", "mask", "max_new_tokens", "steps"])


@settings(max_examples=GENERATE_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(generate_calls())
def test_generate_returns_a_clean_canvas_or_names_the_bad_option(call):
    prompt, options, seed = call
    try:
        out = MODEL.generate(prompt.clone(), generator=torch.Generator().manual_seed(seed), **options)
    except (ValueError, TypeError) as error:
        event(f"generate: {type(error).__name__}")
        assert _names_the_problem(error, options), (options, error)
        return
    event("generate: a canvas")
    batch, length = prompt.shape
    new = options["max_new_tokens"] if "max_new_tokens" in options else MODEL.generation_config.max_new_tokens
    new = new or 0
    assert out.shape == (batch, length + new)
    assert not (out == MASK).any()
    kept = prompt != MASK
    assert torch.equal(out[:, :length][kept], prompt[kept])  # prompt tokens never change
    filled = torch.cat([~kept, torch.ones(batch, new, dtype=torch.bool)], dim=1)
    generated = out[filled]
    assert generated.numel() > 0 and int(generated.min()) >= 0 and int(generated.max()) < VOCAB


answer_ids = mostly(
    st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=5),
    st.one_of(st.just([]), st.lists(token, min_size=1, max_size=5), st.lists(st.sampled_from([7.9, 8.0]), min_size=1)),
)
LIKELIHOOD_OPTIONS = {
    "mc_num": mostly(st.sampled_from([4, 8, 16]), st.sampled_from([0, True, 3.0, 3])),
    "batch_size": mostly(st.sampled_from([1, 2, 4]), st.just(0)),
    "cfg_scale": mostly(st.sampled_from([0.0, 0.0, 1.0]), st.sampled_from([NAN, INF, -1.0, None])),
    "estimator": mostly(st.sampled_from(["published", "stratified"]), st.just("bogus")),
    "max_batch_tokens": mostly(st.sampled_from([8192, 16, 1]), st.just(0)),
}


@settings(max_examples=LIKELIHOOD_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    st.lists(token, min_size=0, max_size=5),
    answer_ids,
    st.fixed_dictionaries({}, optional=LIKELIHOOD_OPTIONS),
    st.integers(0, 2**31),
)
def test_log_likelihood_is_finite_or_names_the_bad_input(prompt, answer, options, seed):
    try:
        value = MODEL.log_likelihood(prompt, answer, generator=torch.Generator().manual_seed(seed), **options)
    except (ValueError, TypeError) as error:
        event(f"log_likelihood: {type(error).__name__}")
        names = [*options, "answer", "prompt", "pair", "ids"]
        assert str(error) and any(name in str(error) for name in names), (options, error)
        return
    event("log_likelihood: a number")
    assert isinstance(value, float) and math.isfinite(value) and value <= 0
    assert MASK not in answer and all(isinstance(a, int) for a in answer) and len(answer) > 0


@pytest.mark.parametrize("strategy", sorted(REMASKING_FUNCTIONS))
def test_every_registered_strategy_gives_finite_confidences_on_minus_inf_logits(strategy):
    logits = torch.randn(2, 5, 12)
    logits[..., [3, 7]] = float("-inf")
    x0 = logits.argmax(-1)
    assert torch.isfinite(REMASKING_FUNCTIONS[strategy](logits, x0, generator=torch.Generator())).all()
