"""How transformers users try the package first: lazy import and Auto registration, pipelines, streamers, resizing,
attention outputs, torch.export, loading errors, left padding."""

import json
import os
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
