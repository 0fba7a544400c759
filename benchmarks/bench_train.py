"""Training throughput of `LLaDATrainer`: tokens/s and MFU for a model shape, batch and sequence length.

    python benchmarks/bench_train.py --shape 1.6b --batch-size 4 --seq-len 2048 --bf16 --compile   # H100 target
    python benchmarks/bench_train.py --shape tiny --batch-size 8 --seq-len 256                     # CPU smoke

Counts what a training step costs in the full-head formulation used for the published-code baseline:
6 x (matmul parameters, LM head included) + 12 x layers x seq_len x d_model (attention scores and values) FLOPs per
token. The trainer applies the head only at masked positions (about half), so its real FLOPs are lower; the MFU
reported is comparable with the baseline's. The peak is measured (a large matmul in the training dtype) unless
--peak-tflops is given.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from results import RESULTS_DIR, write_results
from transformers import TrainerCallback

from llada import LLaDAConfig, LLaDAModelLM
from llada.training import CHECKPOINTING_ARGUMENT, LLaDATrainer, LLaDATrainingArguments

SHAPES = {
    # the 1.6B LLaDA shape of the throughput target
    "1.6b": dict(d_model=2048, n_layers=22, n_heads=32, n_kv_heads=32, mlp_hidden_size=5632, vocab_size=126464),
    "tiny": dict(d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden_size=704, vocab_size=8192),
}


def model_config(shape: str, seq_len: int) -> LLaDAConfig:
    values = dict(SHAPES[shape])
    vocab = values["vocab_size"]
    return LLaDAConfig(
        **values,
        embedding_size=vocab,
        max_sequence_length=max(seq_len, 256),
        mask_token_id=vocab - 1,
        eos_token_id=vocab - 2,
        pad_token_id=vocab - 2,
        rope_theta=500000.0,
    )


def flops_per_token(config: LLaDAConfig, seq_len: int) -> float:
    d, h, layers = config.d_model, config.mlp_size, config.n_layers
    kv = config.n_kv_heads * config.head_dim
    block = d * d * 2 + d * kv * 2 + 3 * d * h  # q, attn_out, k, v, gate/up/down
    matmul_params = layers * block + config.padded_vocab_size * d
    return 6 * matmul_params + 12 * layers * seq_len * d


def measure_peak_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync()
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


class StepTimer(TrainerCallback):
    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10, help="Timed optimizer steps.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (compilation, allocator).")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast.")
    parser.add_argument("--compile", action="store_true", help="torch.compile (TrainingArguments.torch_compile).")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--attn", default="sdpa", help="Attention implementation.")
    parser.add_argument("--peak-tflops", type=float, help="Device peak for MFU; measured when omitted.")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = model_config(args.shape, args.seq_len)
    model = LLaDAModelLM._from_config(config, attn_implementation=args.attn)
    total = args.warmup + args.steps
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, config.vocab_size - 2, (total * args.batch_size, args.seq_len), generator=g)
    data = [{"input_ids": row} for row in rows]

    def collate(examples):
        ids = torch.stack([e["input_ids"] for e in examples])
        return {"input_ids": ids, "labels": ids}

    with tempfile.TemporaryDirectory() as output_dir:
        training_args = LLaDATrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=args.batch_size,
            max_steps=total,
            learning_rate=1e-4,
            optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
            bf16=args.bf16,
            torch_compile=args.compile,
            random_length_prob=0.0,  # fixed shapes
            save_strategy="no",
            logging_steps=10**9,
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=device.type == "cuda",
            use_cpu=device.type == "cpu",
            **{CHECKPOINTING_ARGUMENT: args.gradient_checkpointing},
        )
        timer = StepTimer(device)
        trainer = LLaDATrainer(model=model, args=training_args, train_dataset=data, data_collator=collate)
        trainer.add_callback(timer)
        trainer.train()

    timed = timer.times[args.warmup - 1 :] if args.warmup > 0 else timer.times
    seconds = timed[-1] - timed[0]
    steps = len(timed) - 1
    tokens_per_s = steps * args.batch_size * args.seq_len / seconds
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak = args.peak_tflops or measure_peak_tflops(device, dtype)
    achieved = tokens_per_s * flops_per_token(config, args.seq_len) / 1e12
    result = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "bf16": args.bf16,
        "compile": args.compile,
        "params": sum(p.numel() for p in model.parameters()),
        "timed_steps": steps,
        "tokens_per_s": round(tokens_per_s, 1),
        "model_tflops_per_s": round(achieved, 3),
        "peak_tflops": round(peak, 3),
        "peak_measured": args.peak_tflops is None,
        "mfu": round(achieved / peak, 4),
    }
    print(json.dumps(result))
    if not args.no_results:
        write_results("train", device, vars(args), result, args.results_dir)
    return result


if __name__ == "__main__":
    main()
