"""Shared fixtures: the published-format tiny checkpoint and its reference outputs, and a tiny random config."""

import os

# Some Intel VMs list AMX in /proc/cpuinfo but cannot execute it: oneDNN then picks AMX kernels for bfloat16 matmuls
# and the interpreter dies with "Illegal instruction" (exit 132, no traceback). Capping oneDNN's ISA must happen
# before torch runs its first operation, so it is set before torch is imported; processes started by tests inherit it.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: the suite's tensors are tiny, and on a shared 2-core machine extra threads only contend.
torch.set_num_threads(1)

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "official-llada-tiny"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def reference() -> dict:
    return torch.load(FIXTURE_DIR / "reference.pt", weights_only=True)


@pytest.fixture
def official_model():
    from llada import LLaDAModelLM

    return LLaDAModelLM.from_pretrained(FIXTURE_DIR).eval()


def tiny_config(**overrides):
    """A small random LLaDA config (the fixture's special ids) for tests that need no reference numbers."""
    from llada import LLaDAConfig

    values = dict(
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        n_layers=2,
        mlp_hidden_size=48,
        vocab_size=100,
        embedding_size=104,
        max_sequence_length=64,
        mask_token_id=99,
        eos_token_id=98,
        pad_token_id=98,
    )
    values.update(overrides)
    return LLaDAConfig(**values)
