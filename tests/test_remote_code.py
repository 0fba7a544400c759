"""The saved folder works where `llada` is not importable (the trust_remote_code route), and the hub-core files
import nothing but torch, transformers, the standard library and each other."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from llada import LLaDAModelLM
from llada.modeling_llada import HUB_CORE_FILES

SRC = Path(__file__).resolve().parents[1] / "src" / "llada"

REMOTE_SCRIPT = r"""
import importlib.abc, sys

class BlockLLaDA(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "llada" or name.startswith("llada."):
            raise ImportError("llada is blocked in this process")

sys.meta_path.insert(0, BlockLLaDA())
try:
    import llada  # noqa: F401
    raise SystemExit("llada should not be importable here")
except ImportError:
    pass

import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

folder, reference = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__name__ == "LLaDAModelLM", type(model)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)).__name__ == "LLaDAModelLM"
assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "LLaDAConfig"
data = torch.load(reference, weights_only=True)["logits_padded"]
with torch.no_grad():
    logits = model(data["input_ids"], attention_mask=data["attention_mask"]).logits
torch.testing.assert_close(logits, data["logits"], atol=1e-5, rtol=1e-5)
# A model with a RoPE context extension (rope_llada.py travels with it).
scaled = AutoModel.from_pretrained(sys.argv[3], trust_remote_code=True).eval()
expected = torch.load(sys.argv[4], weights_only=True)
assert scaled.config.rope_scaling == expected["rope_scaling"], scaled.config.rope_scaling
with torch.no_grad():
    torch.testing.assert_close(scaled(expected["input_ids"]).logits, expected["logits"], atol=1e-5, rtol=1e-5)
print("REMOTE-OK")
"""


def test_trust_remote_code_without_llada(tmp_path, fixture_dir):
    folder = tmp_path / "saved"
    LLaDAModelLM.from_pretrained(fixture_dir).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoModelForMaskedLM": "modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    }
    for name in HUB_CORE_FILES:
        assert (folder / name).read_text() == (SRC / name).read_text()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    scaled = LLaDAModelLM.from_pretrained(fixture_dir, rope_scaling={"rope_type": "diffusion_ntk", "factor": 4.0})
    scaled.save_pretrained(tmp_path / "scaled")
    input_ids = torch.arange(scaled.config.max_sequence_length)[None] % 50
    with torch.no_grad():
        expected = {"rope_scaling": scaled.config.rope_scaling, "input_ids": input_ids}
        expected["logits"] = scaled.eval()(input_ids).logits
    torch.save(expected, tmp_path / "scaled.pt")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(folder),
            str(fixture_dir / "reference.pt"),
            str(tmp_path / "scaled"),
            str(tmp_path / "scaled.pt"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "REMOTE-OK" in result.stdout, result.stdout + result.stderr


def test_published_auto_map_loads_with_our_code(tmp_path, fixture_dir):
    """The published config's auto_map names the same modules and classes as ours."""
    published = json.loads((fixture_dir / "config.json").read_text())["auto_map"]
    for target in published.values():
        module, cls = target.split(".")
        assert (SRC / f"{module}.py").exists()
        assert f"class {cls}(" in (SRC / f"{module}.py").read_text()


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


def test_hub_core_import_rule():
    allowed_top = {"torch", "transformers"} | set(sys.stdlib_module_names)
    core = {Path(name).stem for name in HUB_CORE_FILES}
    for name in HUB_CORE_FILES:
        for level, module in _imports(SRC / name):
            if level == 0:
                assert module.split(".")[0] in allowed_top, f"{name} imports {module}"
            else:
                assert level == 1 and module in core, f"{name}: relative import must be flat and hub-core: {module}"


def test_hub_core_files_are_the_ones_in_the_package():
    shipped = {p.name for p in SRC.glob("*_llada.py")} | {p.name for p in SRC.glob("*_llada_moe.py")}
    assert shipped == set(HUB_CORE_FILES)
