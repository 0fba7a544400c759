"""LLaDA-MoE forward latency and generation throughput: the experts kernels vs a per-expert loop, same weights.

    python benchmarks/bench_moe.py --shape small --device cpu --dtype float32 --threads 1
    python benchmarks/bench_moe.py --shape 7b-a1b --device cuda --dtype bfloat16 --batch-sizes 1 8

`eager` is a Python loop over the experts that gathers each expert's tokens (a host sync per expert, like the
published code's loop over its expert modules); `grouped_mm` (the default) and `batched_mm` are transformers'
experts kernels on the 3D expert tensors. Every implementation runs on the same model (switched with
`set_experts_implementation`), and the logits and generated tokens are compared with `eager`.
"""

import argparse

import torch
from bench_forward import timed

from llada import LLaDAMoEConfig, LLaDAMoEModelLM

SHAPES = {
    # LLaDA-MoE-7B-A1B: hidden 2048, 16 layers, 16 heads, 64 experts top-8, expert width 1024, vocab 157184
    "7b-a1b": dict(
        hidden_size=2048,
        num_attention_heads=16,
        num_key_value_heads=16,
        num_hidden_layers=16,
        dense_intermediate_size=8192,
        expert_intermediate_size=1024,
        num_experts=64,
        num_experts_per_tok=8,
        vocab_size=157184,
        mask_token_id=156895,
        eos_token_id=156892,
        pad_token_id=156892,
    ),
    "small": dict(
        hidden_size=256,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_hidden_layers=4,
        dense_intermediate_size=704,
        expert_intermediate_size=128,
        shared_expert_intermediate_size=256,
        num_experts=16,
        num_experts_per_tok=4,
        moe_layer_freq=[0, 1, 1, 1],
        vocab_size=4096,
        mask_token_id=4095,
        eos_token_id=4094,
        pad_token_id=4094,
    ),
}
IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["bfloat16", "float32"])
    parser.add_argument("--tokens", type=int, default=356, help="forward: sequence length")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--kv-cache", nargs="+", default=["none"], help="none, prefix, dual")
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = LLaDAMoEConfig(**SHAPES[args.shape], max_position_embeddings=8192)
    with torch.device(args.device):
        model = LLaDAMoEModelLM(config).to(dtype).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size - 4, (1, args.tokens), generator=g).to(args.device)

    print(f"shape {args.shape}, {args.device}, {args.dtype}, threads {torch.get_num_threads()}")
    print(f"\nforward, batch 1, {args.tokens} tokens")
    print("| experts | ms / forward | speed-up vs eager | max abs logit diff vs eager |")
    print("|---|---|---|---|")
    reference = base_time = None
    for impl in args.implementations:
        model.set_experts_implementation(impl)
        with torch.no_grad():
            logits = model(ids).logits
            seconds = timed(lambda: model(ids), args.iters, args.device)
        if reference is None:
            reference, base_time = logits, seconds
        diff = (logits.float() - reference.float()).abs().max().item()
        print(f"| {impl} | {seconds * 1e3:.1f} | {base_time / seconds:.2f}x | {diff:.1e} |")

    for batch in args.batch_sizes:
        prompt = torch.randint(0, config.vocab_size - 4, (batch, args.prompt), generator=g).to(args.device)
        print(
            f"\ngenerate, batch {batch}, prompt {args.prompt}, {args.new_tokens} new tokens, {args.steps} steps, "
            f"block {args.block_length}"
        )
        print("| experts | kv cache | tokens/s | speed-up vs eager | tokens equal to eager |")
        print("|---|---|---|---|---|")
        for cache in args.kv_cache:
            reference = base_time = None
            for impl in args.implementations:
                model.set_experts_implementation(impl)
                kwargs = dict(
                    max_new_tokens=args.new_tokens,
                    steps=args.steps,
                    block_length=args.block_length,
                    kv_cache=None if cache == "none" else cache,
                )
                out = model.generate(prompt, **kwargs)
                seconds = timed(
                    lambda p=prompt, k=kwargs: model.generate(p, **k), max(1, args.iters // 2), args.device
                )
                if reference is None:
                    reference, base_time = out, seconds
                agree = (out[:, args.prompt :] == reference[:, args.prompt :]).float().mean().item()
                rate = batch * args.new_tokens / seconds
                print(f"| {impl} | {cache} | {rate:.1f} | {base_time / seconds:.2f}x | {agree:.3f} |")


if __name__ == "__main__":
    main()
