"""Bad input never gives a silent wrong answer: a clear error naming the value, or a correct result (issue 11)."""

import json
import math
import re
import warnings

import pytest
import torch

from llada import LLaDAConfig, LLaDAMissingWeightsWarning, LLaDAModelLM
from llada.generation_llada import REMASKING_FUNCTIONS, LLaDAGenerationConfig

from .conftest import tiny_config

MASK, EOS, VOCAB, ROWS = 99, 98, 100, 104


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LLaDAModelLM(tiny_config(max_sequence_length=128)).eval()


@pytest.fixture(scope="module")
def prompt():
    return torch.tensor([[5, 6, 7, 8]])


# ---------------------------------------------------------------------------------------------------------------------
# generate: silent wrong results (items 1-3, 8)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("remasking", sorted(REMASKING_FUNCTIONS))
@pytest.mark.parametrize(
    "options",
    [
        dict(logits_eos_inf=True),
        dict(confidence_eos_eot_inf=True),
        dict(logits_eos_inf=True, threshold=0.9),
        dict(confidence_eos_eot_inf=True, factor=1.0),
    ],
)
def test_every_strategy_fills_the_canvas_whatever_the_eos_options(model, prompt, remasking, options):
    out = model.generate(prompt, max_new_tokens=16, remasking=remasking, **options)
    assert not (out == MASK).any()
    assert torch.equal(out[:, :4], prompt)


def test_entropy_of_a_minus_inf_logit_is_finite():
    logits = torch.randn(1, 3, 10)
    logits[..., 4] = float("-inf")
    confidence = REMASKING_FUNCTIONS["entropy"](logits, logits.argmax(-1))
    assert torch.isfinite(confidence).all()
    finite = REMASKING_FUNCTIONS["entropy"](logits[..., [0, 1, 2, 3, 5, 6, 7, 8, 9]], logits.argmax(-1))
    torch.testing.assert_close(confidence, finite)


def test_nan_confidence_of_a_custom_strategy_still_fills_the_canvas(model, prompt):
    def nan_strategy(logits, x0, generator=None):
        return torch.full(x0.shape, float("nan"))

    out = model.generate(prompt, max_new_tokens=8, remasking=nan_strategy)
    assert not (out == MASK).any()


def test_the_sampler_never_proposes_the_mask_or_padding_rows(prompt):
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config(max_sequence_length=128)).eval()
    bias = torch.zeros(ROWS)
    bias[MASK], bias[VOCAB:] = 50.0, 60.0  # the mask id and the padding rows are the most likely tokens everywhere
    forward = model.forward

    def boosted(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits + bias.to(out.logits.dtype)
        return out

    model.forward = boosted
    for kwargs in (dict(), dict(temperature=1.0), dict(threshold=0.5), dict(kv_cache="dual")):
        out = model.generate(prompt, max_new_tokens=8, generator=torch.Generator().manual_seed(0), **kwargs)
        generated = out[:, 4:]
        assert not (generated == MASK).any() and int(generated.max()) < VOCAB, kwargs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=float("nan")), "temperature (nan) must be a finite number"),
        (dict(temperature=float("inf")), "temperature (inf) must be a finite number"),
        (dict(cfg_scale=float("nan")), "cfg_scale (nan) must be a finite number"),
        (dict(cfg_scale=float("inf")), "cfg_scale (inf) must be a finite number"),
        (dict(threshold=float("nan")), "threshold (nan) must be a finite number"),
        (dict(factor=float("inf")), "factor (inf) must be a finite number"),
        (dict(max_new_tokens=3.0), "max_new_tokens (3.0) must be an int"),
        (dict(max_new_tokens="8"), "max_new_tokens ('8') must be an int"),
        (dict(max_new_tokens=True), "max_new_tokens (True) must be an int"),
        (dict(steps=2.5), "steps (2.5) must be an int"),
        (dict(temperature="0.5"), "temperature ('0.5') must be a number"),
        (dict(mask_token_id=1000), "mask_token_id (1000) is outside the vocabulary [0, 104)"),
        (dict(eos_token_id=1000), "eos_token_id (1000) is outside the vocabulary [0, 104)"),
    ],
)
def test_bad_generate_values_name_the_value(model, prompt, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        model.generate(prompt, **{"max_new_tokens": 4, **kwargs})


def test_non_finite_values_are_rejected_by_the_generation_config():
    with pytest.raises(ValueError, match="temperature"):
        LLaDAGenerationConfig(temperature=float("nan")).validate()
    with pytest.raises(ValueError, match="cfg_scale"):
        LLaDAGenerationConfig(cfg_scale=math.inf).validate()


def test_list_and_meta_inputs_get_clear_errors(model):
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor .* got list"):
        model.generate([[5, 6]], max_new_tokens=4)
    with pytest.raises(ValueError, match="meta device"):
        model.generate(torch.tensor([[5, 6]], device="meta"), max_new_tokens=4)


def test_huge_steps_cost_only_the_masks(model, prompt):
    # steps=10**9 used to allocate a (batch, steps) schedule; the work is capped by the number of masks.
    out = model.generate(prompt, max_new_tokens=4, steps=10**9, return_dict_in_generate=True)
    assert out.nfe == 4
    assert torch.equal(out.sequences, model.generate(prompt, max_new_tokens=4, steps=4))
    out = model.generate(
        prompt,
        max_new_tokens=16,
        steps=10**4,
        remasking="entropy",
        logits_eos_inf=True,
        threshold=0.9,
        return_dict_in_generate=True,
    )
    assert out.nfe <= 16 and not (out.sequences == MASK).any()


# ---------------------------------------------------------------------------------------------------------------------
# log_likelihood (items 3, 4, 9)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt_ids, answer_ids, kwargs, error, message",
    [
        ([5, 6], [7, MASK, 8], {}, ValueError, f"answer 0 holds the mask token id {MASK} (at answer position 1)"),
        ([5, 6], [7.9, 8.9], {}, TypeError, "answer_ids must hold integer token ids, got dtype torch.float32"),
        ([5, 6], torch.tensor([7.0, 8.0]), {}, TypeError, "answer_ids must hold integer token ids"),
        ([5.5, 6], [7, 8], {}, TypeError, "prompt_ids must hold integer token ids"),
        ([5, 6], [7, 8], dict(cfg_scale=float("inf")), ValueError, "cfg_scale (inf) must be a finite number"),
        ([5, 6], [7, 8], dict(cfg_scale=float("nan")), ValueError, "cfg_scale (nan) must be a finite number"),
        ([5, 6], [7, 8], dict(cfg_scale=None), TypeError, "cfg_scale (None) must be a number"),
        ([5, 6], [7, 8], dict(mc_num=True, batch_size=1), ValueError, "mc_num (True) must be a positive integer"),
    ],
)
def test_bad_log_likelihood_inputs_name_the_value(model, prompt_ids, answer_ids, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        model.log_likelihood(prompt_ids, answer_ids, **{"mc_num": 4, "batch_size": 4, **kwargs})


def test_a_mask_inside_the_prompt_stays_a_hole(model):
    value = model.log_likelihood(
        [5, MASK, 6], [7, 8], mc_num=4, batch_size=4, generator=torch.Generator().manual_seed(0)
    )
    assert math.isfinite(value)


# ---------------------------------------------------------------------------------------------------------------------
# config.json and generation_config.json (items 5, 6)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        (
            "weight_tying",
            "false",
            TypeError,
            "weight_tying ('false') must be a JSON boolean (true or false), got str; write \"weight_tying\": false",
        ),
        ("d_model", "32", TypeError, "d_model ('32') must be an integer"),
        ("n_layers", "2", TypeError, "n_layers ('2') must be an integer"),
        ("rope_theta", "10000", TypeError, "rope_theta ('10000') must be a finite number"),
        ("rms_norm_eps", "1e-5", TypeError, "rms_norm_eps ('1e-5') must be a finite number"),
        ("max_sequence_length", "64", TypeError, "max_sequence_length ('64') must be an integer"),
        ("n_heads", 0, ValueError, "n_heads (0) must be >= 1"),
        ("max_sequence_length", -1, ValueError, "max_sequence_length (-1) must be >= 1"),
        ("rms_norm_eps", 0.0, ValueError, "rms_norm_eps (0.0) must be > 0"),
    ],
)
def test_config_json_types_and_ranges_name_the_field(tmp_path, field, value, error, message):
    tiny_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data[field] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(error, match=re.escape(message)):
        LLaDAConfig.from_pretrained(tmp_path)


def test_weights_that_do_not_cover_the_model_warn_with_the_missing_keys(tmp_path, model):
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["n_layers"] = 3  # one more block than the weights hold
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.warns(LLaDAMissingWeightsWarning, match=r"does not hold \d+ parameters .*blocks\.2\."):
        LLaDAModelLM.from_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LLaDAMissingWeightsWarning)
        data["n_layers"] = 2
        (tmp_path / "config.json").write_text(json.dumps(data))
        LLaDAModelLM.from_pretrained(tmp_path)  # complete: no warning


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("", ValueError, "generation_config.json is not a valid generation config"),
        ("{not json", ValueError, "generation_config.json is not a valid generation config"),
        ('{"temperature": NaN}', ValueError, "generation_config.json: temperature (nan) must be a finite number"),
        ('{"steps": "8"}', TypeError, "generation_config.json: steps ('8') must be an int"),
    ],
)
def test_invalid_generation_config_json_names_the_file(tmp_path, model, text, error, message):
    model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(error, match=re.escape(message)):
        LLaDAModelLM.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Collators and compute_loss (items 7, 9)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from llada.training import train_tokenizer

    return train_tokenizer(["The cat sat on the mat.", "What is the capital of France? Paris."] * 4, vocab_size=300)


@pytest.mark.parametrize(
    "ids, error, message",
    [
        ([5, 6, 10_000], ValueError, "holds token id 10000 at position 2, outside the tokenizer's vocabulary"),
        ([5, -1], ValueError, "holds token id -1 at position 1"),
        ([5, 6.5], TypeError, "holds 6.5 (float) at position 1; input_ids must be integer token ids"),
        (torch.tensor([5.0, 6.0]), TypeError, "holds 5.0 (float) at position 0"),
    ],
)
def test_pretraining_collator_rejects_bad_ids(tokenizer, ids, error, message):
    from llada.training import LLaDAPretrainingCollator

    with pytest.raises(error, match=re.escape(message)):
        LLaDAPretrainingCollator(tokenizer, max_length=8)([{"input_ids": ids}])


@pytest.mark.parametrize(
    "example, message",
    [
        ({"messages": "hello"}, "'messages' is a str; it must be a list of"),
        ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}, "message 0 is {'content': 'hi'}"),
        ({"messages": ["hi", "yo"]}, "message 0 is 'hi'; each message must be a dict"),
        (
            {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "yo"}]},
            "has content None",
        ),
        ({"messages": []}, "the last message must be the assistant's response (got role None)"),
        ({"prompt": "hi", "response": 5}, "message 1 (assistant) has content 5; the content must be a string"),
        ("just text", "SFT example 0 is a str"),
    ],
)
def test_sft_collator_names_malformed_messages(tokenizer, example, message):
    from llada.training import LLaDASFTCollator

    with pytest.raises(ValueError, match=re.escape(message)):
        LLaDASFTCollator(tokenizer, max_length=64)([example])


def test_sft_collator_rejects_a_bad_pad_multiple_and_an_empty_batch(tokenizer):
    from llada.training import LLaDASFTCollator

    with pytest.raises(ValueError, match=re.escape("pad_to_multiple_of (-4) must be a positive integer")):
        LLaDASFTCollator(tokenizer, max_length=64, pad_to_multiple_of=-4)
    with pytest.raises(ValueError, match="got no examples"):
        LLaDASFTCollator(tokenizer, max_length=64)([])


@pytest.mark.parametrize(
    "batch, error, message",
    [
        (
            dict(input_ids=torch.tensor([[5, 6], [7, 150]])),
            ValueError,
            "token ids [150] that are outside the vocabulary [0, 100)",
        ),
        (dict(input_ids=torch.tensor([[5, MASK]])), ValueError, f"or are the mask token ({MASK})"),
        (dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), ValueError, "input_ids has shape (2, 0)"),
        (
            dict(input_ids=torch.tensor([[5, 6]]), labels=torch.tensor([[5]])),
            ValueError,
            "labels has shape (1, 1) but input_ids has (1, 2)",
        ),
    ],
)
def test_compute_loss_checks_every_batch(tmp_path, model, batch, error, message):
    from llada.training import LLaDATrainer, LLaDATrainingArguments

    args = LLaDATrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no")
    trainer = LLaDATrainer(model=model, args=args)
    trainer.compute_loss(model, dict(input_ids=torch.tensor([[5, 6, 7, 8]])))  # a good first batch
    with pytest.raises(error, match=re.escape(message)):
        trainer.compute_loss(model, batch)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(kv_cache="dual", block_length=4), dict(cfg_scale=1.0), dict(threshold=0.5), dict(steps=64)],
)
def test_nfe_counts_the_real_forward_passes(prompt, options):
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config(max_sequence_length=128)).eval()
    calls = []
    forward = model.forward
    model.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    out = model.generate(prompt, max_new_tokens=8, return_dict_in_generate=True, **options)
    assert out.nfe == len(calls) <= 8
