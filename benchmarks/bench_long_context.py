"""Forward time and peak memory at long context (1K, 4K, 16K tokens) on CPU with a tiny-width model.

    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/bench_long_context.py --lengths 1024 4096 16384

Each (length, mode) runs in a fresh process (peak RSS is per process): build the model, one warm-up forward at 256
tokens, then one timed forward at the length. Modes:

- `full`: logits at every position, (T, V) float32 (what a naive sampler or loss would hold);
- `head-1/8`: the LM head only at 1/8 of the positions (`logits_to_keep=<bool mask>`, as the trainer does);
- `docs-8`: as `head-1/8`, with the row packed from 8 documents (`document_ids`: a dense (T, T) boolean mask on sdpa);
- `ntk-x4`: as `head-1/8`, with `rope_scaling={"rope_type": "diffusion_ntk", "factor": 4}` (RoPE cost only);
- `generate-dual`: `generate` with the dual cache after a prompt of the length (32 new tokens, 32 steps, block 32).

Peak memory is the process's peak resident set (ru_maxrss) minus the resident set after the warm-up; on CUDA, the
peak allocated memory during the timed call (`torch.cuda.max_memory_allocated`). On a GPU (to run):

    python benchmarks/bench_long_context.py --device cuda --dtype bfloat16 --shape 8b --lengths 8192 32768 \
        --modes head-1/8 generate-dual
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from results import RESULTS_DIR, write_results

MODES = ("full", "head-1/8", "docs-8", "ntk-x4", "generate-dual")
SHAPES = {
    "tiny": dict(d_model=128, n_heads=2, n_kv_heads=2, n_layers=2, mlp_hidden_size=336),
    "8b": dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288),
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one(length: int, mode: str, args) -> dict:
    from llada import LLaDAConfig, LLaDAModelLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype, vocab = args.device, getattr(torch, args.dtype), args.vocab
    extra = {"rope_scaling": {"rope_type": "diffusion_ntk", "factor": 4.0}} if mode == "ntk-x4" else {}
    new_tokens = 32 if mode == "generate-dual" else 0
    config = LLaDAConfig(
        **SHAPES[args.shape],
        vocab_size=vocab,
        embedding_size=vocab,
        max_sequence_length=length + new_tokens if mode != "ntk-x4" else length // 4,
        mask_token_id=vocab - 1,
        eos_token_id=vocab - 2,
        pad_token_id=vocab - 2,
        attn_implementation="sdpa",
        **extra,
    )
    with torch.device(device):
        model = LLaDAModelLM(config).to(dtype).eval()

    def inputs(t):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, vocab - 2, (1, t), generator=g)
        kwargs = {}
        if mode not in ("full", "generate-dual"):
            kwargs["logits_to_keep"] = (torch.rand(1, t, generator=g) < 1 / 8).to(device)
        if mode == "docs-8":
            kwargs["document_ids"] = (torch.arange(t) * 8 // t)[None].to(device)
        return ids.to(device), kwargs

    def run(ids, kwargs):
        if mode == "generate-dual":
            out = model.generate(ids, max_new_tokens=new_tokens, steps=32, block_length=32, kv_cache="dual")
            return out[:, :0]
        return model(ids, **kwargs).logits

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        run(*inputs(256 if mode != "ntk-x4" else 64))
        ids, kwargs = inputs(length)
        sync()
        base = rss_mb()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        start = time.perf_counter()
        logits = run(ids, kwargs)
        sync()
        seconds = time.perf_counter() - start
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "length": length,
        "mode": mode,
        "seconds": seconds,
        "peak_extra_mb": peak - base,
        "logits_mb": logits.numel() * logits.element_size() / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/*.json")
    parser.add_argument("--one", nargs=2, metavar=("LENGTH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = one(int(args.one[0]), args.one[1], args)
        print(json.dumps(result))
        return
    print(f"shape={args.shape} vocab={args.vocab} device={args.device} dtype={args.dtype} threads={args.threads} sdpa")
    print(f"{'tokens':>7} {'mode':>9} {'s/forward':>10} {'peak MB':>9} {'logits MB':>10}")
    figures = []
    env = dict(os.environ)
    env.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    for length in args.lengths:
        for mode in args.modes:
            command = [sys.executable, __file__, "--one", str(length), mode]
            command += ["--shape", args.shape, "--device", args.device, "--dtype", args.dtype]
            command += ["--vocab", str(args.vocab), "--threads", str(args.threads)]
            out = subprocess.run(command, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{length:>7} {mode:>9} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            figures.append(r)
            print(
                f"{length:>7} {mode:>9} {r['seconds']:>10.3f} {r['peak_extra_mb']:>9.1f} {r['logits_mb']:>10.1f}",
                flush=True,
            )
    if not args.no_results:
        options = {k: v for k, v in vars(args).items() if k != "one"}
        write_results("long_context", args.device, options, figures, args.results_dir)


if __name__ == "__main__":
    main()
