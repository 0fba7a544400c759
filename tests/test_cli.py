"""The `llada` command line, run in-process through `llada.cli.main` on a tiny random model saved to a temporary
folder (and once on the embedded demo model)."""

import io
import json

import pytest
import torch

from llada import LLaDAConfig, LLaDAModelLM
from llada.cli import DEMO_MODEL_DIR, count_parameters, encode_infill, main
from llada.generation_llada import decode_generation

from .conftest import tiny_config
from .test_hub import HubStandIn

TEXT = "In the beginning God created the heaven and the earth. And the earth was without form, and void."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from llada.training.tokenizer import train_tokenizer

    tokenizer = train_tokenizer([TEXT] * 8, vocab_size=300)
    config = tiny_config(
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=96,
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LLaDAModelLM(config)
    model.generation_config.update(max_new_tokens=8, steps=8, block_length=4)
    folder = tmp_path_factory.mktemp("cli-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run(capsys, monkeypatch, *argv, stdin=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def reference(model_dir, prompt_ids, **kwargs):
    from transformers import AutoTokenizer

    model = LLaDAModelLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = torch.tensor([prompt_ids])
    return decode_generation(tokenizer, model.generate(ids, **kwargs), prompt_length=ids.shape[1])[0], tokenizer


def test_help_lists_every_command(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for command in ("generate", "chat", "infill", "info", "push", "train", "eval"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    flags = "--max-new-tokens --steps --block-length --temperature --remasking --cfg-scale --kv-cache --threshold"
    for flag in flags.split() + ["--factor", "--early-exit", "--show-steps", "--model", "--seed"]:
        assert flag in out
    # train and eval come from their own modules, imported only when chosen
    for command, subcommand in (("train", "pretrain"), ("eval", "ppl")):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and subcommand in capsys.readouterr().out


def test_generate_matches_model_generate(capsys, monkeypatch, model_dir):
    code, out, err = run(capsys, monkeypatch, "generate", "--model", model_dir, "--steps", "4", "In the")
    assert code == 0
    from transformers import AutoTokenizer

    prompt_ids = AutoTokenizer.from_pretrained(model_dir)("In the").input_ids
    expected, _ = reference(model_dir, prompt_ids, steps=4)  # max_new_tokens 8, block 4 from generation_config
    assert out == "In the" + expected + "\n"
    # stdin, --no-echo, and every option forwarded
    options = ["--max-new-tokens", "12", "--steps", "6", "--block-length", "4", "--remasking", "margin"]
    code, out, _ = run(capsys, monkeypatch, "generate", "--model", model_dir, "--no-echo", *options, stdin="In the\n")
    expected, _ = reference(model_dir, prompt_ids, max_new_tokens=12, steps=6, block_length=4, remasking="margin")
    assert code == 0 and out == expected + "\n"


def test_show_steps_draws_every_canvas(capsys, monkeypatch, model_dir):
    code, out, err = run(capsys, monkeypatch, "generate", "--model", model_dir, "--show-steps", "In the")
    plain = run(capsys, monkeypatch, "generate", "--model", model_dir, "In the")[1]
    assert code == 0 and out == plain  # the canvases go to stderr, the answer to stdout
    lines = err.strip().split("\n")
    assert [line.split("]")[0] for line in lines] == [f"[step {i}" for i in range(1, 9)]
    assert lines[0].count("░") == 7 and "░" not in lines[-1]


def test_infill_keeps_the_text_and_fills_the_placeholders(capsys, monkeypatch, model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    mask = tokenizer.mask_token_id
    ids = encode_infill(tokenizer, "In the [MASK:3] created<|mdm_mask|>heaven[MASK]", mask)
    assert ids.count(mask) == 5 and ids[-1] == mask
    # The space before a placeholder goes with the masks (BPE words carry their leading space).
    assert tokenizer.decode([i for i in ids if i != mask]) == "In the createdheaven"

    code, out, _ = run(capsys, monkeypatch, "infill", "--model", model_dir, "In the [MASK:3] created the heaven")
    expected_ids = encode_infill(tokenizer, "In the [MASK:3] created the heaven", mask)
    model = LLaDAModelLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    filled = model.generate(torch.tensor([expected_ids]), max_new_tokens=0, steps=3)
    assert code == 0 and out == tokenizer.decode(filled[0], skip_special_tokens=True) + "\n"
    assert out.startswith("In the") and out.endswith(" created the heaven\n")


def test_chat_turns_through_the_template(capsys, monkeypatch, model_dir):
    code, out, _ = run(capsys, monkeypatch, "chat", "--model", model_dir, "--max-new-tokens", "4", "--steps", "4",
                       "--block-length", "4", stdin="Hi\n\nWho?\n")  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 2  # one answer per (non-empty) line
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    expected, _ = reference(model_dir, prompt, max_new_tokens=4, steps=4, block_length=4)
    assert out.splitlines()[0] == expected.strip()


def test_info_counts_parameters_without_loading(capsys, monkeypatch, model_dir):
    code, out, _ = run(capsys, monkeypatch, "info", "--model", model_dir, "--json")
    info = json.loads(out)
    model = LLaDAModelLM.from_pretrained(model_dir)
    assert code == 0 and info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["weights dtype"] == "float32" and info["chat template"] == "yes"
    assert info["generation defaults"]["steps"] == 8 and info["layers"] == 2
    code, out, _ = run(capsys, monkeypatch, "info", "--model", model_dir)
    assert code == 0 and "parameters" in out and "d_model" in out


@pytest.mark.parametrize("tied", [False, True])
def test_count_parameters_from_config(tied):
    config = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=3, mlp_hidden_size=40, vocab_size=90,
                         embedding_size=96, weight_tying=tied, max_sequence_length=16, mask_token_id=95,
                         eos_token_id=94, pad_token_id=94)  # fmt: skip
    model = LLaDAModelLM(config)
    assert count_parameters(config.to_dict()) == sum(p.numel() for p in model.parameters())


def test_push_sends_the_folder_with_a_card(capsys, monkeypatch, model_dir):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with HubStandIn() as hub:
        code, out, err = run(capsys, monkeypatch, "push", "me/cli-model", "--model", model_dir, "--endpoint",
                             hub.endpoint, "--token", "t", "--dataset", "me/kjv", "--tag", "demo")  # fmt: skip
    assert code == 0, err
    assert out.startswith("pushed ") and "/me/cli-model" in out
    files = hub.repos["me/cli-model"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "modeling_llada.py", "README.md"} <= set(files)
    assert "datasets:\n- me/kjv" in files["README.md"].decode() and len(hub.commits) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "./no/such/model", "hi"], "model path ./no/such/model does not exist"),
        (["generate", "--model", "nosuchmodel", "hi"], "model path nosuchmodel does not exist"),
        (["generate", "--model", "someone/llada-that-is-not-cached", "hi"], "offline mode (HF_HUB_OFFLINE=1)"),
        (["info", "--model", "someone/llada-that-is-not-cached"], "offline mode (HF_HUB_OFFLINE=1)"),
        (["push", "me/x", "--model", "{model}", "--token", "t"], "offline mode (HF_HUB_OFFLINE=1)"),
        (["generate", "--model", "{model}", " the" * 95], "exceeds the model's max_sequence_length (96)"),
        (["generate", "--model", "{model}", "--block-length", "3", "hi"], "block_length (3) must divide"),
        (["generate", "--model", "{model}", "--remasking", "best", "hi"], "remasking='best' is not a registered"),
        (["generate", "--model", "{model}", "   "], "the prompt is empty"),
        (["infill", "--model", "{model}", "no placeholder here"], "the text has no mask placeholder"),
    ],
)
def test_user_mistakes_print_one_line(capsys, monkeypatch, model_dir, argv, message):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    code, out, err = run(capsys, monkeypatch, *[a.replace("{model}", str(model_dir)) for a in argv])
    assert code == 1 and out == ""
    assert err.startswith("llada: error: ") and message in err and err.count("\n") == 1, err


def test_chat_needs_a_chat_template(capsys, monkeypatch, model_dir, tmp_path):
    for path in model_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    code, out, err = run(capsys, monkeypatch, "chat", "--model", tmp_path, stdin="Hi\n")
    assert code == 1 and "has no chat template" in err and err.count("\n") == 1


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(), reason="the demo model is not built")
def test_demo_model_is_the_default(capsys, monkeypatch):
    code, out, err = run(
        capsys, monkeypatch, "generate", "--max-new-tokens", "32", "--steps", "32", "In the beginning"
    )
    assert code == 0, err
    assert out.startswith("In the beginning") and len(out.split()) > 6
    code, out, _ = run(capsys, monkeypatch, "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["weights dtype"] == "bfloat16" and info["chat template"] == "yes"
    assert sum(p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()) < 30 * 2**20


def test_kv_cache_none_forces_the_exact_path(capsys, monkeypatch, model_dir, tmp_path):
    import shutil

    folder = tmp_path / "cached"
    shutil.copytree(model_dir, folder)
    generation = json.loads((folder / "generation_config.json").read_text())
    generation["kv_cache"] = "dual"
    (folder / "generation_config.json").write_text(json.dumps(generation))
    args = ("--max-new-tokens", "8", "--steps", "8", "--block-length", "4", "In the")
    exact = run(capsys, monkeypatch, "generate", "--model", str(model_dir), *args)
    forced = run(capsys, monkeypatch, "generate", "--model", str(folder), "--kv-cache", "none", *args)
    assert exact[0] == forced[0] == 0 and forced[1] == exact[1]


def test_piped_chat_prints_one_line_per_reply(capsys, monkeypatch, model_dir):
    import llada.generation_llada

    monkeypatch.setattr(llada.generation_llada, "decode_generation", lambda *a, **k: ["first line\nsecond  line\n"])
    code, out, _ = run(capsys, monkeypatch, "chat", "--model", model_dir, "--max-new-tokens", "4", "--steps", "4",
                       stdin="Hi\nWho?\n")  # fmt: skip
    assert code == 0 and out.splitlines() == ["first line second line"] * 2


def test_max_new_tokens_alone_gets_a_fitting_schedule(capsys, monkeypatch):
    """The demo saves 64 tokens, 64 steps, blocks of 8: --max-new-tokens 200 keeps one step per token in blocks of
    8 (which divide 200); 60 gets blocks of 6 (the largest divisor of 60 up to 8)."""
    from llada.cli import _fit_schedule
    from llada.generation_llada import LLaDAGenerationConfig

    config = LLaDAGenerationConfig(max_new_tokens=64, steps=64, block_length=8)
    for given, expected in (
        ({"max_new_tokens": 200}, {"max_new_tokens": 200, "steps": 200}),
        ({"max_new_tokens": 60}, {"max_new_tokens": 60, "steps": 60, "block_length": 6}),
        ({"max_new_tokens": 20, "block_length": 10}, {"max_new_tokens": 20, "block_length": 10, "steps": 20}),
        ({"max_new_tokens": 20, "steps": 5}, {"max_new_tokens": 20, "steps": 5}),
    ):
        _fit_schedule(given, config)
        assert given == expected
    half = LLaDAGenerationConfig(max_new_tokens=64, steps=32, block_length=8)
    given = {"max_new_tokens": 200}
    _fit_schedule(given, half)
    assert given == {"max_new_tokens": 200, "steps": 100}  # 25 blocks: a multiple of 25
    code, out, err = run(capsys, monkeypatch, "generate", "--max-new-tokens", "200", "--no-echo", "In the beginning")
    assert code == 0, err
    assert out.strip()
