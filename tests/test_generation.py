"""Diffusion generation: exactness against the published sampler, batching, infilling, options, config round trips,
streamers and chat decoding. Tiny fixture model, CPU, offline."""

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, TextStreamer

from llada import LLaDAConfig, LLaDAModelLM
from llada.generation_llada import (
    REMASKING_FUNCTIONS,
    LLaDAGenerateOutput,
    LLaDAGenerationConfig,
    _Plan,
    decode_generation,
    register_remasking,
    strip_after_eos,
)
from llada.streaming import LLaDADiffusionStreamer, LLaDATerminalStreamer

FIXTURE = Path(__file__).parent / "fixtures" / "official-llada-tiny"
REFERENCE = torch.load(FIXTURE / "reference.pt", weights_only=True)
MASK, EOS = 317, 316
PROMPT = torch.tensor([[145, 151, 203, 307, 234, 82, 12, 81, 97, 206, 194, 55]])


@pytest.fixture(scope="module")
def model():
    return LLaDAModelLM.from_pretrained(FIXTURE)


def tiny_tokenizer():
    """A word-level tokenizer over the fixture's 320 ids (`w0`..`w309` plus LLaDA's special tokens) with a chat
    template shaped like the published Instruct one (the generation prompt appends the assistant header)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(310)}
    names = ["<|start_header_id|>", "<|end_header_id|>", "user", "assistant", "<|startoftext|>", "<|eot_id|>"]
    vocab.update({name: 310 + i for i, name in enumerate(names)})
    vocab.update({"<|endoftext|>": EOS, "<|mdm_mask|>": MASK, "x318": 318, "x319": 319})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        mask_token="<|mdm_mask|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    )
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|> "
        "{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>{% endif %}"
    )
    tokenizer.padding_side = "left"
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(len(REFERENCE["generate"])))
def test_reference_cases_token_for_token(model, case):
    ref = REFERENCE["generate"][case]
    kwargs = dict(ref["kwargs"])
    new = kwargs.pop("gen_length")
    out = model.generate(ref["prompt"], attention_mask=ref["attention_mask"], max_new_tokens=new, **kwargs)
    assert out.shape == ref["output"].shape
    assert torch.equal(out, ref["output"])


def test_reference_cfg_case_without_attention_mask(model):
    # The CFG case was recorded with an all-ones mask; no mask means no padding, the same computation.
    ref = next(c for c in REFERENCE["generate"] if "cfg_scale" in c["kwargs"])
    kwargs = dict(ref["kwargs"])
    out = model.generate(ref["prompt"], max_new_tokens=kwargs.pop("gen_length"), **kwargs)
    assert torch.equal(out, ref["output"])


def test_left_padded_batch_equals_each_prompt_alone(model):
    tokenizer = tiny_tokenizer()
    texts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9", "w100 w200", "w17 w18 w19 w20 w21"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    kwargs = dict(max_new_tokens=16, steps=16, block_length=8)
    out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    width = batch["input_ids"].shape[1]
    for row, text in enumerate(texts):
        alone = model.generate(tokenizer([text], return_tensors="pt")["input_ids"], **kwargs)
        assert torch.equal(out[row, width:], alone[0, -16:]), row


def test_padding_with_all_ones_mask_equals_no_mask(model):
    a = model.generate(PROMPT, max_new_tokens=8, steps=8)
    b = model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=8, steps=8)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------------------
# Outputs, history, steps
# ---------------------------------------------------------------------------------------------------------------------


def test_return_dict_history_and_nfe(model):
    out = model.generate(PROMPT, max_new_tokens=16, steps=8, block_length=8, output_history=True)
    assert isinstance(out, LLaDAGenerateOutput)
    assert out.nfe == 8 and len(out.history) == 8
    assert torch.equal(out.history[-1], out.sequences)
    masks_left = [int((h[:, 12:] == MASK).sum()) for h in out.history]
    assert masks_left == [14, 12, 10, 8, 6, 4, 2, 0]  # 2 tokens per step
    assert torch.equal(out.sequences, model.generate(PROMPT, max_new_tokens=16, steps=8, block_length=8))


def test_steps_beyond_masks_are_skipped_without_changing_output(model):
    # 32 steps for 16 tokens: the published schedule unmasks nothing at half the steps; those passes are skipped.
    out = model.generate(PROMPT, max_new_tokens=16, steps=32, block_length=8, return_dict_in_generate=True)
    assert out.nfe == 16
    assert torch.equal(out.sequences, model.generate(PROMPT, max_new_tokens=16, steps=16, block_length=8))


def test_defaults_one_block_one_token_per_step(model):
    out = model.generate(PROMPT, max_new_tokens=8, return_dict_in_generate=True)
    assert out.sequences.shape == (1, 20) and out.nfe == 8
    assert not bool((out.sequences == MASK).any())


# ---------------------------------------------------------------------------------------------------------------------
# Infilling
# ---------------------------------------------------------------------------------------------------------------------


def test_infilling_fills_masks_and_keeps_prompt(model):
    ids = PROMPT.clone()
    holes = torch.tensor([2, 3, 7, 10])
    ids[0, holes] = MASK
    out = model.generate(ids, max_new_tokens=0, return_dict_in_generate=True)
    assert out.sequences.shape == ids.shape
    assert out.nfe == 4  # steps default: one token per step
    assert not bool((out.sequences == MASK).any())
    keep = ids != MASK
    assert torch.equal(out.sequences[keep], ids[keep])


def test_infilling_with_generation_fills_input_masks_in_first_block(model):
    ids = PROMPT.clone()
    ids[0, 5] = MASK
    out = model.generate(ids, max_new_tokens=16, steps=16, block_length=8, output_history=True)
    first_block_done = out.history[7]  # 8 steps per block
    assert not bool((first_block_done[:, :20] == MASK).any())
    assert bool((first_block_done[:, 20:] == MASK).all())
    keep = ids != MASK
    assert torch.equal(out.sequences[:, :12][keep], ids[keep])


def test_infilling_batch_with_padding(model):
    ids = torch.tensor([[EOS, EOS, 5, MASK, 7, 8], [1, 2, MASK, MASK, 5, MASK]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=0, steps=3)
    assert not bool((out == MASK).any())
    assert torch.equal(out[ids != MASK], ids[ids != MASK])


# ---------------------------------------------------------------------------------------------------------------------
# Remasking strategies, temperature, EOS options
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("remasking", ["low_confidence", "random", "margin", "entropy"])
def test_every_remasking_strategy_fills_the_canvas(model, remasking):
    gen = torch.Generator().manual_seed(0)
    out = model.generate(PROMPT, max_new_tokens=16, steps=8, block_length=8, remasking=remasking, generator=gen)
    assert not bool((out == MASK).any()) and torch.equal(out[:, :12], PROMPT)


def test_remasking_confidences():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
    x0 = torch.tensor([[0, 1]])
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(REMASKING_FUNCTIONS["low_confidence"](logits, x0), p[0, [0, 1], [0, 1]][None])
    torch.testing.assert_close(
        REMASKING_FUNCTIONS["margin"](logits, x0), torch.tensor([[p[0, 0, 0] - p[0, 0, 1], 0.0]])
    )
    entropy = -(p * p.log()).sum(-1)
    torch.testing.assert_close(REMASKING_FUNCTIONS["entropy"](logits, x0), -entropy)
    r = REMASKING_FUNCTIONS["random"](logits, x0, generator=torch.Generator().manual_seed(1))
    assert r.shape == (1, 2) and bool(((r >= 0) & (r < 1)).all())


def test_custom_remasking_is_pluggable(model):
    order = []

    @register_remasking("left_to_right_test")
    def left_to_right(logits, x0, generator=None):
        order.append(logits.shape)
        return -torch.arange(x0.shape[1], dtype=torch.float)[None].expand(x0.shape)

    try:
        out = model.generate(PROMPT, max_new_tokens=8, steps=8, remasking="left_to_right_test", output_history=True)
        for step, canvas in enumerate(out.history):  # unmasks strictly left to right
            assert bool((canvas[0, 12 : 13 + step] != MASK).all()) and bool((canvas[0, 13 + step :] == MASK).all())
        assert order[0] == (1, 8, 320)  # the head ran on the block's positions only
    finally:
        del REMASKING_FUNCTIONS["left_to_right_test"]


def test_temperature_sampling_is_seeded_and_keeps_prompt(model):
    def run(seed):
        return model.generate(
            PROMPT, max_new_tokens=16, steps=16, temperature=1.0, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :12], PROMPT) and not bool((a == MASK).any())


def test_logits_eos_inf_never_proposes_eos(model):
    with torch.no_grad():
        w = model.model.transformer.ff_out.weight
        saved = w[EOS].clone()
        w[EOS] = w[145] * 1.05  # EOS wins wherever token 145 would
    try:
        plain = model.generate(PROMPT, max_new_tokens=16, steps=16)
        assert bool((plain[:, 12:] == EOS).any())
        banned = model.generate(PROMPT, max_new_tokens=16, steps=16, logits_eos_inf=True)
        assert not bool((banned[:, 12:] == EOS).any())
    finally:
        with torch.no_grad():
            w[EOS] = saved


def test_confidence_eos_eot_inf_unmasks_stop_tokens_last():
    # EoT = 5, EOS = 4. Position 0 proposes EOS with the highest probability, position 1 EoT, position 2 token 0.
    plan = _Plan(
        prompt_length=0, total_length=3, num_blocks=1, block_length=3, steps_per_block=3, first_window_start=0,
        first_window_end=3, temperature=0.0, cfg_scale=0.0, remasking=REMASKING_FUNCTIONS["low_confidence"],
        mask_id=6, eos_ids=[4], stop_ids=[4, 5], logits_eos_inf=False, confidence_eos_eot_inf=True, kv_cache=None,
        threshold=None, factor=None, early_exit=False,
    )  # fmt: skip
    logits = torch.full((1, 3, 7), -5.0)
    logits[0, 0, 4], logits[0, 1, 5], logits[0, 2, 0] = 9.0, 8.0, 1.0
    candidate = torch.ones(1, 3, dtype=torch.bool)
    x0, confidence = plan.propose(logits.clone(), candidate)
    assert x0.tolist() == [[4, 5, 0]]
    assert confidence[0, 2] > confidence[0, 0] and confidence[0, 2] > confidence[0, 1]
    assert bool(torch.isfinite(confidence).all())  # still candidates: ranked last, never dropped
    # The confidence of the other tokens is measured with EOS and EoT excluded (the published temperature-0 rule).
    kept = logits[0, 2].clone()
    kept[[4, 5]] = float("-inf")
    torch.testing.assert_close(confidence[0, 2], torch.softmax(kept, -1)[0])


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=16, block_length=6), r"block_length \(6\) must divide max_new_tokens \(16\)"),
        (dict(max_new_tokens=16, block_length=4, steps=6), r"steps \(6\) must be a multiple of the number of blocks"),
        (dict(max_new_tokens=16, steps=0), r"steps \(0\) must be >= 1"),
        (dict(max_new_tokens=16, temperature=-0.5), r"temperature \(-0.5\) must be >= 0"),
        (dict(max_new_tokens=16, remasking="confident"), r"remasking='confident' is not a registered strategy"),
        (dict(max_new_tokens=16, cfg_scale=-1.0), r"cfg_scale \(-1.0\) must be >= 0"),
        (dict(max_new_tokens=250), r"exceeds max_sequence_length \(256\)"),
        (dict(max_new_tokens=-1), r"max_new_tokens \(-1\) must be >= 0"),
        (dict(max_new_tokens=0), r"max_new_tokens is 0 and the input holds no mask token"),
        (dict(max_new_tokens=8, stepz=8), r"unknown arguments: stepz"),
        (dict(max_new_tokens=8, num_beams=4), r"num_beams=4 is not supported"),
        (dict(max_new_tokens=8, do_sample=True), r"do_sample=True"),
    ],
)
def test_bad_arguments_raise_clear_errors(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, **kwargs)


def test_right_padding_is_rejected(model):
    mask = torch.ones_like(PROMPT)
    mask[0, -2:] = 0
    with pytest.raises(ValueError, match="right padding.*padding_side = 'left'"):
        model.generate(PROMPT, attention_mask=mask, max_new_tokens=8)


def test_padding_with_the_mask_token_is_rejected(model):
    ids = PROMPT.clone()
    ids[0, :2] = MASK
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with pytest.raises(ValueError, match=r"padded positions hold the mask token \(317\) \(pad_token_id=316\)"):
        model.generate(ids, attention_mask=mask, max_new_tokens=8)
    padded = torch.tensor([[1] * 12, [0] + [1] * 11])
    with pytest.raises(ValueError, match=r"mask token \(317\) \(pad_token_id=317\).*tokenizer.pad_token"):
        model.generate(PROMPT.expand(2, -1), attention_mask=padded, max_new_tokens=8, pad_token_id=MASK)


def test_shape_errors(model):
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, prompt_length\)"):
        model.generate(PROMPT[0], max_new_tokens=8)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.generate(PROMPT, attention_mask=torch.ones(1, 5), max_new_tokens=8)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 320\)"):
        model.generate(PROMPT + 300, max_new_tokens=8)


# ---------------------------------------------------------------------------------------------------------------------
# Generation config: defaults, save / load, trust_remote_code
# ---------------------------------------------------------------------------------------------------------------------


def test_model_from_config_gets_llada_defaults():
    config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=4, n_layers=1, mlp_hidden_size=64, vocab_size=100,
                         embedding_size=100, mask_token_id=99, eos_token_id=98, pad_token_id=97)  # fmt: skip
    gc = LLaDAModelLM(config).generation_config
    assert isinstance(gc, LLaDAGenerationConfig)
    assert (gc.mask_token_id, gc.eos_token_id, gc.pad_token_id, gc.eot_token_id) == (99, 98, 97, None)
    assert (gc.temperature, gc.remasking, gc.kv_cache, gc.max_new_tokens) == (0.0, "low_confidence", None, 128)
    assert LLaDAGenerationConfig.from_model_config(LLaDAConfig(n_layers=1)).eot_token_id == 126348  # 8B vocab


def test_plain_generation_config_is_converted(model):
    model.generation_config = GenerationConfig(max_new_tokens=8, temperature=0.5)
    try:
        gc = model.generation_config
        assert isinstance(gc, LLaDAGenerationConfig) and gc.max_new_tokens == 8 and gc.temperature == 0.5
        assert gc.mask_token_id == MASK
        out = model.generate(PROMPT, generation_config=GenerationConfig(max_new_tokens=4), steps=4)
        assert out.shape == (1, 16)
    finally:
        model.generation_config = LLaDAGenerationConfig.from_model_config(model.config)


def test_generation_config_round_trip(tmp_path, model):
    model.generation_config.update(temperature=0.7, steps=64, block_length=16, kv_cache="dual", threshold=0.9)
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.generation_config = LLaDAGenerationConfig.from_model_config(model.config)
    saved = (tmp_path / "generation_config.json").read_text()
    assert '"temperature": 0.7' in saved and '"kv_cache": "dual"' in saved
    gc = LLaDAModelLM.from_pretrained(tmp_path).generation_config
    assert isinstance(gc, LLaDAGenerationConfig)
    assert (gc.temperature, gc.steps, gc.block_length, gc.kv_cache, gc.threshold) == (0.7, 64, 16, "dual", 0.9)
    assert gc.mask_token_id == MASK
    config = LLaDAGenerationConfig(temperature=0.3, max_new_tokens=0, remasking="margin")
    config.save_pretrained(tmp_path / "gc")  # infill default and a non-default temperature are valid
    assert LLaDAGenerationConfig.from_pretrained(tmp_path / "gc").remasking == "margin"


def test_published_folder_without_generation_config_gets_model_defaults(model):
    assert not (FIXTURE / "generation_config.json").exists()
    gc = model.generation_config
    assert isinstance(gc, LLaDAGenerationConfig) and gc.mask_token_id == MASK and gc.eos_token_id == EOS


def test_trust_remote_code_restores_the_generation_config(tmp_path, model):
    model.generation_config.update(temperature=0.7, steps=4, block_length=4)
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.generation_config = LLaDAGenerationConfig.from_model_config(model.config)
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        gc = model.generation_config
        assert "llada" not in sys.modules, "the package must not be needed"
        assert type(gc).__name__ == "LLaDAGenerationConfig" and type(gc).__module__.startswith("transformers_modules")
        print(gc.temperature, gc.steps, gc.block_length)
        print(model.generate(torch.tensor({PROMPT.tolist()}), max_new_tokens=8, temperature=0.0).tolist())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "0.7 4 4"
    expected = model.generate(PROMPT, max_new_tokens=8, steps=4, block_length=4)
    assert lines[1] == str(expected.tolist())


# ---------------------------------------------------------------------------------------------------------------------
# Streamers and chat
# ---------------------------------------------------------------------------------------------------------------------


class RecordingStreamer(LLaDADiffusionStreamer):
    def __init__(self):
        self.puts, self.canvases, self.ended = [], [], False

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ended = True

    def on_step(self, canvas, step, prompt_length):
        self.canvases.append((step, canvas.clone(), prompt_length))


def test_streamer_protocol(model):
    streamer = RecordingStreamer()
    out = model.generate(PROMPT, max_new_tokens=16, steps=8, block_length=8, streamer=streamer,
                         return_dict_in_generate=True)  # fmt: skip
    assert torch.equal(streamer.puts[0], PROMPT)
    assert torch.equal(torch.cat(streamer.puts[1:], dim=1), out.sequences[:, 12:])
    assert [p.shape[1] for p in streamer.puts[1:]] == [8, 8]
    assert [s for s, _, _ in streamer.canvases] == list(range(out.nfe)) and streamer.ended
    assert torch.equal(streamer.canvases[-1][1], out.sequences) and streamer.canvases[0][2] == 12


def test_text_streamer_prints_the_generated_text(model, capsys):
    tokenizer = tiny_tokenizer()
    streamer = TextStreamer(tokenizer, skip_prompt=True)
    out = model.generate(PROMPT, max_new_tokens=16, steps=16, block_length=8, streamer=streamer)
    printed = capsys.readouterr().out
    assert printed.strip() == tokenizer.decode(out[0, 12:]).strip()


def test_terminal_streamer_draws_masks_then_text(model):
    tokenizer = tiny_tokenizer()
    stream = io.StringIO()
    streamer = LLaDATerminalStreamer(tokenizer, MASK, stream=stream, mask_symbol="_")
    out = model.generate(PROMPT, max_new_tokens=4, steps=4, streamer=streamer)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("[step 1] ") and lines[0].count("_") == 3
    assert lines[-1] == "[step 4] " + tokenizer.decode(out[0, 12:])
    assert streamer.render([5, MASK, 6]) == "w5_w6"
    assert LLaDATerminalStreamer(tokenizer).mask_token_id == MASK  # found in the tokenizer by default


def test_chat_template_generate_and_decode(model):
    tokenizer = tiny_tokenizer()
    messages = [{"role": "user", "content": "w5 w6 w7"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert inputs["input_ids"][0, -3:].tolist() == [310, 313, 311]  # assistant header appended
    out = model.generate(**inputs, max_new_tokens=16, steps=16, block_length=8)
    prompt_length = inputs["input_ids"].shape[1]
    text = decode_generation(tokenizer, out, prompt_length)
    assert text == [tokenizer.decode(strip_after_eos(out[0, prompt_length:], [EOS, 315]), skip_special_tokens=True)]
    # Everything after the first EOS/EoT is dropped.
    fake = torch.cat((inputs["input_ids"], torch.tensor([[7, 8, 315, 316, 9, 316]])), dim=1)
    assert decode_generation(tokenizer, fake, prompt_length) == ["w7 w8"]
    assert strip_after_eos([1, 2, 316, 3], [316]) == [1, 2] and strip_after_eos([1, 2], [316]) == [1, 2]


def test_terminal_streamer_redraws_in_place_on_a_terminal(model):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    streamer = LLaDATerminalStreamer(tiny_tokenizer(), MASK, stream=stream, mask_symbol="_")
    model.generate(PROMPT, max_new_tokens=4, steps=4, streamer=streamer)
    text = stream.getvalue()
    assert text.count("\r\x1b[J") == 3 and text.endswith("\n") and streamer.steps == 4
    assert text.rsplit("\r\x1b[J", 1)[1].strip() == streamer.last_text


@pytest.mark.parametrize("kwargs", [{"repetition_penalty": 5.0}, {"min_new_tokens": 4}, {"top_k": 5}, {"top_p": 0.9}])
def test_autoregressive_options_are_rejected_not_ignored(model, kwargs):
    with pytest.raises(ValueError, match=f"generate\\(\\) got {next(iter(kwargs))}: autoregressive decoding"):
        model.generate(PROMPT, max_new_tokens=16, steps=16, block_length=8, **kwargs)


def test_max_length_counts_the_prompt(model):
    by_length = model.generate(PROMPT, max_length=PROMPT.shape[1] + 16, steps=16, block_length=8)
    by_new = model.generate(PROMPT, max_new_tokens=16, steps=16, block_length=8)
    assert torch.equal(by_length, by_new)
    with pytest.raises(ValueError, match=r"max_length \(5\) is shorter than the prompt \(12 tokens\)"):
        model.generate(PROMPT, max_length=5)
    with pytest.raises(ValueError, match="max_new_tokens or max_length, not both"):
        model.generate(PROMPT, max_length=30, max_new_tokens=16)
