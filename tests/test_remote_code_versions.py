"""A saved folder loads through `trust_remote_code` under the transformers its users have (4.x included) and computes
the same numbers, or refuses clearly (LLaDA-MoE needs transformers 5.17+: under 4.x it must be refused).

The round trip runs tests/remote_code_probe.py in a separate virtual environment with another transformers and no
`llada`, built once under ~/.cache/llada-tests (LLADA_TEST_CACHE overrides it) and skipped when the package index
cannot be reached. LLADA_TEST_TRANSFORMERS_VERSIONS="4.40.2,4.57.1,..." checks other versions the same way. The
other tests here run offline and pin the rules that make the 4.x route work.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import GenerationConfig, PretrainedConfig

import llada.modeling_llada as modeling
from llada import LLaDAConfig, LLaDAModelLM
from llada.configuration_llada import MIN_TRANSFORMERS_VERSION, _major_minor
from llada.generation_llada import LLaDAGenerationMixin
from llada.modeling_llada import HUB_CORE_FILES
from llada.modeling_llada_moe import MOE_MIN_TRANSFORMERS_VERSION

from .conftest import tiny_config
from .remote_code_probe import probe

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "llada"
CACHE = Path(os.environ.get("LLADA_TEST_CACHE", Path.home() / ".cache" / "llada-tests"))
VERSIONS = [v for v in os.environ.get("LLADA_TEST_TRANSFORMERS_VERSIONS", "4.57.1").split(",") if v]


# ---------------------------------------------------------------------------------------------------------- offline


def _relative_imports(name: str) -> set[str]:
    """The sibling modules that transformers 4.x finds in a file: its pattern, indented lines included."""
    text = (SRC / f"{name}.py").read_text()
    return set(re.findall(r"^\s*from\s+\.(\S+)\s+import", text, flags=re.MULTILINE)) | set(
        re.findall(r"^\s*import\s+\.(\S+)\s*$", text, flags=re.MULTILINE)
    )


@pytest.mark.parametrize("entry", sorted(Path(name).stem for name in HUB_CORE_FILES))
def test_hub_core_files_import_every_file_they_need_directly(entry):
    """transformers 4.x and 5.0 copy into their module cache only the files that the loaded file names itself, then
    read the whole import graph: each hub-core file (any may be an auto_map target) names every file reachable
    from it."""
    reachable, todo = set(), [entry]
    while todo:
        for module in _relative_imports(todo.pop()) - reachable:
            reachable.add(module)
            todo.append(module)
    assert reachable - {entry} <= _relative_imports(entry)
    assert {f"{module}.py" for module in reachable} <= set(HUB_CORE_FILES)


def test_too_old_transformers_is_refused_at_load(monkeypatch):
    # The module that a fresh `import transformers` finds (the test module's binding can be an older object).
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.39.3")
    spec = importlib.util.spec_from_file_location("llada.old_configuration_llada", SRC / "configuration_llada.py")
    with pytest.raises(ImportError) as info:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    message = str(info.value)
    assert "transformers 4.39.3 is installed" in message
    assert f"transformers >= {MIN_TRANSFORMERS_VERSION}" in message
    assert f"pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'" in message


def test_published_fields_win_over_the_parent_config_defaults(monkeypatch):
    """transformers 4.x's `PretrainedConfig.__init__` assigns `tie_word_embeddings=True` (routed onto
    `weight_tying` by `attribute_map`) and `None` special ids; the published fields must survive it."""
    original = PretrainedConfig.__init__

    def old_style_init(self, **kwargs):
        original(self, **kwargs)
        self.tie_word_embeddings = kwargs.get("tie_word_embeddings", True)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(self, name, kwargs.get(name))

    monkeypatch.setattr(PretrainedConfig, "__init__", old_style_init)
    config = tiny_config()
    assert (config.weight_tying, config.tie_word_embeddings) == (False, False)
    assert (config.eos_token_id, config.pad_token_id, config.mask_token_id) == (98, 98, 99)
    assert tiny_config(tie_word_embeddings=True).weight_tying is True


def test_config_dict_with_a_field_and_its_alias_reads_the_field():
    values = tiny_config().to_dict()
    values.update(tie_word_embeddings=True, hidden_size=64, num_hidden_layers=5)
    config = LLaDAConfig.from_dict(values)
    assert (config.weight_tying, config.d_model, config.n_layers) == (False, 32, 2)
    assert LLaDAConfig.from_dict({**tiny_config().to_dict(), "tie_word_embeddings": True}).weight_tying is False
    alias_only = {k: v for k, v in tiny_config().to_dict().items() if k != "n_layers"}
    assert LLaDAConfig.from_dict({**alias_only, "num_hidden_layers": 3}).n_layers == 3


def test_llada_generate_comes_before_the_base_class():
    """Under transformers < 4.50, `PreTrainedModel` inherits transformers' `GenerationMixin`: its `generate` must not
    shadow the diffusion one."""
    mro = LLaDAModelLM.__mro__
    assert mro.index(LLaDAGenerationMixin) < mro.index(transformers.PreTrainedModel)
    assert LLaDAModelLM.generate is LLaDAGenerationMixin.generate


def test_saved_generation_config_survives_the_plain_loader(tmp_path):
    """transformers < 4.45 loads generation_config.json as a plain `GenerationConfig` and assigns it (when
    `can_generate()`, which must hold): the diffusion settings must come through that route too."""
    assert LLaDAModelLM.can_generate()
    model = LLaDAModelLM(tiny_config())
    model.generation_config.update(max_new_tokens=8, steps=4, block_length=4, remasking="margin", kv_cache="prefix")
    model.save_pretrained(tmp_path)
    fresh = LLaDAModelLM(tiny_config())
    fresh.generation_config = GenerationConfig.from_pretrained(tmp_path)
    saved = model.generation_config.to_diff_dict()
    loaded = fresh.generation_config.to_diff_dict()
    assert {k: loaded.get(k) for k in saved if k != "transformers_version"} == {
        k: v for k, v in saved.items() if k != "transformers_version"
    }


def test_sdpa_fallback_for_transformers_without_attention_registry(monkeypatch):
    """transformers < 4.48 has no `ALL_ATTENTION_FUNCTIONS`: sdpa then runs through our own call, with the same
    numbers; other backends are refused with the version found."""
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    ids = torch.randint(0, 100, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        monkeypatch.setattr(modeling, "ALL_ATTENTION_FUNCTIONS", None)
        fallback = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(fallback, expected, atol=1e-6, rtol=1e-6)
    found = re.escape(transformers.__version__)
    with pytest.raises(ValueError, match=rf"flex_attention.*transformers >= 4.48 \(found {found}\)"):
        modeling.attention_function("flex_attention")


# ------------------------------------------------------------------------------------------ separate environment


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _environment(version: str) -> Path:
    """A venv with this torch and `transformers==version` (no llada), built once and cached."""
    venv = CACHE / f"venv-transformers-{version}-torch-{torch.__version__.split('+')[0]}"
    python = venv / "bin" / "python"
    if (venv / "READY").exists():
        return python
    pip = [sys.executable, "-m", "pip"]
    try:
        # Fails within seconds where the package index cannot be reached (CI without network).
        probe_index = _run(
            [
                *pip,
                "download",
                "--no-deps",
                "--timeout",
                "5",
                "--retries",
                "0",
                "-d",
                str(CACHE / "wheels"),
                f"transformers=={version}",
            ],
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"the package index did not answer in time: cannot build a transformers {version} environment")
    if probe_index.returncode != 0:
        pytest.skip(
            f"the package index is unreachable, so no transformers {version} environment can be built: "
            f"{probe_index.stderr.strip().splitlines()[-1:] or probe_index.stdout[-200:]}"
        )
    shutil.rmtree(venv, ignore_errors=True)
    built = _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert built.returncode == 0, built.stderr
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    installed = _run([str(python), "-m", "pip", "install", "-q", torch_pin, f"transformers=={version}"], timeout=1800)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    (venv / "READY").write_text(f"{torch_pin} transformers=={version}\n")
    return python


@pytest.mark.parametrize("kind", ["dense", "moe"])
@pytest.mark.parametrize("version", VERSIONS)
def test_saved_folder_round_trip_under_other_transformers(version, kind, tmp_path, fixture_dir):
    python = _environment(version)
    folder = tmp_path / f"llada_{kind}_{version.replace('.', '_')}"
    source = fixture_dir if kind == "dense" else fixture_dir.parent / "official-lladamoe-tiny"
    model = LLaDAModelLM.from_pretrained(source)
    model.generation_config.update(max_new_tokens=8, steps=4, block_length=4, remasking="margin", kv_cache="prefix")
    model.save_pretrained(folder)
    expected = probe(str(folder))
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="", PYTHONNOUSERSITE="1"
    )
    # The same number of threads as this process (conftest: 1): the MoE experts' float sums depend on it.
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    result = subprocess.run(
        [str(python), str(TESTS / "remote_code_probe.py"), str(folder), str(tmp_path / "out.pt"), "--block-llada"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if kind == "moe" and _major_minor(version) < _major_minor(MOE_MIN_TRANSFORMERS_VERSION):
        # Refused at load, with the version found and the one needed; never a model with other numbers.
        assert result.returncode != 0 and "PROBE-OK" not in result.stdout
        assert (
            f"ImportError: LLaDA-MoE needs transformers >= {MOE_MIN_TRANSFORMERS_VERSION}" in result.stderr
            and f"this is transformers {version}" in result.stderr
        ), result.stderr[-3000:]
        return
    assert "PROBE-OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert got.pop("transformers_version").tolist() == [int(p) for p in version.split(".")[:2]]
    expected.pop("transformers_version")
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(got[name], value), f"{name} differs under transformers {version}"


def test_model_card_names_the_transformers_the_remote_code_needs(fixture_dir):
    from llada.hub import build_model_card

    dense = str(build_model_card(LLaDAModelLM.from_pretrained(fixture_dir), repo_id="me/x", language=None))
    assert f"(transformers\n{MIN_TRANSFORMERS_VERSION} or later; before 4.56, write `torch_dtype=`" in dense
    moe_model = LLaDAModelLM.from_pretrained(fixture_dir.parent / "official-lladamoe-tiny")
    moe = str(build_model_card(moe_model, repo_id="me/x", language=None))
    assert f"(transformers\n{MOE_MIN_TRANSFORMERS_VERSION} or later):" in moe
