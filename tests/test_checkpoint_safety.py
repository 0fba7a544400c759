"""Checkpoints are never lost: atomic save_pretrained, resume from the newest complete checkpoint (issue 11)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers.modeling_utils

from llada import LLaDAModelLM
from llada.training.checkpoints import checkpoint_problem, latest_complete_checkpoint, resolve_resume_checkpoint

from .conftest import tiny_config


def _model(seed: int) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config()).eval()


def test_a_save_that_fails_halfway_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    old = _model(0)
    old.save_pretrained(folder)
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}

    def full_disk(state_dict, filename, metadata=None):
        with open(filename, "wb") as file:
            file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    new = _model(1)
    new.config.rope_theta = 1234.0  # the new config differs from the old one
    with pytest.raises(OSError, match="No space left"):
        new.save_pretrained(folder)
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary folder left behind
    monkeypatch.undo()
    loaded = LLaDAModelLM.from_pretrained(folder)
    assert loaded.config.rope_theta == old.config.rope_theta
    torch.testing.assert_close(loaded.state_dict(), old.state_dict())


def test_a_save_over_an_existing_folder_replaces_the_weights_and_keeps_other_files(tmp_path):
    folder = tmp_path / "ckpt"
    _model(0).save_pretrained(folder)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of an older save")
    new = _model(1)
    new.save_pretrained(folder)
    assert (folder / "tokenizer.json").read_text() == "{}"
    assert not (folder / "model-00001-of-00002.safetensors").exists()
    torch.testing.assert_close(LLaDAModelLM.from_pretrained(folder).state_dict(), new.state_dict())
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


def test_save_pretrained_to_a_file_is_one_clear_error_before_writing(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("keep me")
    with pytest.raises(ValueError, match="this path is a file; save_pretrained writes a folder"):
        _model(0).save_pretrained(path)
    assert path.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["a_file"]


def test_checkpoint_problems_are_named(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "model.safetensors").write_bytes(b"x")
    (run / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "model.safetensors").write_bytes(b"x")
    (run / "checkpoint-3").mkdir()
    (run / "checkpoint-3" / "trainer_state.json").write_text('{"global_st')
    assert checkpoint_problem(run / "checkpoint-1") is None
    assert "no trainer_state.json" in checkpoint_problem(run / "checkpoint-2")
    assert "truncated" in checkpoint_problem(run / "checkpoint-3")
    assert latest_complete_checkpoint(run) == str(run / "checkpoint-1")
    with pytest.raises(ValueError, match="cannot resume from .*checkpoint-2: it has no trainer_state.json"):
        resolve_resume_checkpoint(str(run / "checkpoint-2"), run)
    with pytest.raises(ValueError, match=r"no checkpoint-\* folder in .* holds a complete checkpoint"):
        resolve_resume_checkpoint(True, tmp_path / "empty")


def _trainer(output_dir, max_steps):
    from llada.training import LLaDATrainer, LLaDATrainingArguments

    torch.manual_seed(0)
    data = [{"input_ids": torch.randint(0, 98, (16,))} for _ in range(8)]
    args = LLaDATrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        max_steps=max_steps,
        save_steps=1,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    return LLaDATrainer(
        model=LLaDAModelLM(tiny_config()),
        args=args,
        train_dataset=data,
        data_collator=lambda rows: {"input_ids": torch.stack([r["input_ids"] for r in rows])},
    )


# A real training run that saves every step; while writing checkpoint-2 (after its weights, before its
# trainer_state.json) it reports and waits, and the test kills it with SIGKILL.
_RUN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from transformers import Trainer
    from tests.test_checkpoint_safety import _trainer

    save_rng_state = Trainer._save_rng_state

    def slow_save(self, output_dir):
        save_rng_state(self, output_dir)
        if output_dir.endswith("checkpoint-2"):
            print("SAVING", flush=True)
            time.sleep(120)

    Trainer._save_rng_state = slow_save
    _trainer(sys.argv[1], 3).train()
    """
)


def test_a_run_killed_while_saving_resumes_from_the_newest_complete_checkpoint(tmp_path, caplog):
    script = tmp_path / "run.py"
    script.write_text(_RUN.format(tests=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in process.stdout:
            if line.startswith("SAVING"):
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-2" / "trainer_state.json").exists()

    trainer = _trainer(out, 3)
    trainer.train(resume_from_checkpoint=True)
    assert "Not resuming from" in caplog.text and "checkpoint-2: it has no trainer_state.json" in caplog.text
    assert trainer.state.global_step == 3
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
