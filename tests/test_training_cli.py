"""`llada train pretrain|sft` (through `python -m llada.training.cli`'s `main`): local files, checkpoints, resume,
LoRA and merging, and clear errors."""

import json
import re

import pytest
import torch

from llada import LLaDAModelLM
from llada.training import train_tokenizer
from llada.training.cli import main

CORPUS = [
    "The cat sat on the mat. The dog sat on the log. A bird sat on the tree.",
    "What is the capital of France? Paris is the capital of France.",
    "Hello there! How are you today? I am fine, thank you.",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    train_tokenizer(CORPUS * 4, vocab_size=300).save_pretrained(root / "tokenizer")
    (root / "book.txt").write_text(" ".join(CORPUS * 6))
    (root / "more.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in CORPUS) + "\n")
    chats = [
        {"prompt": "What is the capital of France?", "response": "Paris."},
        {"messages": [{"role": "user", "content": "Hello there!"}, {"role": "assistant", "content": "I am fine."}]},
    ] * 4
    (root / "config.json").write_text(json.dumps({"d_model": 32, "n_heads": 4, "max_sequence_length": 64}))
    (root / "chats.jsonl").write_text("\n".join(json.dumps(c) for c in chats) + "\n")
    return root


def small_model_flags(out) -> list[str]:
    return ["--d-model", "32", "--n-layers", "2", "--n-heads", "4", "--max-length", "32", "--output-dir", str(out)]


COMMON = ["--batch-size", "2", "--logging-steps", "1", "--no-progress", "--learning-rate", "1e-3", "--save-steps", "2"]


def test_pretrain_checkpoints_and_resume(files, tmp_path):
    out = tmp_path / "run"
    data = ["--data", str(files / "book.txt"), str(files / "more.jsonl"), "--tokenizer", str(files / "tokenizer")]
    main(["pretrain", *data, *small_model_flags(out), *COMMON, "--max-steps", "2"])
    assert (out / "checkpoint-2").is_dir()
    for name in ("model.safetensors", "config.json", "tokenizer.json", "modeling_llada.py"):
        assert (out / name).exists(), name
    model = LLaDAModelLM.from_pretrained(out)
    assert model.config.d_model == 32 and model.config.mask_token_id == 299  # the tokenizer's <|mdm_mask|>

    metrics = main(["pretrain", *data, *small_model_flags(out), *COMMON, "--max-steps", "4", "--resume"])
    assert (out / "checkpoint-4").is_dir()
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    assert metrics["train_loss"] > 0


def test_sft_with_lora_eval_and_merge(files, tmp_path):
    base = tmp_path / "base"
    main(
        ["pretrain", "--data", str(files / "book.txt"), "--tokenizer", str(files / "tokenizer")]
        + small_model_flags(base)
        + COMMON
        + ["--max-steps", "1"]
    )
    out = tmp_path / "sft"
    chats = str(files / "chats.jsonl")
    metrics = main(
        ["sft", "--data", chats, "--eval-data", chats, "--model", str(base), "--max-length", "32"]
        + ["--output-dir", str(out), "--lora", "--lora-r", "4", "--merge-lora", "--max-steps", "2", *COMMON]
    )
    assert metrics["eval_loss"] > 0
    assert (out / "adapter_config.json").exists() and (out / "tokenizer.json").exists()
    merged = LLaDAModelLM.from_pretrained(out / "merged")
    original = LLaDAModelLM.from_pretrained(base)
    assert not torch.equal(
        merged.model.transformer.blocks[0].q_proj.weight, original.model.transformer.blocks[0].q_proj.weight
    )
    torch.testing.assert_close(merged.model.transformer.ff_out.weight, original.model.transformer.ff_out.weight)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--resume"], "no checkpoint-\\* folder"),
        (["--model", "somewhere", "--d-model", "32"], "either --model"),
        (["--data", "missing.txt"], "missing.txt does not exist"),
        (
            ["--max-length", "128", "--config", "CONFIG"],
            r"--max-length \(128\) exceeds the model's max_sequence_length \(64\)",
        ),
    ],
)
def test_cli_errors(files, tmp_path, capsys, extra, message):
    argv = ["pretrain", "--data", str(files / "book.txt"), "--tokenizer", str(files / "tokenizer")]
    argv += ["--output-dir", str(tmp_path / "x"), "--d-model", "32", "--n-layers", "1", "--n-heads", "4"]
    argv += ["--max-steps", "1", "--no-progress"]
    extra = [str(files / "config.json") if e == "CONFIG" else e for e in extra]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + extra)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_document_mask_and_packing_flags_reach_the_collators(files, tmp_path, monkeypatch):
    """`pretrain --document-mask` and `sft --packing` train on batches with `document_ids` (attention per document)."""
    from llada.training import cli

    seen = []
    original = cli.build_datasets

    def recording(args, tokenizer, config):
        train, evaluation, collator = original(args, tokenizer, config)
        seen.append(collator(list(train)))
        return train, evaluation, collator

    monkeypatch.setattr(cli, "build_datasets", recording)
    data = ["--data", str(files / "book.txt"), str(files / "more.jsonl"), "--tokenizer", str(files / "tokenizer")]
    main(["pretrain", *data, *small_model_flags(tmp_path / "pt"), *COMMON, "--max-steps", "1", "--document-mask"])
    chats = ["--data", str(files / "chats.jsonl"), "--tokenizer", str(files / "tokenizer")]
    sft_flags = [*small_model_flags(tmp_path / "sft"), "--max-length", "128"]  # room for several samples per row
    main(["sft", *chats, *sft_flags, *COMMON, "--max-steps", "1", "--packing"])
    pretrain_batch, sft_batch = seen
    assert pretrain_batch["document_ids"].shape == pretrain_batch["input_ids"].shape
    assert pretrain_batch["document_ids"].max() > 0  # a row where one document ends (EOS) and the next starts
    assert sft_batch["input_ids"].shape[0] < 8  # the 8 samples packed into fewer rows
    assert sft_batch["document_ids"].max() > 0


def test_sft_defaults_to_the_demo_model(files, tmp_path):
    from llada.cli import DEMO_MODEL_DIR

    out = tmp_path / "sft-demo"
    chats = str(files / "chats.jsonl")
    main(["sft", "--data", chats, "--max-length", "32", "--output-dir", str(out), "--max-steps", "1", *COMMON])
    demo = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    assert (saved["d_model"], saved["vocab_size"]) == (demo["d_model"], demo["vocab_size"])
    assert (out / "tokenizer.json").exists()


def test_vrpo_defaults_to_the_demo_model(tmp_path):
    """Like sft (and every other command), `llada train vrpo` without --model fine-tunes the embedded demo model."""
    from llada.cli import DEMO_MODEL_DIR

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "The LORD is my", "chosen": "shepherd", "rejected": "king"}) + "\n")
    out = tmp_path / "vrpo-demo"
    argv = ["vrpo", "--data", str(prefs), "--max-length", "48", "--output-dir", str(out), "--max-steps", "1"]
    main(argv + ["--mc-budget", "2", *COMMON])
    demo = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    assert (saved["d_model"], saved["vocab_size"]) == (demo["d_model"], demo["vocab_size"])
