"""`llada train pretrain|sft|vrpo`: train a LLaDA model from local files with `LLaDATrainer` (`LLaDAVRPOTrainer`).

```
llada train pretrain --data corpus/*.txt --tokenizer tok/ --d-model 256 --n-layers 4 --output-dir runs/tiny
llada train sft --data chats.jsonl --model runs/tiny --max-length 512 --lora --output-dir runs/tiny-sft
llada train vrpo --data prefs.jsonl --model runs/tiny-sft --beta 0.1 --output-dir runs/tiny-vrpo
llada train pretrain ... --resume              # continue from the newest checkpoint in --output-dir
python -m llada.training.cli pretrain ...      # the same without the main `llada` command
```

Multi-GPU: `accelerate launch -m llada.training.cli pretrain ...` (DDP; FSDP through `--fsdp` options of
`TrainingArguments` is not exposed here: use `LLaDATrainer` directly for it).
"""

import argparse
import json
import logging
import math
import os
from pathlib import Path

logger = logging.getLogger(__name__)

OBJECTIVES = {
    "pretrain": "Pretrain on text: documents packed into rows of --max-length tokens, every token maskable.",
    "sft": "Supervised fine-tuning on chats (`messages`) or `prompt`/`response` records: prompts never masked.",
    "vrpo": "Preference optimization (VRPO, LLaDA 1.5) on `prompt`/`chosen`/`rejected` records (trl's DPO shapes).",
}
# LLaDA's peak rates; VRPO: trl DPO's default
DEFAULT_LEARNING_RATE = {"pretrain": 4e-4, "sft": 2.5e-5, "vrpo": 1e-6}
SIZE_FLAGS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size")

#: Default --max-length (capped at the model's max_sequence_length).
DEFAULT_MAX_LENGTH = 512


def _add_arguments(parser: argparse.ArgumentParser, objective: str):
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="Training files: .txt/.md, .jsonl, .json, or a `datasets` folder saved with save_to_disk.",
    )
    data.add_argument("--eval-data", nargs="+", help="Evaluation files (same formats); reports eval_loss.")
    data.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="Row length (pretrain) or longest sample (sft); default: 512, capped at the model's max_sequence_length.",
    )
    if objective == "pretrain":
        data.add_argument("--text-field", default="text", help="Key of the text in JSON records.")
        data.add_argument(
            "--document-mask",
            action="store_true",
            help="Attend only within each document of a packed row (documents end at EOS); positions restart.",
        )
    if objective == "sft":
        data.add_argument(
            "--packing",
            action="store_true",
            help="Pack several samples into each row of --max-length; each sample attends only to itself.",
        )
    if objective == "vrpo":
        vrpo = parser.add_argument_group("VRPO")
        vrpo.add_argument("--beta", type=float, default=0.1, help="Temperature of the preference loss (trl: 0.1).")
        vrpo.add_argument("--mc-budget", type=int, default=8, help="Monte Carlo samples per ELBO estimate (n).")
        vrpo.add_argument(
            "--mc-timesteps", type=int, help="Timesteps n_t per estimate (default n: the optimal allocation)."
        )
        vrpo.add_argument(
            "--no-antithetic", action="store_true", help="Draw the reference's masks independently (comparison)."
        )
        vrpo.add_argument("--elbo-estimator", choices=("timestep", "mask_count"), default="timestep")

    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", help="A LLaDA checkpoint folder to start from (sft, vrpo default: the embedded demo model)."
    )
    model.add_argument("--config", help="A config.json for a fresh model (instead of --model).")
    model.add_argument("--tokenizer", help="Tokenizer folder; defaults to the --model folder.")
    model.add_argument("--d-model", type=int, help="Fresh model: hidden size.")
    model.add_argument("--n-layers", type=int, help="Fresh model: blocks.")
    model.add_argument("--n-heads", type=int, help="Fresh model: attention heads.")
    model.add_argument("--n-kv-heads", type=int, help="Fresh model: key/value heads (defaults to --n-heads).")
    model.add_argument("--mlp-hidden-size", type=int, help="Fresh model: MLP inner size (defaults to ~8/3 d_model).")
    model.add_argument("--attn-implementation", default="sdpa", help="sdpa, eager, flash_attention_2, ...")

    train = parser.add_argument_group("training")
    train.add_argument("--output-dir", required=True, help="Checkpoints, logs and the final model.")
    train.add_argument("--batch-size", type=int, default=8, help="Rows per device per micro-batch.")
    train.add_argument("--gradient-accumulation-steps", type=int, default=1)
    train.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE[objective])
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--warmup-steps", type=int, default=0)
    train.add_argument("--lr-scheduler", default="cosine", help="TrainingArguments.lr_scheduler_type.")
    train.add_argument("--max-steps", type=int, default=-1, help="Optimizer steps (overrides --epochs).")
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--save-steps", type=int, default=500, help="Checkpoint every this many steps.")
    train.add_argument("--save-total-limit", type=int, default=3, help="Keep this many checkpoints.")
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--eval-steps", type=int, help="Evaluate every this many steps (with --eval-data).")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--bf16", action="store_true", help="bfloat16 autocast.")
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument("--compile", action="store_true", help="torch.compile the model.")
    train.add_argument("--mask-eps", type=float, default=1e-3, help="p = (1 - eps) t + eps.")
    train.add_argument(
        "--random-length-prob",
        type=float,
        default=0.01 if objective == "pretrain" else 0.0,
        help="Probability of cutting a pretraining batch to a random length.",
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="Resume from a checkpoint folder, or (no value) from the newest checkpoint in --output-dir.",
    )
    train.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--lora", action="store_true", help="Train LoRA adapters on the block layers only.")
    lora.add_argument("--lora-r", type=int, default=16)
    lora.add_argument("--lora-alpha", type=int, help="Defaults to 2 * r.")
    lora.add_argument("--lora-dropout", type=float, default=0.0)
    lora.add_argument("--merge-lora", action="store_true", help="Also save the merged model to <output-dir>/merged.")


def _add_commands(commands) -> None:
    for objective, description in OBJECTIVES.items():
        parser = commands.add_parser(objective, help=description, description=description)
        _add_arguments(parser, objective)
        parser.set_defaults(func=command, objective=objective)


def add_train_subparser(subparsers) -> argparse.ArgumentParser:
    """Add `train pretrain|sft|vrpo` to a `llada` command's subparsers; each sets `args.func(args)` (returns 0)."""
    train = subparsers.add_parser(
        "train",
        help="Pretrain or fine-tune a LLaDA model.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_commands(train.add_subparsers(dest="train_command", required=True, metavar="{pretrain,sft,vrpo}"))
    return train


# ---- building the pieces -----------------------------------------------------------------------------------------


def _load_tokenizer(args):
    from transformers import AutoTokenizer

    source = args.tokenizer or args.model
    if source is None:
        raise ValueError("Pass --tokenizer PATH (a fresh model has no tokenizer of its own).")
    return AutoTokenizer.from_pretrained(source)


def _fresh_config(args, tokenizer):
    from .. import LLaDAConfig
    from .tokenizer import special_token_ids

    eos, mask = special_token_ids(tokenizer)
    sizes = {name: getattr(args, name) for name in SIZE_FLAGS if getattr(args, name) is not None}
    values = json.loads(Path(args.config).read_text()) if args.config else {"rope_theta": 10000.0}
    values.update(sizes)
    # defaults sized from d_model (LLaDAConfig's own defaults describe the 8B model)
    d_model = values.setdefault("d_model", 256)
    values.setdefault("n_layers", 4)
    values.setdefault("n_heads", max(1, d_model // 64))
    values.setdefault("n_kv_heads", values["n_heads"])
    values.setdefault("mlp_hidden_size", 64 * math.ceil(8 * d_model / 3 / 64))
    values.setdefault("max_sequence_length", max(args.max_length or DEFAULT_MAX_LENGTH, 256))
    vocab = len(tokenizer)
    values.setdefault("vocab_size", vocab)
    values.setdefault("embedding_size", 64 * math.ceil(vocab / 64))
    values.update(mask_token_id=mask, eos_token_id=eos, pad_token_id=eos)
    if tokenizer.bos_token_id is not None:
        values["bos_token_id"] = tokenizer.bos_token_id
    return LLaDAConfig(**values)


def build_model(args, tokenizer):
    """The model to train: from --model, or fresh from --config / the size flags; checked against the tokenizer."""
    import torch

    from .. import LLaDAModelLM

    if args.model and (args.config or any(getattr(args, name) is not None for name in SIZE_FLAGS)):
        raise ValueError("Pass either --model (a checkpoint) or --config / size flags (a fresh model), not both.")
    if args.model:
        import warnings

        from ..modeling_llada import LLaDAMissingWeightsWarning

        with warnings.catch_warnings():
            # Weights that do not cover the model would train from random layers: an error, never a warning.
            warnings.simplefilter("error", LLaDAMissingWeightsWarning)
            # float32 master weights; --bf16 trains under autocast
            model = LLaDAModelLM.from_pretrained(
                args.model, dtype=torch.float32, attn_implementation=args.attn_implementation
            )
    else:
        model = LLaDAModelLM._from_config(_fresh_config(args, tokenizer), attn_implementation=args.attn_implementation)
    config = model.config
    if args.max_length is None:
        args.max_length = min(DEFAULT_MAX_LENGTH, config.max_sequence_length)
    if len(tokenizer) > config.padded_vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model only {config.padded_vocab_size} embeddings; "
            "use the model's own tokenizer."
        )
    if args.max_length > config.max_sequence_length:
        raise ValueError(
            f"--max-length ({args.max_length}) exceeds the model's max_sequence_length ({config.max_sequence_length})."
        )
    if args.lora:
        from peft import get_peft_model

        from .lora import llada_lora_config

        moe = getattr(model.config, "num_experts", None) is not None  # LLaDA-MoE: its own layer names
        model = get_peft_model(model, llada_lora_config(args.lora_r, args.lora_alpha, args.lora_dropout, moe=moe))
        model.print_trainable_parameters()
    return model


def build_datasets(args, tokenizer, config):
    """(train, eval or None) examples and the collator for the objective."""
    from .collators import LLaDAPretrainingCollator, LLaDASFTCollator
    from .data import packed_pretraining_rows, read_documents, read_records
    from .preference import LLaDAPreferenceCollator

    eos, mask = config.eos_token_id, config.mask_token_id
    if args.objective == "pretrain":

        def load(paths):
            documents = read_documents(paths, args.text_field)
            return packed_pretraining_rows(documents, tokenizer, args.max_length, eos, mask)

        collator = LLaDAPretrainingCollator(
            tokenizer,
            args.max_length,
            packed=True,
            eos_token_id=eos,
            mask_token_id=mask,
            document_mask=args.document_mask,
        )
    else:

        def load(paths):
            return read_records(paths)

        if args.objective == "vrpo":
            collator = LLaDAPreferenceCollator(tokenizer, args.max_length, eos_token_id=eos, mask_token_id=mask)
        else:
            collator = LLaDASFTCollator(
                tokenizer, args.max_length, eos_token_id=eos, mask_token_id=mask, packing=args.packing
            )
    train = load(args.data)
    if not train:
        raise ValueError(f"No training examples in {args.data}.")
    if args.objective != "pretrain":  # fail on a bad record now, not in the middle of the run
        for index, example in enumerate(train):
            collator.encode(example, index)
    evaluation = load(args.eval_data) if args.eval_data else None
    return train, evaluation, collator


def training_arguments(args):
    import torch

    from .arguments import CHECKPOINTING_ARGUMENT, LLaDATrainingArguments

    evaluate = bool(args.eval_data)
    arguments_class, extra = LLaDATrainingArguments, {}
    if args.objective == "vrpo":
        from .vrpo import LLaDAVRPOConfig

        arguments_class = LLaDAVRPOConfig
        extra = dict(
            beta=args.beta,
            mc_budget=args.mc_budget,
            mc_timesteps=args.mc_timesteps,
            antithetic=not args.no_antithetic,
            elbo_estimator=args.elbo_estimator,
        )
    return arguments_class(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=(args.eval_steps or args.save_steps) if evaluate else None,
        seed=args.seed,
        bf16=args.bf16,
        torch_compile=args.compile,
        mask_eps=args.mask_eps,
        random_length_prob=args.random_length_prob,
        disable_tqdm=args.no_progress,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to="none",
        **{CHECKPOINTING_ARGUMENT: args.gradient_checkpointing},
        **extra,
    )


def _resume_point(args):
    from .checkpoints import resolve_resume_checkpoint

    if args.resume is None:
        return None
    if args.resume == "latest":
        return resolve_resume_checkpoint(True, args.output_dir)
    if not os.path.isdir(args.resume):
        raise ValueError(f"--resume: checkpoint folder {args.resume} does not exist.")
    return resolve_resume_checkpoint(args.resume, args.output_dir)


def run(args) -> dict:
    """Run `llada train pretrain|sft|vrpo` with parsed arguments; returns the training metrics."""
    from .trainer import LLaDATrainer
    from .vrpo import LLaDAVRPOTrainer

    fresh = args.config or any(getattr(args, name) is not None for name in SIZE_FLAGS)
    if args.objective in ("sft", "vrpo") and not args.model and not fresh:
        from ..cli import DEMO_MODEL_DIR

        args.model = str(DEMO_MODEL_DIR)  # like every other command: the embedded demo model by default
    resume = _resume_point(args)
    tokenizer = _load_tokenizer(args)
    model = build_model(args, tokenizer)
    config = model.config
    train, evaluation, collator = build_datasets(args, tokenizer, config)
    trainer_class = LLaDAVRPOTrainer if args.objective == "vrpo" else LLaDATrainer
    trainer = trainer_class(
        model=model,
        args=training_arguments(args),
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collator,
        processing_class=tokenizer,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)  # the model (or the adapters) and the tokenizer
    metrics = dict(result.metrics)
    if evaluation is not None:
        metrics.update(trainer.evaluate())
    if args.lora and args.merge_lora and trainer.is_world_process_zero():
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(Path(args.output_dir) / "merged")
        tokenizer.save_pretrained(Path(args.output_dir) / "merged")
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
        print(json.dumps(metrics, indent=2))
    return metrics


def command(args) -> int:
    """The `args.func` of `llada train pretrain|sft|vrpo`: run, exit status 0."""
    run(args)
    return 0


def main(argv: list[str] | None = None) -> dict:
    """`python -m llada.training.cli`: returns the training metrics; bad input exits with status 2 and one line."""
    parser = argparse.ArgumentParser(
        prog="python -m llada.training.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_commands(parser.add_subparsers(dest="train_command", required=True, metavar="{pretrain,sft,vrpo}"))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
