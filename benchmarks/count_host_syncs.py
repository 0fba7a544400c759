"""Count the points where the host waits for a tensor's value (a device sync on a GPU) in the hot paths.

On a GPU every `.item()`, `.tolist()`, `bool(t)`, `int(t)`, `nonzero()` and boolean-mask indexing of a device
tensor stops the CPU until the GPU has caught up, so the next kernels cannot be queued ahead. This script counts
those reads with a `TorchFunctionMode` on the CPU (no GPU needed) and names the line of the package that made each
one, per generation mode and for one training step:

    python benchmarks/count_host_syncs.py                 # table of reads per forward pass, by call site

Writes the counts to benchmarks/results/host_syncs-*.json (`--no-results` to skip).

On a GPU, `torch.cuda.set_sync_debug_mode("warn")` reports the same points as they happen. Everything runs on the
CPU here, so the counter tells host tensors from (would-be) device tensors itself: a copy to the host (`.cpu()`) is a
read, and what is computed only from host tensors, or made by a factory without a `device` (`torch.arange(a, b)`,
`torch.tensor(list)`), lives on the host, and reading it costs nothing. (On the CPU `.cpu()` returns the tensor
itself, so the script avoids streamers, whose `put(x.cpu())` would mark the canvas as a host tensor.)
"""

import argparse
import collections
import sys
import traceback
from pathlib import Path

import torch
from results import RESULTS_DIR, write_results
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from llada import LLaDAConfig, LLaDAModelLM

# Tensor methods and functions whose result depends on values: the host must have them.
HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.nonzero,
    torch.nonzero,
    torch.Tensor.masked_select,
    torch.masked_select,
    torch.Tensor.unique,
    torch.unique,
    torch.repeat_interleave,
    torch.Tensor.cpu,
}
PACKAGE = str(Path(__file__).resolve().parents[1] / "src" / "llada")


class HostReadCounter(TorchFunctionMode):
    """Counts value-dependent reads, keyed by the first frame inside the llada package (or the caller)."""

    def __init__(self):
        super().__init__()
        self.sites = collections.Counter()
        self._host = {}  # id -> tensor (kept alive so that ids are not reused) of the tensors on the host

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        on_host = bool(tensors) and all(id(t) in self._host for t in tensors)
        bool_index = (
            func is torch.Tensor.__getitem__
            and len(args) > 1
            and any(isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in _flat(args[1]))
        )
        if (func in HOST_READS or bool_index) and not on_host:
            self.sites[self._site(func, bool_index)] += 1
        result = func(*args, **kwargs)
        host_factory = not tensors and kwargs.get("device") is None
        if on_host or host_factory or func is torch.Tensor.cpu:
            for out in tree_flatten(result)[0]:
                if isinstance(out, torch.Tensor):
                    self._host[id(out)] = out
        return result

    @staticmethod
    def _site(func, bool_index) -> str:
        frames = traceback.extract_stack()[:-2]  # drop __torch_function__ and _site
        inside = [f for f in frames if str(Path(f.filename).resolve()).startswith(PACKAGE)]
        frame = inside[-1] if inside else frames[-1]
        name = "bool-mask indexing" if bool_index else getattr(func, "__name__", str(func))
        return f"{Path(frame.filename).name}:{frame.lineno} {name}"

    @property
    def total(self) -> int:
        return sum(self.sites.values())


def _flat(index):
    return index if isinstance(index, tuple) else (index,)


def tiny_model() -> LLaDAModelLM:
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=512, embedding_size=512,
        mask_token_id=511, eos_token_id=510, pad_token_id=510, max_sequence_length=512,
    )  # fmt: skip
    return LLaDAModelLM(config).eval()


def count_generate(model, **options) -> dict:
    prompt = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), HostReadCounter() as counter:
        out = model.generate(
            prompt, max_new_tokens=64, steps=64, block_length=16, return_dict_in_generate=True, **options
        )
    return {"nfe": out.nfe, "reads": counter.total, "per_forward": counter.total / out.nfe, "sites": counter.sites}


def count_training_step(model) -> dict:
    from llada.training import LLaDATrainer, LLaDATrainingArguments

    args = LLaDATrainingArguments(output_dir="/tmp/count-host-syncs", report_to=[], use_cpu=True)
    trainer = LLaDATrainer(model=model.train(), args=args)
    trainer._inputs_validated = True  # the first step validates ids once (a sync); count the steady state
    inputs = {"input_ids": torch.randint(0, 500, (4, 64), generator=torch.Generator().manual_seed(0))}
    with HostReadCounter() as counter:
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
    return {"reads": counter.total, "sites": counter.sites}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args(argv)
    model = tiny_model()
    cases = {
        "generate exact": {},
        "generate kv_cache=prefix": {"kv_cache": "prefix"},
        "generate kv_cache=dual": {"kv_cache": "dual"},
        "generate dual + threshold 0.9": {"kv_cache": "dual", "threshold": 0.9},
        "generate cfg_scale 1": {"cfg_scale": 1.0},
    }
    results = {name: count_generate(model, **options) for name, options in cases.items()}
    results["training step (loss + backward)"] = count_training_step(model)
    print(f"{'path':34} {'forwards':>8} {'host reads':>10} {'per forward':>11}")
    for name, r in results.items():
        nfe = r.get("nfe", 1)
        print(f"{name:34} {nfe:>8} {r['reads']:>10} {r['reads'] / nfe:>11.2f}")
        for site, n in r["sites"].most_common():
            print(f"    {n:>5}  {site}")
    if not args.no_results:
        serial = {k: {**v, "sites": dict(v["sites"])} for k, v in results.items()}
        write_results("host_syncs", "cpu", vars(args), serial, args.results_dir)


if __name__ == "__main__":
    sys.exit(main())
