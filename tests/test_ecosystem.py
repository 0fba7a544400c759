"""How transformers users try the package first: lazy import and Auto registration, pipelines, streamers, resizing,
attention outputs, torch.export, loading errors, left padding."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import tiny_config

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_is_lazy_and_registers_the_auto_classes():
    """`import llada` (and `llada --help`) imports neither torch nor transformers, yet the Auto classes resolve the
    `llada` model type once transformers loads them (the in-process suite covers transformers imported first)."""
    code = """
import sys
import llada
assert "torch" not in sys.modules and "transformers" not in sys.modules, sorted(sys.modules)
from llada.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
assert "torch" not in sys.modules, "llada --help imported torch"
from transformers import AutoConfig, AutoModelForMaskedLM, CONFIG_MAPPING
assert CONFIG_MAPPING["llada"] is llada.LLaDAConfig
config = AutoConfig.for_model("llada", d_model=16, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=32,
                              vocab_size=10, embedding_size=10, max_sequence_length=16, mask_token_id=9,
                              eos_token_id=8, pad_token_id=8)
model = AutoModelForMaskedLM.from_config(config)
assert type(model) is llada.LLaDAModelLM, type(model)
from llada.hub import push_to_hub
assert llada.LLaDAPreTrainedModel.push_to_hub_function is push_to_hub
print("ok")
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_subcommand_help_is_lazy():
    """`llada train [pretrain|sft|vrpo] --help` and `llada eval [ppl] --help` import neither torch nor transformers
    (`llada.training` and `llada.evaluation` import their names on first access), and still print each parser."""
    code = """
import contextlib, io, sys
from llada.cli import main
for argv, expected in ((["train"], "pretrain,sft,vrpo"), (["train", "pretrain"], "--text-field"),
                       (["train", "sft"], "--lora-r"), (["train", "vrpo"], "--mc-budget"),
                       (["eval"], "ppl"), (["eval", "ppl"], "--model")):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv + ["--help"])
        except SystemExit as exit:
            assert exit.code == 0, (argv, exit.code)
    assert expected in out.getvalue(), (argv, out.getvalue())
    heavy = [name for name in ("torch", "transformers", "peft") if name in sys.modules]
    assert not heavy, (argv, heavy)
print("ok")
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("package", ["llada.training", "llada.evaluation"])
def test_lazy_subpackages_export_every_name(package):
    """Every name of the lazy subpackages' `__all__` resolves (to the object its module defines) and is in `dir`."""
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        defining = importlib.import_module(f"{package}.{module._LAZY_EXPORTS[name]}")
        assert getattr(module, name) is getattr(defining, name), name
    assert set(module.__all__) == set(module._LAZY_EXPORTS) and set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = module.nope


def test_moe_names_import_first():
    """`from llada import LLaDAMoEModelLM` as a process's first llada import (the MoE module imports modeling_llada,
    whose registration hook must wait for it), then the Auto classes dispatch both ways."""
    code = """
from llada import LLaDAMoEModelLM
from transformers import AutoModel
from llada import LLaDAModelLM
moe = AutoModel.from_pretrained("tests/fixtures/official-lladamoe-tiny")
dense = AutoModel.from_pretrained("tests/fixtures/official-llada-tiny")
assert type(moe) is LLaDAMoEModelLM and type(dense) is LLaDAModelLM, (type(moe), type(dense))
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def demo():
    from transformers import AutoTokenizer

    from llada import LLaDAModelLM
    from llada.cli import DEMO_MODEL_DIR

    return LLaDAModelLM.from_pretrained(DEMO_MODEL_DIR).eval(), AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def test_demo_loads_as_float32_without_a_dtype(demo):
    """README: the demo loads as float32; config.json's dtype is that single source of truth."""
    from llada.cli import DEMO_MODEL_DIR

    model, _ = demo
    assert model.dtype == torch.float32
    assert json.loads((DEMO_MODEL_DIR / "config.json").read_text())["dtype"] == "float32"


def test_text_generation_pipeline(demo, tmp_path):
    """The pipeline works with its defaults (it adds do_sample=True, temperature=0.7 only where the model's
    generation config leaves do_sample unset) and with max_new_tokens, temperature, return_full_text."""
    from transformers import pipeline

    from llada.generation_llada import LLaDAGenerationConfig, decode_generation

    model, tokenizer = demo
    assert model.generation_config.to_diff_dict()["do_sample"] is False
    model.generation_config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["do_sample"] is False and saved["temperature"] == 0.0
    assert LLaDAGenerationConfig(temperature=0.5).do_sample is True

    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompt = "In the beginning"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    expected = decode_generation(tokenizer, model.generate(ids, max_new_tokens=8, steps=8), ids.shape[1])[0]
    text = pipe(prompt, max_new_tokens=8, steps=8, return_full_text=False)[0]["generated_text"]
    assert text == expected
    full = pipe(prompt, max_new_tokens=8, steps=8)[0]["generated_text"]
    assert full == prompt + expected
    default = pipe(prompt)[0]["generated_text"]  # the model's defaults: greedy, 64 tokens
    greedy = model.generate(ids)
    assert default == prompt + decode_generation(tokenizer, greedy, ids.shape[1])[0]
    torch.manual_seed(0)
    sampled = pipe(prompt, max_new_tokens=8, temperature=0.9)[0]["generated_text"]
    assert sampled.startswith(prompt)


def test_fill_mask_pipeline(demo):
    from transformers import pipeline

    model, tokenizer = demo
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    text = f"In the beginning God created the {tokenizer.mask_token} and the earth."
    answers = fill(text, top_k=3)
    ids = tokenizer(text, return_tensors="pt").input_ids
    position = int((ids[0] == tokenizer.mask_token_id).nonzero())
    probs = model(ids).logits[0, position].float().softmax(-1)
    top = probs.topk(3)
    assert [a["token"] for a in answers] == top.indices.tolist()
    assert [a["score"] for a in answers] == pytest.approx(top.values.tolist(), rel=1e-4)


def test_put_draft_streamers_and_tokens_per_forward(demo, capsys):
    """A streamer with `put_draft` (transformers' TextDiffusionStreamer) gets the current block, masks shown as the
    proposals, after every step; `on_step` still gets the canvas. The output reports tokens_per_forward."""
    from transformers import TextDiffusionStreamer

    model, tokenizer = demo
    ids = tokenizer("In the beginning", return_tensors="pt").input_ids
    prompt_length = ids.shape[1]

    class Recorder(TextDiffusionStreamer):
        def __init__(self):
            super().__init__(tokenizer)
            self.drafts, self.canvases = [], []

        def put_draft(self, value, **kwargs):
            self.drafts.append(value.clone())
            super().put_draft(value, **kwargs)

        def on_step(self, canvas, step, prompt_length):
            self.canvases.append(canvas.clone())

    streamer = Recorder()
    out = model.generate(
        ids, max_new_tokens=8, steps=8, block_length=4, streamer=streamer, return_dict_in_generate=True
    )
    assert len(streamer.drafts) == len(streamer.canvases) == out.nfe == 8
    for step, (draft, canvas) in enumerate(zip(streamer.drafts, streamer.canvases, strict=True)):
        start = prompt_length + 4 * (step // 4)
        assert draft.shape == (1, 4)
        block = canvas[:, start : start + 4]
        known = block != model.config.mask_token_id
        assert torch.equal(draft[known], block[known])  # what is unmasked is in the draft as it is
        assert not bool((draft == model.config.mask_token_id).any())
    assert torch.equal(streamer.drafts[-1], out.sequences[:, -4:])  # the last draft is the final block
    assert "\x1b[33m" in capsys.readouterr().out  # TextDiffusionStreamer printed its drafts
    pad = model.generation_config.pad_token_id
    written = int((out.sequences[0, prompt_length:] != pad).sum())
    assert out.tokens_per_forward.tolist() == [pytest.approx(written / 8)]


@pytest.mark.parametrize(("new", "multiple", "rows"), [(110, None, 110), (90, None, 90), (101, 8, 104)])
def test_resize_token_embeddings_runs_saves_and_reloads(tmp_path, new, multiple, rows):
    from llada import LLaDAModelLM

    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config(mask_token_id=80, eos_token_id=81, pad_token_id=81)).eval()
    model.resize_token_embeddings(new, pad_to_multiple_of=multiple, mean_resizing=False)
    assert (model.config.vocab_size, model.config.embedding_size) == (new, rows)
    assert model.get_input_embeddings().weight.shape[0] == model.get_output_embeddings().weight.shape[0] == rows
    ids = torch.tensor([[1, rows - 1, 80]])
    logits = model(ids).logits
    assert logits.shape == (1, 3, rows)
    with pytest.raises(ValueError, match=f"token id {rows} is outside the vocabulary"):
        model(torch.tensor([[rows]]))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["vocab_size"], saved["embedding_size"]) == (new, rows)
    reloaded = LLaDAModelLM.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded(ids).logits, logits)


def test_default_forward_exports():
    """torch.export of the forward pass as a user calls it (the host-side vocabulary check is skipped in tracing)."""
    from llada import LLaDAModelLM

    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    ids = torch.tensor([[1, 2, 99, 3]])
    exported = torch.export.export(model, (ids,))
    out = exported.module()(ids)
    assert torch.equal(out["logits"] if isinstance(out, dict) else out.logits, model(ids).logits)
    with pytest.raises(ValueError, match="outside the vocabulary"):  # eager calls still check
        model(torch.tensor([[104]]))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_output_attentions(implementation):
    """output_attentions=True returns each block's probabilities on any backend (that call runs eager attention),
    padding keys at zero, the logits those of the backend's own path; config.output_attentions is honoured too."""
    from llada import LLaDAModelLM

    torch.manual_seed(0)
    model = LLaDAModelLM._from_config(tiny_config(), attn_implementation=implementation).eval()
    ids = torch.tensor([[98, 5, 6, 99], [1, 2, 3, 99]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    plain = model(ids, attention_mask=mask)
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert plain.attentions is None
    assert len(out.attentions) == model.config.n_layers
    for weights in out.attentions:
        assert weights.shape == (2, model.config.n_heads, 4, 4)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, model.config.n_heads, 4))
        assert bool((weights[0, :, :, 0] == 0).all())  # the padding key gets no attention
    torch.testing.assert_close(out.logits, plain.logits, atol=1e-5, rtol=1e-5)
    if implementation == "eager":  # transformers refuses config.output_attentions with other backends
        model.config.output_attentions = True
        assert len(model(ids).attentions) == model.config.n_layers
        assert len(model(ids, return_dict=False)) == 2  # logits, attentions


def test_left_padding_without_mask_warns_once(caplog):
    from transformers.utils import logging as hf_logging

    from llada import LLaDAModelLM

    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    padded = torch.tensor([[98, 98, 5], [3, 4, 5]])  # pad_token_id 98
    logger = hf_logging.get_logger("llada.generation_llada")
    logger.warning_once.cache_clear()
    with caplog.at_level("WARNING"):
        model.generate(padded, max_new_tokens=2, steps=2)
        model.generate(padded, max_new_tokens=2, steps=2)
        model.generate(padded, attention_mask=(padded != 98).long(), max_new_tokens=2, steps=2)
        model.generate(torch.tensor([[3, 4, 5], [6, 7, 8]]), max_new_tokens=2, steps=2)
    warnings = [r.getMessage() for r in caplog.records if "start with the pad token (98)" in r.getMessage()]
    assert len(warnings) == 1 and "attention_mask" in warnings[0]


def test_loading_errors_name_the_file(tmp_path, capsys):
    from transformers import AutoTokenizer

    from llada import LLaDAModelLM
    from llada.cli import DEMO_MODEL_DIR, main

    model = LLaDAModelLM(tiny_config())
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    folders = {}
    for case in ("weights", "config", "missing"):
        folders[case] = tmp_path / case
        model.save_pretrained(folders[case])
        tokenizer.save_pretrained(folders[case])
    (folders["weights"] / "model.safetensors").write_bytes(b"not a safetensors file")
    (folders["config"] / "config.json").write_text("{\n,}")
    (folders["missing"] / "config.json").unlink()

    weights = str(folders["weights"] / "model.safetensors")
    with pytest.raises(OSError, match=f"cannot read the weights in {weights}: .*download or save it again"):
        LLaDAModelLM.from_pretrained(folders["weights"])
    with pytest.raises(OSError, match=str(folders["config"] / "config.json")):
        LLaDAModelLM.from_pretrained(folders["config"])
    with pytest.raises(OSError, match=f"{folders['missing']} has no config.json"):
        LLaDAModelLM.from_pretrained(folders["missing"])
    for gone in (tmp_path / "gone", "./gone-llada-folder"):  # not "Repo id must be in the form ..."
        with pytest.raises(OSError, match=f"model path {re.escape(str(gone))} does not exist"):
            LLaDAModelLM.from_pretrained(gone)

    capsys.readouterr()
    for case, expected in (("weights", weights), ("config", str(folders["config"] / "config.json"))):
        assert main(["generate", "--model", str(folders[case]), "In"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("llada: error:") and expected in err and len(err.splitlines()) == 1


def test_training_on_the_cpu_does_not_pin_memory(tmp_path):
    """TrainingArguments pins memory by default; on the CPU torch then warns that it is unused."""
    from llada.training import LLaDATrainingArguments

    args = LLaDATrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    assert args.dataloader_pin_memory is False
