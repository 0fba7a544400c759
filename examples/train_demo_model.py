"""Remake the demo model shipped in `src/llada/demo/model/` (the default of the `llada` command line).

The corpus is the King James Bible (1611, public domain), as packaged by Debian:

    apt-get install -y bible-kjv          # the text and the `bible` reader
    python examples/train_demo_model.py   # about 25-35 minutes on 2 shared CPU cores (stops at --minutes)

Every step uses this package: corpus -> `llada.training.train_tokenizer` (byte-level BPE with LLaDA's special tokens
and chat template) -> chapters, plus a few verse-continuation chats rendered with the chat template (so that
`llada chat` answers in the corpus' voice), packed into rows with `pack_documents` -> `LLaDATrainer` pretraining with
the masked diffusion loss -> optionally (`--sft-steps`) an `LLaDATrainer` SFT on verse continuation -> weights saved
in bfloat16 with the tokenizer, the generation defaults and a model card (`llada.hub.write_model_card`).
`--corpus FILE` takes any UTF-8 text instead (one document per blank-line separated paragraph).

The model is small on purpose (1.4M parameters): on a CPU budget of half an hour, a small model that sees the corpus
about ten times writes better text than a larger one that sees it once.
"""

import argparse
import json
import math
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from llada import LLaDAConfig, LLaDAModelLM
from llada.hub import write_model_card
from llada.modeling_llada import HUB_CORE_FILES
from llada.training import (
    LLaDAPretrainingCollator,
    LLaDASFTCollator,
    LLaDATrainer,
    LLaDATrainingArguments,
    pack_documents,
    train_tokenizer,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "src" / "llada" / "demo" / "model"
TRAINING_DATA = (
    "The King James Bible (1611, public domain), Debian package `bible-kjv-text`: 1,189 chapters, 31,102 verses, "
    "about 790k words; one document per chapter, verses on separate lines, verse numbers removed."
)
SAMPLE_PROMPTS = ("In the beginning", "And the LORD said unto Moses,", "Blessed are the")


def read_kjv() -> list[list[str]]:
    """The chapters of the King James Bible as lists of verses, read with Debian's `bible` program."""
    if shutil.which("bible") is None:
        raise SystemExit("The `bible` program is missing: apt-get install -y bible-kjv (or pass --corpus FILE).")
    text = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    chapters: list[list[str]] = []
    for line in text.splitlines():
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            chapters[-1].append(verse.group(1).strip())
        elif line.strip():  # a "Book N" heading starts a chapter
            chapters.append([])
    return [chapter for chapter in chapters if chapter]


def read_text_file(path: Path) -> list[list[str]]:
    """Any UTF-8 text: one document per blank-line separated paragraph, its lines kept."""
    paragraphs = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
    return [[line.strip() for line in p.splitlines() if line.strip()] for p in paragraphs if p.strip()]


class TimeLimit(TrainerCallback):
    """Stop training after `minutes` of wall time (a safety net; the step budget is set to fit)."""

    def __init__(self, minutes: float):
        self.deadline = time.monotonic() + 60 * minutes

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() > self.deadline:
            control.should_training_stop = True


class TimeBudgetTrainer(LLaDATrainer):
    """`LLaDATrainer` whose learning rate follows a warmup and a cosine decay over a wall-time budget instead of a
    step count, so that a run on a busy CPU still ends with a decayed learning rate (`max_steps` is only a cap)."""

    def __init__(self, *args, minutes: float, warmup_fraction: float = 0.05, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget_seconds = 60 * minutes
        self.warmup_fraction = warmup_fraction

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            start = time.monotonic()

            def factor(_step: int) -> float:
                done = min((time.monotonic() - start) / self.budget_seconds, 1.0)
                if done < self.warmup_fraction:
                    return max(done / self.warmup_fraction, 0.01)
                return 0.5 * (1 + math.cos(math.pi * (done - self.warmup_fraction) / (1 - self.warmup_fraction)))

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler


def continuation_pairs(chapters: list[list[str]], count: int, rng: random.Random) -> list[dict]:
    """SFT examples: the user gives one verse, the assistant answers with the next."""
    pairs = [(c[i], c[i + 1]) for c in chapters for i in range(len(c) - 1)]
    rng.shuffle(pairs)
    return [{"prompt": prompt, "response": response} for prompt, response in pairs[:count]]


def sample(model, tokenizer, prompts, max_new_tokens: int, steps: int, block_length: int) -> list[str]:
    model.eval()
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=max_new_tokens, steps=steps, block_length=block_length)
        outputs.append(prompt + tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="a UTF-8 text file instead of the King James Bible")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the model is saved")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llada-demo-run"), help="trainer output folders")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--mlp-hidden-size", type=int, default=384)
    parser.add_argument("--seq-len", type=int, default=128, help="training row length")
    parser.add_argument("--max-sequence-length", type=int, default=256, help="config.max_sequence_length")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--max-steps", type=int, default=20000, help="cap on pretraining steps (the wall-time budget ends the run)"
    )
    parser.add_argument("--sft-steps", type=int, default=0, help="SFT optimizer steps after pretraining (0: none)")
    parser.add_argument(
        "--chat-fraction", type=float, default=0.05, help="share of pretraining documents that are chat turns"
    )
    parser.add_argument(
        "--minutes", type=float, default=34.0, help="wall-time budget: the learning rate decays over it"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    start = time.monotonic()

    # 1. Corpus and tokenizer.
    chapters = read_text_file(args.corpus) if args.corpus else read_kjv()
    documents = ["\n".join(chapter) for chapter in chapters]
    print(f"corpus: {len(documents)} documents, {sum(len(d.split()) for d in documents):,} words")
    tokenizer = train_tokenizer(documents, vocab_size=args.vocab_size, model_max_length=args.max_sequence_length)
    print(f"tokenizer: {len(tokenizer)} tokens")
    # Chat-format documents (user: a verse; assistant: the next one) mixed into pretraining, so that `llada chat`
    # answers in the corpus' voice without a separate SFT stage.
    pairs = continuation_pairs(chapters, int(len(documents) * 30 * args.chat_fraction), rng)
    chats = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["response"]}], tokenize=False
        )
        for p in pairs
    ]

    # 2. Packed rows; a few chapters held out for the evaluation loss.
    order = list(range(len(documents)))
    rng.shuffle(order)
    held_out = set(order[: max(1, len(order) // 50)])
    encoded = tokenizer([documents[i] for i in range(len(documents))], add_special_tokens=False)["input_ids"]
    print(f"corpus: {sum(len(ids) for ids in encoded):,} tokens")
    chat_ids = tokenizer(chats, add_special_tokens=False)["input_ids"] if chats else []
    train_documents = [encoded[i] for i in order if i not in held_out] + chat_ids
    rng.shuffle(train_documents)
    print(f"{len(chats)} chat documents mixed in")
    train_rows = list(pack_documents(train_documents, args.seq_len, tokenizer.eos_token_id))
    eval_rows = list(pack_documents([encoded[i] for i in sorted(held_out)], args.seq_len, tokenizer.eos_token_id))
    train_set = [{"input_ids": row} for row in train_rows]
    eval_set = [{"input_ids": row} for row in eval_rows[:64]]
    print(f"rows of {args.seq_len}: {len(train_set)} train, {len(eval_set)} eval")

    # 3. The model.
    config = LLaDAConfig(
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_kv_heads=args.n_heads,
        n_layers=args.n_layers,
        mlp_hidden_size=args.mlp_hidden_size,
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=args.max_sequence_length,
        rope_theta=10000.0,
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LLaDAModelLM(config)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")

    # 4. Pretraining.
    common = dict(
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine",
        logging_steps=20,
        disable_tqdm=True,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    sft_minutes = args.minutes * 0.15 if args.sft_steps else 0.0
    pretrain_args = LLaDATrainingArguments(
        output_dir=str(args.work_dir / "pretrain"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        **common,
    )
    pretrain_minutes = args.minutes - sft_minutes - (time.monotonic() - start) / 60 - 1.0  # 1 min: eval, samples
    trainer = TimeBudgetTrainer(
        model=model,
        args=pretrain_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=LLaDAPretrainingCollator(tokenizer, max_length=args.seq_len, packed=True),
        callbacks=[TimeLimit(pretrain_minutes)],
        minutes=pretrain_minutes,
    )
    trainer.train()
    pretrain_eval = trainer.evaluate()["eval_loss"]
    print(f"pretraining: {trainer.state.global_step} steps, eval loss {pretrain_eval:.4f}")
    samples = {"pretrained": sample(model, tokenizer, SAMPLE_PROMPTS, 48, 48, 8)}

    # 5. SFT: verse continuation in the chat format.
    card_trainer, sft_eval = trainer, None
    if args.sft_steps:
        sft_train = continuation_pairs([chapters[i] for i in order if i not in held_out], args.sft_steps * 16, rng)
        sft_eval_set = continuation_pairs([chapters[i] for i in sorted(held_out)], 64, rng)
        sft_args = LLaDATrainingArguments(
            output_dir=str(args.work_dir / "sft"),
            per_device_train_batch_size=16,
            per_device_eval_batch_size=16,
            learning_rate=args.learning_rate / 4,
            warmup_steps=max(1, args.sft_steps // 10),
            max_steps=args.sft_steps,
            **common,
        )
        sft_trainer = LLaDATrainer(
            model=model,
            args=sft_args,
            train_dataset=sft_train,
            eval_dataset=sft_eval_set,
            data_collator=LLaDASFTCollator(tokenizer, max_length=args.seq_len),
            callbacks=[TimeLimit(args.minutes - (time.monotonic() - start) / 60)],
        )
        sft_trainer.train()
        sft_eval = sft_trainer.evaluate()["eval_loss"]
        print(f"SFT: {sft_trainer.state.global_step} steps, eval loss {sft_eval:.4f}")
        samples["final"] = sample(model, tokenizer, SAMPLE_PROMPTS, 48, 48, 8)

    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "And God said, Let there be light:"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(chat["input_ids"], max_new_tokens=32, steps=32, block_length=8)
    samples["chat"] = [tokenizer.decode(out[0, chat["input_ids"].shape[1] :], skip_special_tokens=True)]

    # 6. Save: bfloat16 weights (loaded back as float32 on the CPU), tokenizer, generation defaults, card.
    output = args.output
    if output.exists():
        shutil.rmtree(output)
    model.generation_config.update(
        max_new_tokens=64,
        steps=64,
        block_length=8,
        temperature=0.0,
        eot_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
    )
    model.to(torch.bfloat16).save_pretrained(output)
    # The package provides the code: no copies of the hub-core files and no auto_map pointing at them (`llada push`
    # adds both to an upload).
    for name in HUB_CORE_FILES:
        (output / name).unlink(missing_ok=True)
    config_path = output / "config.json"
    config_dict = json.loads(config_path.read_text())
    config_dict.pop("auto_map", None)
    # The weights are stored in bfloat16 (a small package), the config asks for float32: what `from_pretrained`
    # without a dtype gives, and what every CPU user of the demo gets.
    config_dict["dtype"] = "float32"
    config_path.write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(output)
    trainer.state.save_to_json(str(output / "trainer_state.json"))
    description = (
        "The demo model of the `llada` package: a small LLaDA masked diffusion language model trained on the King "
        "James Bible with this package's tokenizer trainer and `LLaDATrainer` (`examples/train_demo_model.py`). "
        "It writes text that reads like the King James Bible; it knows nothing else."
    )
    data = TRAINING_DATA if args.corpus is None else f"{args.corpus.name}"
    data += f" Learning rate: 5% warmup, then cosine decay over a {pretrain_minutes:.0f}-minute wall-time budget."
    if chats:
        data += f" {len(chats):,} chat-format documents (user: a verse; assistant: the next verse) mixed in."
    if args.sft_steps:
        data += (
            f" Then {sft_trainer.state.global_step} SFT steps on verse continuation in the chat format (user: a verse;"
            f" assistant: the next verse), evaluation loss {sft_eval:.4f}."
        )
    write_model_card(
        output,
        repo_id="llada-demo-kjv",
        trainer=card_trainer,
        training_data=data + f" Held-out pretraining evaluation loss {pretrain_eval:.4f}.",
        description=description,
        example_prompt="In the beginning",
    )
    (args.work_dir / "samples.json").parent.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "samples.json").write_text(json.dumps(samples, indent=2))
    size = sum(p.stat().st_size for p in output.iterdir()) / 2**20
    print(f"saved {output} ({size:.1f} MiB) in {(time.monotonic() - start) / 60:.1f} min")
    for stage, texts in samples.items():
        for text in texts:
            print(f"[{stage}] {text!r}")
    final_loss = next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None)
    print(f"final logged training loss: {final_loss}")
    print(f"perplexity bound (held out): {math.exp(pretrain_eval):.1f}")


if __name__ == "__main__":
    main()
