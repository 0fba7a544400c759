"""`llada`: the command line.

    llada generate "In the beginning"          # the embedded demo model, on the CPU, in seconds
    llada generate --show-steps "And God said"  # watch the canvas being unmasked
    llada chat                                  # multi-turn, with the tokenizer's chat template
    llada infill "And God said, Let there be [MASK:3]: and there was light."
    llada info --model GSAI-ML/LLaDA-8B-Instruct
    llada push me/my-llada --model ./out
    llada train ... / llada eval ...            # from llada.training.cli / llada.evaluation.cli

User mistakes (a missing model folder, a Hub id while offline, a prompt too long for the model, a tokenizer without
chat template, invalid sampler settings) print one line on stderr and exit with status 1; set `LLADA_DEBUG=1` to
see the traceback instead. Heavy modules (torch, transformers) are imported only by the command that runs.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import warnings
from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).parent / "demo" / "model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Placeholders `llada infill` replaces with mask tokens: `[MASK]` (one token), `[MASK:n]` (n tokens), `<|mdm_mask|>`.
_PLACEHOLDER = re.compile(r"\[MASK(?::(\d+))?\]|<\|mdm_mask\|>")
#: Subcommands owned by other modules: (name, module, function that adds the subparser, one-line help).
_PLUGINS = (
    ("train", "llada.training.cli", "add_train_subparser", "pretrain or fine-tune (SFT, LoRA) with LLaDATrainer"),
    ("eval", "llada.evaluation.cli", "add_eval_subparser", "evaluate with the diffusion likelihood or generation"),
)


class CLIError(Exception):
    """A mistake of the user: printed as one line, exit status 1."""


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def resolve_model(name: str | None) -> tuple[str, bool]:
    """`(name, is_local)` for `--model`: the demo when None, a local folder, or something that can be a Hub id."""
    if name is None:
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise CLIError(
                f"the embedded demo model is missing from this installation ({DEMO_MODEL_DIR}); remake it with "
                "examples/train_demo_model.py or pass --model"
            )
        return str(DEMO_MODEL_DIR), True
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            if (path / "adapter_config.json").is_file():
                hint = " (merged model in its merged/ folder)" if (path / "merged" / "config.json").is_file() else ""
                raise CLIError(
                    f"{name} holds a LoRA adapter, not a model{hint}; pass the merged model, or merge with "
                    "`llada train sft ... --lora --merge-lora`"
                )
            raise CLIError(f"{name} is a folder without config.json; pass a folder written by save_pretrained")
        return str(path), True
    if path.exists():
        raise CLIError(f"{name} is a file; --model takes a model folder or a Hub id (user/name)")
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise CLIError(f"model path {name} does not exist")
    return name, False


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


#: Files of which a model folder needs one to have a tokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_model(args, need_chat_template: bool = False):
    """Model and tokenizer for `--model/--device/--dtype`, in eval mode."""
    name, local = resolve_model(args.model)
    if local:
        import json

        try:
            model_type = json.loads((Path(name) / "config.json").read_text()).get("model_type")
        except (ValueError, AttributeError) as error:
            raise CLIError(f"{Path(name) / 'config.json'} is not a valid JSON object: {error}") from error
        if model_type != "llada":
            raise CLIError(f"{name} holds a {model_type!r} model, not a LLaDA one (model_type 'llada')")

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .modeling_llada import LLaDAMissingWeightsWarning, LLaDAModelLM

    hf_logging.set_verbosity_error()
    if not sys.stderr.isatty():  # progress bars only on a terminal
        hf_logging.disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device_type = torch.device(device).type
    except RuntimeError as error:
        raise CLIError(
            f"--device {device!r} is not a device: {_first_line(error)}; use cpu, cuda, cuda:1, mps"
        ) from error
    if device_type == "meta":
        raise CLIError("--device meta holds no weights (shapes only) and cannot generate; use cpu, cuda or mps")
    if local and not any((Path(name) / f).is_file() for f in _TOKENIZER_FILES):
        raise CLIError(
            f"{name} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); save it there with "
            "tokenizer.save_pretrained(folder)"
        )
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    dtype = dtypes.get(args.dtype) or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        if need_chat_template and not getattr(tokenizer, "chat_template", None):
            raise CLIError(
                f"the tokenizer of {name} has no chat template, so turns cannot be formatted; use `llada generate`, "
                "or a model whose tokenizer defines tokenizer.chat_template"
            )
        with warnings.catch_warnings():
            # Weights that do not cover the model would leave random parameters: an error here, never a random model.
            warnings.simplefilter("error", LLaDAMissingWeightsWarning)
            model = LLaDAModelLM.from_pretrained(name, dtype=dtype)
    except LLaDAMissingWeightsWarning as warning:
        raise CLIError(str(warning).removeprefix("LLaDA: ")) from warning
    except OSError as error:
        if local:
            raise CLIError(f"cannot load the model in {name}: {_first_line(error)}") from error
        if _offline():
            raise CLIError(
                f"{name} is not a local folder and is not in the Hugging Face cache, and the Hub cannot be reached "
                "in offline mode (HF_HUB_OFFLINE=1); download it once online or pass a local folder"
            ) from error
        raise CLIError(f"cannot load {name} from the Hub: {_first_line(error)}") from error
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as error:
        raise CLIError(f"cannot use device {device!r}: {_first_line(error)}") from error
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------

#: `(flag, keyword of generate, type, help)`; `None` defaults leave the model's generation_config in charge.
_SAMPLER_OPTIONS = (
    ("--max-new-tokens", "max_new_tokens", int, "canvas length: tokens generated after the prompt"),
    ("--steps", "steps", int, "denoising steps over the whole canvas (split evenly over the blocks)"),
    ("--block-length", "block_length", int, "tokens per semi-autoregressive block; must divide --max-new-tokens"),
    ("--temperature", "temperature", float, "0 is greedy; > 0 samples with Gumbel noise"),
    ("--remasking", "remasking", str, "which predictions to keep: low_confidence, random, margin, entropy"),
    ("--cfg-scale", "cfg_scale", float, "classifier-free guidance weight (0 disables it)"),
    ("--kv-cache", "kv_cache", str, "none, prefix or dual: reuse keys/values outside the current block (approximate)"),
    ("--threshold", "threshold", float, "parallel decoding: also unmask every position with confidence >= this"),
    ("--factor", "factor", float, "parallel decoding, factor rule (exclusive with --threshold)"),
)
_SAMPLER_FLAGS = (
    ("--early-exit", "early_exit", "stop at a block boundary once every row has ended (EOS/EoT)"),
    ("--logits-eos-inf", "logits_eos_inf", "never propose EOS (published option)"),
    ("--confidence-eos-eot-inf", "confidence_eos_eot_inf", "unmask EOS/EoT proposals last (published option)"),
)


def sampler_kwargs(args) -> dict:
    """The sampler options given on the command line (the others come from the model's generation config)."""
    names = [keyword for _, keyword, _, _ in _SAMPLER_OPTIONS] + [keyword for _, keyword, _ in _SAMPLER_FLAGS]
    kwargs = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if kwargs.get("kv_cache") == "none":
        kwargs["kv_cache"] = None  # explicit: the exact path, even when the saved config names a cache
    return kwargs


def _check_length(model, prompt_length: int, max_new_tokens: int, what: str = "the prompt"):
    limit = model.config.max_sequence_length
    if prompt_length + max_new_tokens > limit:
        raise CLIError(
            f"{what} is {prompt_length} tokens and --max-new-tokens is {max_new_tokens}: "
            f"{prompt_length + max_new_tokens} exceeds the model's max_sequence_length ({limit}); shorten it or lower "
            "--max-new-tokens"
        )


def _progress_streamer(total: int):
    """A streamer that advances a progress bar on stderr at every denoising step (hidden when not a terminal)."""
    from tqdm.auto import tqdm

    from .streaming import LLaDADiffusionStreamer

    class ProgressStreamer(LLaDADiffusionStreamer):
        def __init__(self):
            self.bar = tqdm(total=total, desc="denoising", unit="step", file=sys.stderr, leave=False, disable=None)

        def on_step(self, canvas, step, prompt_length):
            self.bar.update(1)

        def end(self):
            self.bar.close()

    return ProgressStreamer()


def _fit_schedule(kwargs: dict, config) -> None:
    """With --max-new-tokens but no --steps, derive steps (and block length, unless given) that fit the new canvas:
    the saved blocks' length where it divides it (else its largest divisor below), and the saved steps per token,
    rounded to a multiple of the number of blocks."""
    new = kwargs.get("max_new_tokens")
    if not new or "steps" in kwargs:
        return
    block = kwargs.get("block_length") or config.block_length or new
    if "block_length" not in kwargs and new % block:
        block = max(d for d in range(1, min(block, new) + 1) if new % d == 0)
        kwargs["block_length"] = block
    blocks = new // block if new % block == 0 else 1  # a given block length that does not divide: generate says so
    per_token = (config.steps or config.max_new_tokens or new) / (config.max_new_tokens or new)
    kwargs["steps"] = max(blocks, round(new * per_token / blocks) * blocks)


def run_generate(model, tokenizer, input_ids, args, show_prompt: bool, **overrides):
    """`model.generate` with the command-line sampler options; returns the output ids `(1, total_length)`."""
    import torch

    from .streaming import LLaDATerminalStreamer

    kwargs = {**sampler_kwargs(args), **overrides}
    config = model.generation_config
    _fit_schedule(kwargs, config)
    mask_id = config.mask_token_id if config.mask_token_id is not None else model.config.mask_token_id
    if args.show_steps:
        streamer = LLaDATerminalStreamer(tokenizer, mask_id, stream=sys.stderr, show_prompt=show_prompt)
    else:
        max_new_tokens = kwargs.get("max_new_tokens", config.max_new_tokens) or 0
        total = kwargs.get("steps", config.steps) or max_new_tokens or int((input_ids == mask_id).sum())
        streamer = _progress_streamer(total)
    generator = None
    if args.seed is not None:
        torch.manual_seed(args.seed)
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
    try:
        return model.generate(input_ids.to(model.device), streamer=streamer, generator=generator, **kwargs)
    finally:
        if hasattr(streamer, "bar"):  # also when generate raised: leave no half-drawn bar
            streamer.bar.close()


def _max_new_tokens(model, args) -> int:
    value = args.max_new_tokens if args.max_new_tokens is not None else model.generation_config.max_new_tokens
    return int(value or 0)


def _read_text(value: str | None, what: str) -> str:
    """The positional text, or standard input when it is missing or `-`."""
    if value is None or value == "-":
        if sys.stdin is None:
            raise CLIError(f"no {what}: standard input is closed; pass the {what} as an argument")
        if sys.stdin.isatty():
            raise CLIError(f"no {what}: pass it as an argument or on standard input")
        value = _read_stdin(sys.stdin.read)
    if not value.strip():
        raise CLIError(f"the {what} is empty")
    return value.rstrip("\n")


def _read_stdin(read):
    """`read()` of standard input, with invalid UTF-8 as one clear error."""
    try:
        return read()
    except UnicodeDecodeError as error:
        raise CLIError(
            f"standard input is not valid UTF-8 (byte {error.object[error.start : error.start + 1]!r} at offset "
            f"{error.start}); convert it, e.g. with iconv -f latin1 -t utf-8"
        ) from error


def cmd_generate(args) -> int:
    prompt = _read_text(args.prompt, "prompt")
    model, tokenizer = load_model(args, need_chat_template=args.chat_template)
    from .generation_llada import decode_generation

    if args.chat_template:
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        input_ids = encoded["input_ids"]
    else:
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    _check_length(model, input_ids.shape[1], _max_new_tokens(model, args))
    output = run_generate(model, tokenizer, input_ids, args, show_prompt=not args.chat_template)
    text = decode_generation(tokenizer, output, prompt_length=input_ids.shape[1])[0]
    print(text if args.chat_template or args.no_echo else prompt + text)
    return 0


def cmd_chat(args) -> int:
    model, tokenizer = load_model(args, need_chat_template=True)
    from .generation_llada import decode_generation, stop_token_ids_of

    # A reply also ends where the model starts a new turn header.
    stops = stop_token_ids_of(tokenizer)
    if "<|start_header_id|>" in tokenizer.get_vocab():
        stops.append(tokenizer.convert_tokens_to_ids("<|start_header_id|>"))

    if sys.stdin is None:
        raise CLIError("standard input is closed; llada chat reads the turns from it")
    interactive = sys.stdin.isatty()
    base = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(base)
    if interactive:
        print("Chatting with the model; /reset starts over, /exit (or Ctrl-D) quits.", file=sys.stderr)
    while True:
        try:
            line = input("you> ") if interactive else _read_stdin(sys.stdin.readline)
        except EOFError:
            break
        if not interactive and line == "":
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            messages = list(base)
            print("(conversation cleared)", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": line})
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        input_ids = encoded["input_ids"]
        try:
            _check_length(model, input_ids.shape[1], _max_new_tokens(model, args), what="the conversation")
        except CLIError as error:
            messages.pop()
            if not interactive:
                raise
            print(f"llada: error: {error}; /reset to start over", file=sys.stderr)
            continue
        output = run_generate(model, tokenizer, input_ids, args, show_prompt=False)
        reply = decode_generation(tokenizer, output, prompt_length=input_ids.shape[1], stop_token_ids=stops)[0].strip()
        # Piped: one reply per line out, as one turn per line in.
        print(f"llada> {reply}" if interactive else " ".join(reply.split()), flush=True)
        messages.append({"role": "assistant", "content": reply})
    return 0


def encode_infill(tokenizer, text: str, mask_token_id: int) -> list[int]:
    """Token ids of `text` with each placeholder replaced by mask tokens: `[MASK]` is one, `[MASK:n]` n, and
    `<|mdm_mask|>` one. The text around them is tokenized piece by piece (the first piece with the tokenizer's
    special tokens, e.g. BOS)."""
    ids: list[int] = []
    position, first, masks = 0, True, 0
    for match in _PLACEHOLDER.finditer(text):
        # The space before a placeholder belongs to the word that fills it: BPE vocabularies attach leading spaces
        # to words, and a lone space token would leave the masks only word pieces.
        before = text[position : match.start()]
        ids += tokenizer(before.rstrip(" "), add_special_tokens=first)["input_ids"]
        count = int(match.group(1)) if match.group(1) else 1
        if count < 1:
            raise CLIError(f"{match.group(0)} asks for {count} tokens; use [MASK:n] with n >= 1")
        ids += [mask_token_id] * count
        masks += count
        position, first = match.end(), False
    if not masks:
        raise CLIError(
            "the text has no mask placeholder; write [MASK] (one token), [MASK:n] (n tokens) or <|mdm_mask|>"
        )
    if position < len(text):
        ids += tokenizer(text[position:], add_special_tokens=False)["input_ids"]
    return ids


def cmd_infill(args) -> int:
    text = _read_text(args.text, "text")
    model, tokenizer = load_model(args)
    import torch

    from .generation_llada import decode_generation

    mask_id = model.generation_config.mask_token_id
    if mask_id is None:
        mask_id = model.config.mask_token_id
    ids = encode_infill(tokenizer, text, mask_id)
    masks = ids.count(mask_id)
    max_new_tokens = args.max_new_tokens or 0
    _check_length(model, len(ids), max_new_tokens, what="the text")
    overrides = {"max_new_tokens": max_new_tokens}
    if args.steps is None:
        overrides["steps"] = masks + max_new_tokens
    if max_new_tokens and args.block_length is None:
        overrides["block_length"] = max_new_tokens
    output = run_generate(model, tokenizer, torch.tensor([ids]), args, show_prompt=True, **overrides)
    print(decode_generation(tokenizer, output, prompt_length=0)[0])
    return 0


# ----------------------------------------------------------------------------------------------------------------
# info, push
# ----------------------------------------------------------------------------------------------------------------


def count_parameters(config: dict) -> int:
    """Parameters of a LLaDA network from its config (exact for the implemented architecture)."""
    d, layers = config["d_model"], config["n_layers"]
    heads = config["n_heads"]
    kv_heads = config.get("n_kv_heads") or heads
    head_dim = d // heads
    hidden = config.get("mlp_hidden_size") or config.get("mlp_ratio", 4) * d
    rows = config.get("embedding_size") or config["vocab_size"]
    per_layer = 2 * d + d * heads * head_dim * 2 + 2 * d * kv_heads * head_dim + 3 * d * hidden
    head = 0 if config.get("weight_tying") else rows * d
    return rows * d + layers * per_layer + d + head


def _model_folder(args) -> tuple[str, Path]:
    """A local folder holding at least the JSON files of `--model` (downloading only those for a Hub id)."""
    name, local = resolve_model(args.model)
    if local:
        return name, Path(name)
    from huggingface_hub import snapshot_download

    try:
        return name, Path(snapshot_download(name, allow_patterns=["*.json", "*.jinja", "README.md"]))
    except Exception as error:  # offline, unknown repository, network: one line each
        if _offline():
            raise CLIError(
                f"{name} is not a local folder and the Hub cannot be reached in offline mode (HF_HUB_OFFLINE=1)"
            ) from error
        raise CLIError(f"cannot read {name} from the Hub: {_first_line(error)}") from error


def cmd_info(args) -> int:
    import json

    from .hub import CheckpointFacts, _generation_defaults, is_moe_config, moe_architecture_rows

    name, folder = _model_folder(args)
    facts = CheckpointFacts.from_folder(folder)
    config = facts.config
    if config.get("model_type") != "llada":
        raise CLIError(f"{name} holds a {config.get('model_type')!r} model, not a LLaDA one (model_type 'llada')")
    moe = is_moe_config(config)
    if facts.num_parameters is not None:
        parameters = facts.num_parameters
    else:
        parameters = None if moe else count_parameters(config)
    tokenizer_config = folder / "tokenizer_config.json"
    info = {
        "model": name,
        "parameters": parameters,
        "weights dtype": facts.dtype or config.get("dtype") or config.get("torch_dtype") or "unknown",
        "layers": config.get("n_layers"),
        "d_model": config.get("d_model"),
        "heads / kv heads": f"{config.get('n_heads')} / {config.get('n_kv_heads') or config.get('n_heads')}",
        "mlp_hidden_size": config.get("mlp_hidden_size"),
        "vocab_size / embedding_size": f"{config.get('vocab_size')} / {config.get('embedding_size')}",
        "max_sequence_length": config.get("max_sequence_length"),
        "rope_theta": config.get("rope_theta"),
        "weight_tying": config.get("weight_tying"),
        "special ids": {k: config.get(f"{k}_token_id") for k in ("mask", "eos", "pad", "bos")},
        "generation defaults": dict(_generation_defaults(facts.generation)),
        "tokenizer": "yes" if facts.has_tokenizer else "no",
        "chat template": "yes" if facts.chat_template else "no",
        "trust_remote_code files": "yes"
        if "auto_map" in config and (folder / "modeling_llada.py").is_file()
        else "no",
    }
    if moe:  # LLaDA-MoE: its own fields replace the dense ones
        rows = dict(moe_architecture_rows(config, facts))
        for key in ("layers", "d_model", "heads / kv heads", "mlp_hidden_size", "vocab_size / embedding_size"):
            info.pop(key)
        info["max_sequence_length"] = config.get("max_position_embeddings")
        info["weight_tying"] = config.get("tie_word_embeddings", False)
        skip = ("parameters", "weights dtype", "max sequence length", "RoPE theta", "mask token id")
        info.update({k: v for k, v in rows.items() if k not in skip})
        info["parameters"] = parameters
    if tokenizer_config.is_file() and not facts.has_tokenizer:
        info["tokenizer"] = "config only"
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "parameters" and value is None:
            value = "unknown"
        elif key == "parameters":
            value = f"{value:,} ({value / 1e6:.1f}M)" if value < 1e9 else f"{value:,} ({value / 1e9:.2f}B)"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_push(args) -> int:
    name, local = resolve_model(args.model)
    if not local:
        raise CLIError(f"llada push uploads a local folder; {name} is a Hub id (download it first)")
    from .hub import push_to_hub

    card = None
    if args.card is not None:
        if not Path(args.card).is_file():
            raise CLIError(f"card file {args.card} does not exist")
        card = Path(args.card).read_text(encoding="utf-8")
    info = push_to_hub(
        name,
        args.repo_id,
        card=card,
        commit_message=args.commit_message,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        create_pr=args.create_pr,
        endpoint=args.endpoint,
        base_model=args.base_model,
        datasets=args.dataset,
        license=args.license,
        tags=args.tag,
        training_data=args.training_data,
    )
    print(f"pushed {name} to {info.repo_url} (commit {info.oid[:12]})")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------------------------


def model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model")
    group.add_argument(
        "--model", help="model folder or Hub id (user/name); default: the embedded demo model (King James Bible)"
    )
    group.add_argument("--device", help="cpu, cuda, cuda:1, mps, ... (default: cuda when available, else cpu)")
    group.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="weights dtype (default: bfloat16 on GPU, float32 on CPU)",
    )
    return parent


def _sampler_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("sampler (defaults: the model's generation_config.json)")
    for flag, keyword, kind, text in _SAMPLER_OPTIONS:
        if keyword == "kv_cache":
            group.add_argument(flag, dest=keyword, choices=("none", "prefix", "dual"), help=text)
        else:
            group.add_argument(flag, dest=keyword, type=kind, metavar=kind.__name__.upper(), help=text)
    for flag, keyword, text in _SAMPLER_FLAGS:
        group.add_argument(flag, dest=keyword, action=argparse.BooleanOptionalAction, default=None, help=text)
    group.add_argument("--seed", type=_seed, help="random seed (for --temperature > 0 and --remasking random)")
    group.add_argument(
        "--show-steps", action="store_true", help="draw the canvas on stderr after every step, masks shown as ░"
    )
    return parent


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 2**63); pick a smaller seed")
    return value


def _plugin_unavailable(name: str, module: str):
    def run(args) -> int:
        raise CLIError(f"`llada {name}` is not available: {module} is missing from this installation")

    return run


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `llada` parser. `train` and `eval` come from their modules, imported only when that command runs."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="llada",
        description="LLaDA masked diffusion language models: generate, chat, infill, inspect, publish, train, "
        "evaluate.",
        epilog=__doc__.split("\n\n")[1],
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"llada {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    model, sampler = model_options(), _sampler_options()

    generate = commands.add_parser(
        "generate",
        parents=[model, sampler],
        help="continue a prompt (argument or stdin)",
        description="Continue a prompt with the reverse diffusion process and print the prompt and its continuation.",
        epilog='examples:\n  llada generate "In the beginning"\n  echo "Blessed are" | llada generate --steps 32\n'
        '  llada generate --model GSAI-ML/LLaDA-8B-Instruct --chat-template --max-new-tokens 128 "Why is the sky '
        'blue?"',
        formatter_class=formatter,
    )
    generate.add_argument("prompt", nargs="?", help="the prompt; read from stdin when missing or -")
    generate.add_argument(
        "--chat-template", action="store_true", help="send the prompt as a user turn through the chat template"
    )
    generate.add_argument("--no-echo", action="store_true", help="print only the continuation, not the prompt")
    generate.set_defaults(func=cmd_generate)

    chat = commands.add_parser(
        "chat",
        parents=[model, sampler],
        help="multi-turn conversation with the chat template",
        description="Talk with the model: each line you type is a user turn; /reset starts over, /exit quits. "
        "With a pipe on stdin, each line is a turn and each answer is printed on its own line.",
        formatter_class=formatter,
    )
    chat.add_argument("--system", help="a system message opening the conversation")
    chat.set_defaults(func=cmd_chat)

    infill = commands.add_parser(
        "infill",
        parents=[model, sampler],
        help="fill mask placeholders inside a text",
        description="Fill the placeholders of a text: [MASK] is one token, [MASK:n] n tokens, <|mdm_mask|> one. "
        "The rest of the text never changes. Prints the completed text.",
        epilog='example:\n  llada infill "And God said, Let there be [MASK:2] and there was light."',
        formatter_class=formatter,
    )
    infill.add_argument("text", nargs="?", help="the text with placeholders; read from stdin when missing or -")
    infill.set_defaults(func=cmd_infill)

    info = commands.add_parser(
        "info",
        parents=[model],
        help="config, parameter count, dtype, generation defaults",
        description="Describe a model without loading its weights (for a Hub id only the JSON files are downloaded).",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    push = commands.add_parser(
        "push",
        parents=[model],
        help="publish a model folder to the Hugging Face Hub with a model card",
        description="Upload a folder written by save_pretrained (default: the demo model) to the Hub in one commit: "
        "weights, config with auto_map, the modelling code for trust_remote_code, generation config, tokenizer and "
        "a generated model card (README.md).",
        epilog="example:\n  llada push me/llada-kjv-demo --dataset me/kjv --license apache-2.0",
        formatter_class=formatter,
    )
    push.add_argument("repo_id", help="user/name, or name (the token's namespace)")
    push.add_argument("--token", help="Hub token (default: the one from `hf auth login` or HF_TOKEN)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", help="branch to commit to")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--commit-message", help="default: 'Upload LLaDA model'")
    push.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    push.add_argument("--card", help="a README.md to publish instead of the generated card")
    card = push.add_argument_group("model card")
    card.add_argument("--base-model", help="Hub id of the model this one was fine-tuned from")
    card.add_argument("--dataset", action="append", help="Hub id of a training data set (repeatable)")
    card.add_argument("--license", default="apache-2.0", help="Hub license id (default: apache-2.0)")
    card.add_argument("--tag", action="append", help="extra tag (repeatable)")
    card.add_argument("--training-data", help="a sentence saying what the model was trained on")
    push.set_defaults(func=cmd_push)

    chosen = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, module, function, text in _PLUGINS:
        if name == chosen:
            import importlib

            try:
                add_subparser = getattr(importlib.import_module(module), function)
            except (ImportError, AttributeError):
                pass
            else:
                add_subparser(commands)
                continue
            commands.add_parser(name, help=text).set_defaults(func=_plugin_unavailable(name, module))
        else:  # listed in --help without importing the module
            commands.add_parser(name, help=text, add_help=False)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llada")
    except PackageNotFoundError:
        return "unknown"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _describe(error: BaseException) -> str:
    """One line for an error raised below a command."""
    if isinstance(error, CLIError):
        return str(error)
    name = type(error).__name__
    if name == "OfflineModeIsEnabled":
        return "the Hub cannot be reached in offline mode (HF_HUB_OFFLINE=1); unset it to use the Hub"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        return "the Hub refused the credentials (401): log in with `hf auth login` or pass --token"
    if status == 403:
        return "the Hub refused the request (403): the token has no write access to this repository"
    if isinstance(error, (ValueError, FileNotFoundError)):
        return _first_line(error)
    return f"{name}: {_first_line(error)}"


#: Commands whose remaining arguments belong to another program, unparsed: (command words, attribute).
_PASSTHROUGH = ((("eval", "lm-eval"), "lm_eval_args"),)


def _interrupted(signum, frame):
    """Ctrl-C: leave at once with status 130, quietly (no traceback, no atexit handlers of half-done work)."""
    try:
        sys.stderr.write("\n")
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    previous = _install_interrupt_handler()  # first: Ctrl-C during the heavy imports exits quietly
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _install_interrupt_handler():
    try:
        return signal.signal(signal.SIGINT, _interrupted)
    except ValueError:  # not the main thread (main() called from a thread): leave the handler alone
        return None


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    passed = {}
    for words, attribute in _PASSTHROUGH:
        if tuple(argv[: len(words)]) == words:
            argv, passed[attribute] = argv[: len(words)], argv[len(words) :]
    args = parser.parse_args(argv)
    for attribute, rest in passed.items():
        setattr(args, attribute, rest)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    if sys.stdout is None:  # `>&-`: the text would be lost while the command reports success
        if sys.stderr is not None:
            print("llada: error: standard output is closed; the result cannot be written", file=sys.stderr)
        return 1
    try:
        status = int(func(args) or 0)
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("LLADA_DEBUG"):
            raise
        print(f"llada: error: {_describe(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
