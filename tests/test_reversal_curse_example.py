"""The reversal-curse example (`examples/reversal_curse.py --quick`): the whole pipeline runs end to end on a tiny
budget (data -> LLaDATrainer and Llama's Trainer -> log_likelihood / generate rankings -> likelihood -> RADD nfe).
It asserts that the pipeline works, not the accuracies (the real run's numbers are in docs/reversal_curse.md)."""

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "reversal_curse.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("reversal_curse", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_halves_and_candidates(example):
    facts = example.make_facts(40, seed=3)
    assert len(facts) == 40 and sum(f["both"] for f in facts) == 20
    names = [f[k] for f in facts for k in ("a", "b")]
    assert len(set(names)) == 80  # every name belongs to one fact
    tokenizer = example.build_tokenizer(facts)
    rows = example.training_rows(facts, tokenizer, epochs=2, seed=3)
    assert len(rows) == 2 * (40 + 20) and {len(r) for r in rows} == {example.ROW}
    # The reversed form of a forward-only fact never appears in training.
    reversed_rows = {tuple(example.encode(tokenizer, example.reverse_words(f))) for f in facts if not f["both"]}
    assert not any(tuple(r[1:-1]) in reversed_rows for r in rows)
    forward_only = [f for f in facts if not f["both"]]
    qs = example.questions(forward_only[:5], forward_only, tokenizer, "reverse", seed=4)
    for q, f in zip(qs, forward_only, strict=False):
        assert len(q["candidates"]) == example.NUM_CANDIDATES and len(set(map(tuple, q["candidates"]))) == 10
        assert tokenizer.convert_ids_to_tokens(q["candidates"][q["target"]][0]) == f["a"]
        assert tokenizer.convert_ids_to_tokens(q["prompt"])[1:] == ["" + f["b"], "is", "the", f["inv"], "of"]


def test_quick_run(example, tmp_path):
    (result,) = example.main(["--quick", "--output-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "seed-0.json").read_text())
    assert saved["llada_reverse"] == result["llada_reverse"]
    assert result["llada_params"] == result["llama_params"]  # same size
    assert result["steps"] == result["llama_steps"] > 0  # same budget
    for key in ("forward", "reverse", "reverse_trained", "greedy_forward", "greedy_reverse"):
        assert 0.0 <= result[f"llada_{key}"] <= 1.0 and 0.0 <= result[f"llama_{key}"] <= 1.0
    assert result["llada_nll_test"] > 0 and result["llama_nll_test"] > 0
    radd = {row["setting"]: row for row in result["radd"]}
    # 7 masked tokens: whatever the nominal steps, the sampler runs exactly one forward pass per unmasking step.
    assert radd["steps = masks"]["nfe"] == 7
    assert radd["steps = 64 (> masks)"]["nfe"] == 7 and radd["steps = 64 (> masks)"]["saved"] == 1 - 7 / 64
    assert all(1 <= row["nfe"] <= 7 for row in result["radd"])
    table = example.summary_markdown([saved])
    assert "| **reverse (never trained), ranking 10 candidates** |" in table
