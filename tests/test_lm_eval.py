"""The evaluation layer: bound perplexity, `llada eval ppl`, and the lm-eval model on tiny local tasks (offline).

The lm-eval tests run only when lm-eval is installed (the `eval` extra). The model is the published-format fixture
saved next to a byte-level tokenizer built here: bytes are ids 0..255, fillers up to 315, EOS 316, mask 317, as in
the fixture config.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from llada import LLaDAModelLM
from llada.evaluation import bound_perplexity, chunk_pairs

FIXTURE = Path(__file__).parent / "fixtures" / "official-llada-tiny"


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # ByteLevel writes byte b as a printable character (GPT-2's table): printable bytes stand for themselves, the
    # others are shifted past 255 in order. Token id = byte value.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    symbol = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    vocab = {symbol[b]: b for b in range(256)}
    vocab |= {f"<extra_{i}>": i for i in range(256, 316)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eot|>", pad_token="<|eot|>")
    fast.add_special_tokens({"mask_token": "<|mdm_mask|>"})
    assert fast.eos_token_id == 316 and fast.mask_token_id == 317
    return fast


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada-tiny")
    LLaDAModelLM.from_pretrained(FIXTURE).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model():
    return LLaDAModelLM.from_pretrained(FIXTURE).eval()


def test_chunk_pairs_give_each_chunk_its_preceding_context():
    assert chunk_pairs(list(range(7)), 3, 2) == [([], [0, 1, 2]), ([1, 2], [3, 4, 5]), ([4, 5], [6])]
    assert chunk_pairs(list(range(4)), 4) == [([], [0, 1, 2, 3])]
    with pytest.raises(ValueError, match=r"chunk_length \(0\) must be at least 1"):
        chunk_pairs([1], 0)


def test_bound_perplexity_sums_chunk_bounds(model):
    ids = torch.arange(40, 140).tolist()  # 100 tokens: chunks of 32, 32, 32, 4 with 16 tokens of context
    result = bound_perplexity(
        model, ids, mc_num=16, chunk_length=32, context_length=16, generator=torch.Generator().manual_seed(0)
    )
    pairs = chunk_pairs(ids, 32, 16)
    expected = model.log_likelihood(
        [c for c, _ in pairs], [a for _, a in pairs], mc_num=16, estimator="stratified",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert (result.num_tokens, result.num_chunks) == (100, 4)
    assert result.log_likelihood == pytest.approx(expected.sum().item(), abs=1e-6)
    assert result.perplexity == pytest.approx(math.exp(-expected.sum().item() / 100), rel=1e-6)
    with pytest.raises(ValueError, match=r"chunk_length \(250\) \+ context_length \(16\) exceeds"):
        bound_perplexity(model, ids, chunk_length=250, context_length=16)


def test_cli_ppl_prints_json(model_dir, tmp_path, capsys):
    from llada.evaluation.cli import main

    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"text": "In the beginning"}) + "\n" + json.dumps({"text": "was the word"}) + "\n")
    code = main(["ppl", "--model", str(model_dir), "--data", str(data), "--mc-num", "8", "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tokens"] == len("In the beginning") + len("was the word") and out["chunks"] == 2
    assert out["perplexity"] == pytest.approx(math.exp(out["nll_per_token"]))
    assert main(["ppl", "--model", str(model_dir), "--data", str(tmp_path / "missing.txt")]) == 1
    assert "data file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# lm-eval
# --------------------------------------------------------------------------------------------------------------------


def write_tasks(root: Path) -> Path:
    """Three tiny local tasks (multiple choice, rolling likelihood, generation) over one JSON-lines file."""
    rows = [
        {"question": "Q: 1+1=", "choices": [" 2", " 3", " 11"], "label": 0, "text": "one two"},
        {"question": "Q: sky?", "choices": [" blue", " green"], "label": 0, "text": "three four five"},
    ]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {root / 'cache'}\n"
        "test_split: test\n"
    )
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common + "output_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n"
    )
    (root / "tiny_rolling.yaml").write_text(
        "task: tiny_rolling\n" + common + "output_type: loglikelihood_rolling\ndoc_to_text: ''\n"
        "doc_to_target: '{{text}}'\nmetric_list:\n  - metric: word_perplexity\n"
    )
    (root / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common + "output_type: generate_until\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: '{{choices[0]}}'\ngeneration_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return root


def test_lm_eval_runs_local_tasks_offline(model_dir, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from llada.evaluation.lm_eval_model import LLaDAEvalHarness

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = ["tiny_mc", "tiny_rolling"]
    if not hasattr(LLaDAModelLM, "generate"):
        pytest.skip("model.generate is not available yet")
    tasks.append("tiny_gen")
    results = lm_eval.simple_evaluate(
        model="llada",
        model_args=f"pretrained={model_dir},mc_num=16,max_new_tokens=4,steps=4,block_length=4,device=cpu",
        tasks=tasks,
        task_manager=TaskManager(include_path=str(write_tasks(tmp_path))),
        log_samples=True,
    )
    assert 0.0 <= results["results"]["tiny_mc"]["acc,none"] <= 1.0
    assert math.isfinite(results["results"]["tiny_rolling"]["word_perplexity,none"])
    assert len(results["samples"]["tiny_gen"]) == 2
    assert "tiny_mc" in results["results"] and isinstance(LLaDAEvalHarness, type)


def test_lm_eval_loglikelihood_matches_log_likelihood(model_dir):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from llada.evaluation.lm_eval_model import LLaDAEvalHarness

    lm = LLaDAEvalHarness(pretrained=str(model_dir), mc_num=32, seed=3, device="cpu", check_greedy=True)
    requests = [
        Instance("loglikelihood", {}, ("In the ", "beginning"), 0),
        Instance("loglikelihood", {}, ("In the", " end"), 1),
    ]
    results = lm.loglikelihood(requests)
    prompt, answer = lm.encode_pair("In the ", "beginning")
    assert prompt == list(b"In the") and answer == list(b" beginning")  # the trailing space moves to the answer
    expected = lm.model.log_likelihood(
        [prompt, list(b"In the")], [answer, list(b" end")], mc_num=32, generator=torch.Generator().manual_seed(3)
    )
    assert [score for score, _ in results] == pytest.approx(expected.tolist(), abs=1e-6)
    assert all(isinstance(greedy, bool) for _, greedy in results)


def test_lm_eval_rejects_bad_settings(model_dir):
    pytest.importorskip("lm_eval")
    from llada.evaluation.lm_eval_model import LLaDAEvalHarness

    with pytest.raises(ValueError, match=r"mc_num \(100\) must be a multiple of mc_batch_size \(16\)"):
        LLaDAEvalHarness(pretrained=str(model_dir), mc_num=100, mc_batch_size=16, device="cpu")
    # Unset, the stratification group is the largest divisor of mc_num up to the published 16.
    assert LLaDAEvalHarness(pretrained=str(model_dir), mc_num=100, device="cpu").mc_batch_size == 10
    assert LLaDAEvalHarness(pretrained=str(model_dir), mc_num=128, device="cpu").mc_batch_size == 16
    with pytest.raises(ValueError, match=r"dtype \('fp8'\) must be 'auto' or one of"):
        LLaDAEvalHarness(pretrained=str(model_dir), dtype="fp8", device="cpu")


def test_readme_lm_eval_command_runs_as_printed(model_dir, tmp_path, monkeypatch, capsys):
    """`llada eval lm-eval --model llada --model_args pretrained=...,mc_num=N --tasks ...`: the arguments go to
    lm-eval unparsed, lm-eval's default CUDA device falls back to the CPU where there is none, any mc_num works,
    and no progress bar is drawn on a stderr that is not a terminal."""
    pytest.importorskip("lm_eval")
    from llada.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["eval", "lm-eval", "--model", "llada", "--model_args", f"pretrained={model_dir},mc_num=12"]
    argv += ["--tasks", "tiny_mc", "--include_path", str(write_tasks(tmp_path))]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "tiny_mc" in out and "acc" in out
    assert "loglikelihood:" not in err


def test_lm_eval_missing_gives_the_install_hint(monkeypatch, capsys):
    import sys

    from llada.cli import main

    for name in [name for name in sys.modules if name.split(".")[0] == "lm_eval"] + ["lm_eval"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if lm-eval were not installed
    monkeypatch.delitem(sys.modules, "llada.evaluation.lm_eval_model", raising=False)
    assert main(["eval", "lm-eval", "--model", "llada", "--tasks", "arc_easy"]) == 1
    assert "pip install 'llada[eval]'" in capsys.readouterr().err
