"""Forward-pass latency of an LLaDA model with random weights, and agreement of the attention backends.

    python benchmarks/bench_forward.py --shape 8b --device cuda --dtype bfloat16 --tokens 356
    python benchmarks/bench_forward.py --shape tiny --device cpu --dtype float32

For every backend available on the device (sdpa, eager, flash_attention_2 when installed, flex_attention on CUDA)
it prints the median forward time over `--iters` runs (after warm-up) and the largest logit difference from sdpa.
"""

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from results import RESULTS_DIR, write_results

from llada import LLaDAConfig, LLaDAModelLM

SHAPES = {
    "8b": dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288),
    "1.6b": dict(d_model=2048, n_heads=32, n_kv_heads=32, n_layers=22, mlp_hidden_size=5632),
    "tiny": dict(d_model=256, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=704),
}


def build(shape: str, device: str, dtype: torch.dtype, attn: str) -> LLaDAModelLM:
    config = LLaDAConfig(**SHAPES[shape], attn_implementation=attn)
    if shape == "tiny":
        config.vocab_size = config.embedding_size = 4096
        config.mask_token_id, config.eos_token_id, config.pad_token_id = 4095, 4094, 4094
    with torch.device(device):
        model = LLaDAModelLM(config).to(dtype)
    return model.eval()


def timed(fn, iters: int, device: str) -> float:
    times = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--tokens", type=int, default=356)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    backends = ["sdpa", "eager"]
    if args.device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        backends.append("flash_attention_2")
    torch.manual_seed(0)
    reference = build(args.shape, args.device, dtype, "sdpa")
    state = reference.state_dict()
    vocab = reference.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.tokens), device=args.device)
    with torch.no_grad():
        ref_logits = reference(ids, validate_inputs=False).logits.float()
    figures = []
    print(f"shape={args.shape} device={args.device} dtype={args.dtype} batch={args.batch} tokens={args.tokens}")
    for attn in backends:
        model = reference if attn == "sdpa" else build(args.shape, args.device, dtype, attn)
        if model is not reference:
            model.load_state_dict(state)
        with torch.no_grad():
            forward = lambda m=model: m(ids, validate_inputs=False)  # noqa: E731
            for _ in range(3):
                forward()
            seconds = timed(forward, args.iters, args.device)
            diff = (model(ids, validate_inputs=False).logits.float() - ref_logits).abs().max().item()
        print(f"{attn:>18}: {seconds * 1e3:8.2f} ms/forward   max |logits - sdpa| = {diff:.3g}")
        figures.append({"attn_implementation": attn, "ms_per_forward": seconds * 1e3, "max_abs_diff_vs_sdpa": diff})
        if model is not reference:
            del model
    if not args.no_results:
        write_results("forward", args.device, vars(args), figures, args.results_dir)


if __name__ == "__main__":
    main()
