"""Which `checkpoint-N/` folders of a training run are complete, and the newest one to resume from.

`Trainer` writes a checkpoint's files one after the other and `trainer_state.json` last (after the weights, the
optimizer, the scheduler and the RNG states). A run killed while saving leaves a folder without it, or with a
truncated one; resuming from such a folder fails (`Can't find a valid checkpoint`, `FileNotFoundError`) although
earlier checkpoints are complete. `latest_complete_checkpoint` skips those folders and says which and why.
"""

import json
import logging
import os
import re

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: Files of which a checkpoint holds at least one: full weights or LoRA adapters.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot be resumed from (one phrase), or `None` when it is a complete checkpoint."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return "it is not a folder"
    state = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(state):
        return "it has no trainer_state.json (the run stopped while saving it)"
    try:
        with open(state, encoding="utf-8") as file:
            json.load(file)
    except (OSError, ValueError):
        return "its trainer_state.json is truncated or unreadable (the run stopped while saving it)"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in _WEIGHT_FILES):
        return "it holds no weights (model.safetensors or adapter_model.safetensors)"
    return None


def latest_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` folder of `output_dir` (highest N), or `None`. Newer incomplete ones are
    skipped with a warning naming the folder and the reason."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps.append((int(match.group(1)), name))
    for _, name in sorted(steps, reverse=True):
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("Not resuming from %s: %s; trying an earlier checkpoint.", folder, problem)
    return None


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir) -> str | None:
    """What `Trainer.train(resume_from_checkpoint=...)` should get: `True` becomes the newest complete checkpoint of
    `output_dir`; a folder is checked. Raises `ValueError` naming the folder when there is nothing to resume from."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        folder = latest_complete_checkpoint(output_dir)
        if folder is None:
            raise ValueError(
                f"--resume: no checkpoint-* folder in {output_dir} holds a complete checkpoint; start without "
                "resuming."
            )
        return folder
    folder = os.fspath(resume_from_checkpoint)
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise ValueError(
            f"resume: cannot resume from {folder}: {problem}. Resume from an earlier checkpoint, or pass True to "
            "take the newest complete one."
        )
    return folder


__all__ = ["checkpoint_problem", "latest_complete_checkpoint", "resolve_resume_checkpoint"]
