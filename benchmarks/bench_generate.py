"""Generation speed: tokens/s of `model.generate` on a randomly initialised LLaDA.

The issue's setting: LLaDA-8B shape, bf16, batch 1, prompt 100, 256 new tokens, block 32, 256 steps (one token per
step), at temperature 0. Modes: `baseline` (a plain loop over the DESIGN.md section 4 algorithm: full-sequence
logits every step, as the published sampler does), `exact` (`generate`, default path), `prefix` and `dual`
(`kv_cache=...`). Every mode reports tokens/s over the whole batch, forward passes (nfe), ms per step and the share
of generated tokens equal to the exact path.

    python benchmarks/bench_generate.py --device cuda --shape 8b                 # the issue's figures
    python benchmarks/bench_generate.py --device cpu --shape tiny                # runs anywhere in seconds
    python benchmarks/bench_generate.py --device cpu --shape tiny --batch-sizes 1 8 --modes exact dual
"""

import argparse
import time
from pathlib import Path

import torch
from results import RESULTS_DIR, write_results

from llada import LLaDAConfig, LLaDAModelLM
from llada.masking_llada import num_transfer_tokens

SHAPES = {
    "8b": {},  # LLaDAConfig defaults are LLaDA-8B
    "tiny": dict(
        d_model=256,
        n_heads=4,
        n_kv_heads=4,
        n_layers=4,
        mlp_hidden_size=704,
        vocab_size=8192,
        embedding_size=8192,
        mask_token_id=8191,
        eos_token_id=8190,
        pad_token_id=8190,
    ),  # fmt: skip
}


def build_model(shape: str, device: str, dtype: torch.dtype) -> LLaDAModelLM:
    config = LLaDAConfig(**SHAPES[shape], max_sequence_length=4096)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LLaDAModelLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


@torch.no_grad()
def baseline_generate(model, prompt, new_tokens, steps, block_length, mask_id):
    """The reference algorithm written plainly: logits of the whole sequence every step, full softmax, top-k."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + new_tokens), mask_id, dtype=torch.long, device=prompt.device)
    x[:, : prompt.shape[1]] = prompt
    num_blocks = new_tokens // block_length
    per_block = steps // num_blocks
    for b in range(num_blocks):
        lo, hi = prompt.shape[1] + b * block_length, prompt.shape[1] + (b + 1) * block_length
        schedule = num_transfer_tokens(x[:, lo:hi] == mask_id, per_block)
        for i in range(per_block):
            masked = x == mask_id
            logits = model(x).logits
            x0 = logits.argmax(-1)
            p = torch.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
            p[:, hi:] = -torch.inf
            confidence = torch.where(masked, p, -torch.inf)
            transfer = torch.zeros_like(masked)
            for row in range(x.shape[0]):
                transfer[row, confidence[row].topk(int(schedule[row, i])).indices] = True
            x[transfer] = x0[transfer]
    return x


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_mode(model, mode, prompt, args):
    mask_id = model.config.mask_token_id
    if mode == "baseline":
        return baseline_generate(model, prompt, args.new_tokens, args.steps, args.block_length, mask_id), args.steps
    out = model.generate(
        prompt,
        max_new_tokens=args.new_tokens,
        steps=args.steps,
        block_length=args.block_length,
        temperature=0.0,
        kv_cache=None if mode == "exact" else mode,
        return_dict_in_generate=True,
    )
    return out.sequences, out.nfe


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--prompt-length", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["baseline", "exact", "prefix", "dual"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model(args.shape, args.device, getattr(torch, args.dtype))
    vocab = model.config.vocab_size
    specials = {model.config.mask_token_id, model.config.eos_token_id}
    print(
        f"device={args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}) "
        f"shape={args.shape} dtype={args.dtype} prompt={args.prompt_length} new={args.new_tokens} "
        f"block={args.block_length} steps={args.steps} torch={torch.__version__}"
    )
    figures = []
    print(f"{'mode':>8} {'batch':>5} {'tokens/s':>10} {'nfe':>5} {'ms/step':>8} {'same as exact':>14}")
    for batch in args.batch_sizes:
        prompt = torch.randint(0, vocab - 2, (batch, args.prompt_length), device=args.device)
        assert not any(int((prompt == s).sum()) for s in specials)
        # Warm up (kernels, allocator) on a short canvas.
        warm = argparse.Namespace(**{**vars(args), "new_tokens": args.block_length, "steps": args.block_length})
        for mode in args.modes:
            run_mode(model, mode, prompt, warm)
        reference = None
        # The exact path first: every other mode is compared with it.
        for mode in sorted(args.modes, key=lambda m: m != "exact"):
            best = float("inf")
            for _ in range(args.repeats):
                sync(args.device)
                start = time.perf_counter()
                out, nfe = run_mode(model, mode, prompt, args)
                sync(args.device)
                best = min(best, time.perf_counter() - start)
            generated = out[:, args.prompt_length :]
            if mode == "exact":
                reference = generated
            same = "" if reference is None else f"{(generated == reference).float().mean().item():.3f}"
            tokens_per_s = batch * args.new_tokens / best
            print(f"{mode:>8} {batch:>5} {tokens_per_s:>10.1f} {nfe:>5} {1000 * best / nfe:>8.2f} {same:>14}")
            figures.append(
                {
                    "mode": mode,
                    "batch": batch,
                    "tokens_per_s": tokens_per_s,
                    "nfe": nfe,
                    "ms_per_step": 1000 * best / nfe,
                    "agreement_with_exact": None if reference is None else float(same),
                }
            )
    if not args.no_results:
        write_results("generate", args.device, vars(args), figures, args.results_dir)


if __name__ == "__main__":
    main()
