"""Extend the demo model's context 4x (256 -> 1024 tokens) and compare RoPE extensions: a toy UltraLLaDA.

    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python examples/long_context_demo.py      # ~5 minutes on a shared CPU core

The demo model (`src/llada/demo/model`, trained on 256-token rows of the King James Bible) is extended to 1024
tokens three ways: `plain` (positions simply run past 256), `ntk` (base * 4) and `diffusion_ntk` (UltraLLaDA's
diffusion-aware NTK: head dim 32, base 1e4, 256 -> 1024 gives d_crit 16 and base ~1.06e5). Each is measured before
and after a short post-training on packed 1024-token rows of the corpus with document masking
(`LLaDAPretrainingCollator(document_mask=True)`), with the same data, masks and seed for all three:

- `masked CE @256 / @1024`: mean cross-entropy of the masked tokens of held-out rows (the last chapters, 50% of
  tokens masked, fixed masks), at the trained length and at 4x;
- `recall @1024`: a passkey-style test built from the corpus: a held-out verse opens a 1024-token row of other
  held-out verses that ends with the same verse, its second half masked; one forward pass, the share of masked
  tokens predicted exactly (`@256`: the same test inside the trained length; `no needle`: the opening verse
  replaced by another, so what is guessed without the copy).

Needs the Debian `bible-kjv` package (`apt-get install -y bible-kjv`), like examples/train_demo_model.py.
"""

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from llada import LLaDAModelLM
from llada.masking_llada import forward_mask, sample_mask_probability
from llada.training import LLaDAPretrainingCollator, pack_documents
from llada.training.trainer import masked_diffusion_loss_sum

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import DEFAULT_OUTPUT, read_kjv  # noqa: E402

VARIANTS = {
    "plain": None,
    "ntk": {"rope_type": "ntk", "factor": 4.0},
    "diffusion_ntk": {"rope_type": "diffusion_ntk", "factor": 4.0},
}
BOOKS = ("Genesis", "Exodus", "Psalms", "Isaiah", "Matthew", "John", "Romans", "Job", "Ruth", "Daniel")


def load(variant: str, model_dir: Path) -> LLaDAModelLM:
    scaling = VARIANTS[variant]
    if scaling is None:  # plain extrapolation: only the length limit is raised
        return LLaDAModelLM.from_pretrained(model_dir, max_sequence_length=1024)
    return LLaDAModelLM.from_pretrained(model_dir, rope_scaling=dict(scaling))


def masked_ce(model, rows: torch.Tensor, mask_token_id: int) -> float:
    """Mean CE of the masked tokens, 50% masked with a fixed generator."""
    g = torch.Generator().manual_seed(7)
    masked = torch.rand(rows.shape, generator=g) < 0.5
    with torch.no_grad():
        logits = model(torch.where(masked, mask_token_id, rows), logits_to_keep=masked).logits
    return torch.nn.functional.cross_entropy(logits.float(), rows[masked]).item()


def recall_rows(tokenizer, verses: list[str], length: int, count: int, seed: int, needle: bool = True):
    """(ids (count, length), answer mask): a held-out verse (the needle), other held-out verses as filler, and the
    needle again at the end with its second half masked. `needle=False` replaces the first copy by another verse
    (the control: what the model guesses without the copy)."""
    rng = random.Random(seed)
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    rows, answers = [], []
    for _ in range(count):
        pick = rng.randrange(len(verses))
        target = tokenizer(verses[pick], add_special_tokens=False).input_ids[:24]
        other = tokenizer(verses[(pick + 1) % len(verses)], add_special_tokens=False).input_ids[:24]
        head = (target if needle else other) + newline
        tail = newline + target
        room = length - len(head) - len(tail)
        filler: list[int] = []
        start = rng.randrange(len(verses))
        while len(filler) < room:
            filler += tokenizer(verses[start % len(verses)] + "\n", add_special_tokens=False).input_ids
            start += 1
        ids = head + filler[:room] + tail
        half = len(target) // 2
        rows.append(ids)
        answers.append([False] * (length - len(target) + half) + [True] * (len(target) - half))
    return torch.tensor(rows), torch.tensor(answers)


def recall(model, rows, answer, mask_token_id: int) -> float:
    with torch.no_grad():
        logits = model(torch.where(answer, mask_token_id, rows), logits_to_keep=answer).logits
    return (logits.argmax(-1) == rows[answer]).float().mean().item()


def post_train(model, rows: torch.Tensor, document_ids: torch.Tensor, steps: int, batch: int, lr: float, seed: int):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    mask_id = model.config.mask_token_id
    for step in range(steps):
        pick = torch.randint(0, rows.shape[0], (batch,), generator=g)
        ids, docs = rows[pick], document_ids[pick]
        p = sample_mask_probability(batch, generator=g)
        masked = forward_mask(ids.shape, p, generator=g)
        maskable = torch.ones_like(masked)
        loss = masked_diffusion_loss_sum(model, ids, maskable, masked, p, mask_id, document_ids=docs) / batch
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 10) * (1 - step / steps)
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--steps", type=int, default=20, help="post-training steps per variant")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--eval-rows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    base = LLaDAModelLM.from_pretrained(args.model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    eos, mask_id = base.config.eos_token_id, base.config.mask_token_id
    chapters = read_kjv()
    held_out, train = chapters[-60:], chapters[:-60]
    encode = lambda ch: tokenizer("\n".join(ch), add_special_tokens=False).input_ids  # noqa: E731
    train_rows = torch.tensor(list(pack_documents(map(encode, train), 1024, eos)))
    collator = LLaDAPretrainingCollator(tokenizer, max_length=1024, packed=True, document_mask=True)
    train_docs = collator([{"input_ids": row} for row in train_rows.tolist()])["document_ids"]
    eval_1024 = torch.tensor(list(pack_documents(map(encode, held_out), 1024, eos)))[: args.eval_rows]
    eval_256 = eval_1024[:, :256]
    verses = [v for ch in held_out for v in ch]
    recall_256 = recall_rows(tokenizer, verses, 256, args.eval_rows * 2, seed=1)
    recall_1024 = recall_rows(tokenizer, verses, 1024, args.eval_rows * 2, seed=1)
    control_1024 = recall_rows(tokenizer, verses, 1024, args.eval_rows * 2, seed=1, needle=False)
    documents_per_row = float(train_docs.max(1).values.float().mean() + 1)
    print(
        f"train rows {tuple(train_rows.shape)}, {documents_per_row:.1f} documents per row; eval rows "
        f"{tuple(eval_1024.shape)}; recall rows {tuple(recall_1024[0].shape)}",
        flush=True,
    )

    results = []
    for variant in VARIANTS:
        model = load(variant, args.model).eval()
        theta = model.config.rope_theta
        if variant == "diffusion_ntk":
            from llada.rope_llada import diffusion_critical_dim, diffusion_ntk_base

            hd = model.config.head_dim
            theta = diffusion_ntk_base(hd, theta, 256, 1024)
            print(f"diffusion_ntk: head dim {hd}, d_crit {diffusion_critical_dim(hd, 1e4, 256)}, base {theta:.4g}")
        elif variant == "ntk":
            theta = theta * 4
        for stage in ("training-free", f"after {args.steps} steps"):
            if stage != "training-free":
                torch.manual_seed(args.seed)
                post_train(model, train_rows, train_docs, args.steps, args.batch, args.lr, args.seed)
            row = {
                "variant": variant,
                "stage": stage,
                "base": theta,
                "ce256": masked_ce(model, eval_256, mask_id),
                "ce1024": masked_ce(model, eval_1024, mask_id),
                "recall256": recall(model, *recall_256, mask_id),
                "recall1024": recall(model, *recall_1024, mask_id),
                "control1024": recall(model, *control_1024, mask_id),
            }
            results.append(row)
            print(
                f"{variant:>14} {stage:>18}: CE@256 {row['ce256']:.3f} CE@1024 {row['ce1024']:.3f} "
                f"recall@256 {row['recall256']:.3f} recall@1024 {row['recall1024']:.3f} "
                f"no needle {row['control1024']:.3f} "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )

    print("\n| variant | RoPE base | stage | masked CE @256 | masked CE @1024 | recall @256 | recall @1024 ", end="")
    print("| no needle @1024 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['variant']} | {r['base']:.3g} | {r['stage']} | {r['ce256']:.3f} | {r['ce1024']:.3f} | "
            f"{r['recall256']:.3f} | {r['recall1024']:.3f} | {r['control1024']:.3f} |"
        )
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
