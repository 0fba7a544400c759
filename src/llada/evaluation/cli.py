"""`llada eval`: bound-based perplexity and lm-evaluation-harness runs.

    llada eval ppl --model PATH --data FILE [--mc-num 128] [--context-length 0] [--estimator stratified]
    llada eval lm-eval --model llada --model_args pretrained=PATH,mc_num=128 --tasks arc_easy [lm-eval options]

Also runnable as `python -m llada.evaluation.cli ppl ...`. `ppl` reads a text file (the whole file is one document)
or a JSON-lines file (`.jsonl`: one document per line, its `text` field), tokenizes each document without special
tokens and prints a JSON line with the perplexity (see `llada.evaluation.perplexity` for the definition).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_documents(path: str) -> list[str]:
    """The documents of a text file (one) or a `.jsonl` file (the `text` field of each line)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if file.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if "text" not in record:
                raise ValueError(f"{path}:{number} has no 'text' field; each line must be {{\"text\": ...}}")
            docs.append(record["text"])
        return docs
    return [file.read_text(encoding="utf-8")]


def cmd_ppl(args) -> int:
    import torch

    from ..cli import load_model
    from .perplexity import bound_perplexity

    model, tokenizer = load_model(args)
    documents = [tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in read_documents(args.data)]
    documents = [doc for doc in documents if doc]
    if not documents:
        raise ValueError(f"data file {args.data} holds no text to score")
    result = bound_perplexity(
        model,
        documents,
        mc_num=args.mc_num,
        chunk_length=args.chunk_length,
        context_length=args.context_length,
        estimator=args.estimator,
        generator=torch.Generator().manual_seed(args.seed),
        progress=not args.no_progress,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
    )
    print(
        json.dumps(
            {
                "perplexity": result.perplexity,
                "nll_per_token": result.nll_per_token,
                "log_likelihood": result.log_likelihood,
                "tokens": result.num_tokens,
                "chunks": result.num_chunks,
                "mc_num": args.mc_num,
                "estimator": args.estimator,
            }
        )
    )
    return 0


def cmd_lm_eval(args) -> int:
    try:
        from .lm_eval_model import main as lm_eval_main
    except ImportError as error:
        raise ValueError(f"lm-eval is not installed ({error}); install it with: pip install 'llada[eval]'") from error
    lm_eval_main(args.lm_eval_args)
    return 0


def add_eval_subparser(subparsers) -> argparse.ArgumentParser:
    """Adds `eval` (with `ppl` and `lm-eval`) to the `llada` command's subparsers."""
    parser = subparsers.add_parser("eval", help="evaluate with the diffusion likelihood or generation")
    commands = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", required=True)

    from ..cli import model_options

    ppl = commands.add_parser("ppl", parents=[model_options()], help="bound-based perplexity of a text file")
    ppl.add_argument("--data", required=True, help="a text file, or a .jsonl file with a 'text' field per line")
    ppl.add_argument("--mc-num", type=int, default=128, help="Monte Carlo rows per chunk (default: 128)")
    ppl.add_argument("--estimator", choices=("stratified", "published"), default="stratified")
    ppl.add_argument("--chunk-length", type=int, help="tokens per chunk (default: max length - context length)")
    ppl.add_argument("--context-length", type=int, default=0, help="preceding tokens given to each chunk (0)")
    ppl.add_argument("--batch-size", type=int, default=16, help="stratification group of the published estimator")
    ppl.add_argument("--max-batch-tokens", type=int, default=8192, help="tokens per forward pass (default: 8192)")
    ppl.add_argument("--seed", type=int, default=0)
    ppl.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ppl.set_defaults(func=cmd_ppl)

    lm_eval = commands.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness with the `llada` model registered",
        description="Everything after `lm-eval` goes to lm-eval's command line, e.g. --model llada --model_args "
        "pretrained=PATH,mc_num=128 --tasks arc_easy.",
    )
    lm_eval.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    lm_eval.set_defaults(func=cmd_lm_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m llada.evaluation.cli ppl ...`: the `llada eval` commands on their own."""
    from ..cli import main as llada_main

    return llada_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
