"""Model cards and publishing to the Hugging Face Hub.

`build_model_card` fills `templates/model_card.md` from a checkpoint (a model object or a saved folder): the YAML
metadata the Hub indexes (`library_name`, `pipeline_tag`, tags, license, base model, datasets), usage snippets for
this package and for `trust_remote_code`, the saved generation defaults and, for a model trained with
`LLaDATrainer` (or any `transformers.Trainer`), the training details read from `trainer.state` / `trainer.args` or
from a saved `trainer_state.json`.

`push_to_hub` stages everything a repository needs in a temporary folder first (weights, `config.json` with its
`auto_map`, the hub-core code files, `generation_config.json`, the tokenizer and `README.md`), so a failure while
saving uploads nothing, and then publishes the folder in a single commit.

Not hub core: this module may import anything; the hub-core files never import it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"

#: Tags every LLaDA card carries (user tags are added after these).
LLADA_TAGS = ("llada", "diffusion", "masked-diffusion", "text-generation")
DEFAULT_LICENSE = "apache-2.0"
DEFAULT_PROMPT = "The capital of France is"

# Files a Trainer leaves in a checkpoint folder that do not belong in a model repository.
_TRAINING_STATE_FILES = {"optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "training_args.bin"}
# Generation options shown in the usage snippet (with their package defaults when none are saved).
_SNIPPET_OPTIONS = {"max_new_tokens": 128, "steps": 128, "block_length": 32}
# Trainer arguments worth a line in the card, in this order (those present on the arguments object are shown).
_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "seed",
    "bf16",
    "fp16",
    "gradient_checkpointing",
)
# Generation settings shown in the card and by `llada info`, in this order.
_GENERATION_FIELDS = (
    "max_new_tokens",
    "steps",
    "block_length",
    "temperature",
    "remasking",
    "cfg_scale",
    "kv_cache",
    "threshold",
    "factor",
    "early_exit",
    "logits_eos_inf",
    "confidence_eos_eot_inf",
    "mask_token_id",
    "eos_token_id",
    "eot_token_id",
    "pad_token_id",
    "bos_token_id",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ----------------------------------------------------------------------------------------------------------------
# What a checkpoint says about itself
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CheckpointFacts:
    """What the card needs to know about a checkpoint, from a model object or a saved folder."""

    config: dict[str, Any]
    generation: dict[str, Any]
    num_parameters: int | None = None
    dtype: str | None = None
    has_tokenizer: bool = False
    chat_template: bool = False
    trainer_state: dict[str, Any] | None = None

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> CheckpointFacts:
        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{folder} has no config.json; pass a folder written by save_pretrained.")
        config = json.loads(config_path.read_text())
        generation_path = folder / "generation_config.json"
        generation = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
        num_parameters, dtype = _safetensors_size(folder)
        tokenizer_config = folder / "tokenizer_config.json"
        chat_template = (folder / "chat_template.jinja").is_file() or (
            tokenizer_config.is_file() and bool(json.loads(tokenizer_config.read_text()).get("chat_template"))
        )
        state_path = folder / "trainer_state.json"
        return cls(
            config=config,
            generation=generation,
            num_parameters=num_parameters,
            dtype=dtype,
            has_tokenizer=(folder / "tokenizer.json").is_file() or tokenizer_config.is_file(),
            chat_template=chat_template,
            trainer_state=json.loads(state_path.read_text()) if state_path.is_file() else None,
        )

    @classmethod
    def from_model(cls, model, tokenizer=None) -> CheckpointFacts:
        generation_config = getattr(model, "generation_config", None)
        generation = generation_config.to_diff_dict() if generation_config is not None else {}
        dtype = getattr(model, "dtype", None)
        return cls(
            config=model.config.to_dict(),
            generation=generation,
            num_parameters=sum(p.numel() for p in model.parameters()),
            dtype=str(dtype).removeprefix("torch.") if dtype is not None else None,
            has_tokenizer=tokenizer is not None,
            chat_template=bool(getattr(tokenizer, "chat_template", None)),
        )


def _safetensors_size(folder: Path) -> tuple[int | None, str | None]:
    """Parameter count and dtype of the safetensors weights in `folder`, read from the file headers only."""
    total, dtypes = 0, set()
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count
            dtypes.add(entry["dtype"])
    if not files:
        return None, None
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
    return total, "/".join(sorted(names.get(d, d) for d in dtypes))


def _format_count(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit} ({n:,})"
    return f"{n:,}"


def _hub_id_or_none(name: Any) -> str | None:
    """`name` when it looks like a Hub repository id (not a local path), else None."""
    if isinstance(name, str) and _HUB_ID.match(name) and not os.path.exists(name):
        return name
    return None


# ----------------------------------------------------------------------------------------------------------------
# Training details
# ----------------------------------------------------------------------------------------------------------------


def training_details(
    trainer=None,
    trainer_state: dict[str, Any] | None = None,
    training_args: Any = None,
    training_data: str | None = None,
) -> dict[str, Any] | None:
    """The "Training" section of the card: data, steps, losses and hyper-parameters.

    Args:
        trainer (`transformers.Trainer`, *optional*):
            A trainer after `train()` (e.g. `LLaDATrainer`); its `state` and `args` are read.
        trainer_state (`dict`, *optional*):
            The content of a saved `trainer_state.json`, used when no trainer is given.
        training_args (`TrainingArguments` or `dict`, *optional*):
            Overrides `trainer.args`.
        training_data (`str`, *optional*):
            A sentence saying what the model was trained on.

    Returns:
        `dict` with `summary`, `facts` and `hyperparameters` (lists of `(name, value)` pairs), or `None` when
        nothing is known about training.
    """
    state = None
    if trainer is not None:
        state = dataclasses.asdict(trainer.state) if dataclasses.is_dataclass(trainer.state) else vars(trainer.state)
        training_args = training_args if training_args is not None else trainer.args
    elif trainer_state is not None:
        state = trainer_state
    if state is None and training_args is None and training_data is None:
        return None

    facts: list[tuple[str, str]] = []
    if training_data:
        facts.append(("data", training_data))
    dataset = getattr(trainer, "train_dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        facts.append(("training samples", f"{len(dataset):,}"))
    steps = None
    if state:
        steps = state.get("global_step")
        if steps:
            facts.append(("optimizer steps", f"{steps:,}"))
        if state.get("epoch"):
            facts.append(("epochs", f"{state['epoch']:.2f}"))
        if state.get("num_input_tokens_seen"):
            facts.append(("tokens seen", f"{state['num_input_tokens_seen']:,}"))
        if state.get("train_batch_size"):
            facts.append(("batch size per device", str(state["train_batch_size"])))
        history = state.get("log_history") or []
        losses = [entry for entry in history if "loss" in entry]
        if losses:
            last = losses[-1]
            facts.append(("final training loss", f"{last['loss']:.4f} (step {last.get('step', '?')})"))
        averages = [entry["train_loss"] for entry in history if "train_loss" in entry]
        if averages:
            facts.append(("mean training loss", f"{averages[-1]:.4f}"))
        evals = [entry for entry in history if "eval_loss" in entry]
        if evals:
            facts.append(
                ("final evaluation loss", f"{evals[-1]['eval_loss']:.4f} (step {evals[-1].get('step', '?')})")
            )

    summary = "Trained"
    if trainer is not None:
        name = type(trainer).__name__
        base = next((c.__name__ for c in type(trainer).__mro__ if c.__module__.startswith("llada.")), name)
        summary = f"Trained with `{base}`" + (f" (subclass `{name}`)" if base != name else "")
    summary += f" for {steps:,} optimizer steps." if steps else "."
    # A trainer for another objective (e.g. `LLaDAVRPOTrainer`) describes its method in a paragraph of its own.
    method = trainer.model_card_method() if hasattr(trainer, "model_card_method") else None
    return {
        "summary": summary,
        "method": method,
        "facts": facts,
        "hyperparameters": _hyperparameters(training_args),
    }


def _hyperparameters(args: Any) -> list[tuple[str, str]]:
    if args is None:
        return []
    values = dict(args) if isinstance(args, dict) else {}
    if not values:
        values = {name: getattr(args, name) for name in _HYPERPARAMETERS if hasattr(args, name)}
        # Fields a subclass of TrainingArguments adds (e.g. the LLaDA objective) are all worth showing.
        if dataclasses.is_dataclass(args):
            from transformers import TrainingArguments

            base = {f.name for f in dataclasses.fields(TrainingArguments)}
            values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in base})
    rows = []
    for name, value in values.items():
        if value is None or (name in ("warmup_steps", "warmup_ratio") and not value):
            continue
        if name == "num_train_epochs" and (values.get("max_steps") or 0) > 0:
            continue  # max_steps decides the length of the run
        rows.append((name, str(getattr(value, "value", value))))
    world_size = getattr(args, "world_size", None)
    batch, accumulation = values.get("per_device_train_batch_size"), values.get("gradient_accumulation_steps")
    if isinstance(world_size, int) and batch and accumulation:
        rows.append(("total batch size", str(batch * accumulation * world_size)))
    return rows


# ----------------------------------------------------------------------------------------------------------------
# The card
# ----------------------------------------------------------------------------------------------------------------


def is_moe_config(config: dict) -> bool:
    """A LLaDA-MoE `config.json` (its `model_type` is "llada" like the dense model's)."""
    return "num_experts" in config or "LLaDAMoEModelLM" in (config.get("architectures") or ())


def moe_architecture_rows(config: dict, facts) -> list[tuple[str, object]]:
    """The model card's and `llada info`'s architecture rows of a LLaDA-MoE config."""
    layers = config.get("num_hidden_layers")
    freq = config.get("moe_layer_freq") or [1] * (layers or 0)
    heads = config.get("num_attention_heads")
    return [
        ("parameters", _format_count(facts.num_parameters)),
        ("weights dtype", facts.dtype or "unknown"),
        ("layers (MoE / dense)", f"{layers} ({sum(1 for f in freq if f)} / {sum(1 for f in freq if not f)})"),
        ("hidden size", config.get("hidden_size")),
        ("attention heads / key-value heads", f"{heads} / {config.get('num_key_value_heads') or heads}"),
        ("routed experts / per token", f"{config.get('num_experts')} / {config.get('num_experts_per_tok')}"),
        (
            "expert / shared expert / dense MLP width",
            f"{config.get('expert_intermediate_size')} / "
            f"{config.get('shared_expert_intermediate_size')} / {config.get('dense_intermediate_size')}",
        ),
        ("vocabulary", config.get("vocab_size")),
        ("max sequence length", config.get("max_position_embeddings")),
        ("RoPE theta", config.get("rope_theta")),
        ("mask token id", config.get("mask_token_id")),
    ]


def build_model_card(
    model_or_folder,
    *,
    repo_id: str | None = None,
    tokenizer=None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    license: str = DEFAULT_LICENSE,
    language: str | list[str] | None = "en",
    tags: list[str] | None = None,
    description: str | None = None,
    example_prompt: str = DEFAULT_PROMPT,
    trainer=None,
    training_args: Any = None,
    training_data: str | None = None,
) -> ModelCard:
    """Fill the LLaDA model card for a checkpoint.

    Args:
        model_or_folder (`LLaDAModelLM` or `str`/`os.PathLike`):
            A model object, or a folder written by `save_pretrained` (read without loading the weights).
        repo_id (`str`, *optional*):
            The repository the card will live in (used in the usage snippets); defaults to the folder name.
        tokenizer (*optional*):
            The tokenizer published with a model object (for a folder, its tokenizer files are looked at).
        base_model (`str` or `list[str]`, *optional*):
            Hub id(s) of the model this one was fine-tuned from; defaults to the `_name_or_path` of the config
            when it is a Hub id.
        datasets (`str` or `list[str]`, *optional*):
            Hub ids of the training data sets.
        license (`str`, *optional*, defaults to `"apache-2.0"`):
            Hub license identifier.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`):
        tags (`list[str]`, *optional*):
            Extra tags after `llada`, `diffusion`, `masked-diffusion`, `text-generation`.
        description (`str`, *optional*):
            The paragraph under the title.
        example_prompt (`str`, *optional*):
            Prompt of the usage snippets.
        trainer (`transformers.Trainer`, *optional*), training_args, training_data (`str`, *optional*):
            See [`training_details`]; without a trainer, a `trainer_state.json` in the folder is read.

    Returns:
        `huggingface_hub.ModelCard`: `str(card)` is the README; `card.data` holds the metadata.
    """
    if isinstance(model_or_folder, (str, os.PathLike)):
        facts = CheckpointFacts.from_folder(model_or_folder)
        default_name = Path(model_or_folder).resolve().name
    else:
        facts = CheckpointFacts.from_model(model_or_folder, tokenizer)
        default_name = "llada-model"
    repo_id = repo_id or default_name
    config = facts.config
    if config.get("model_type") not in (None, "llada"):
        raise ValueError(f"model_type is {config.get('model_type')!r}; build_model_card describes LLaDA models only.")

    if base_model is None:
        base_model = _hub_id_or_none(config.get("_name_or_path"))
        if base_model == repo_id:
            base_model = None
    all_tags = list(LLADA_TAGS) + [t for t in (tags or []) if t not in LLADA_TAGS]
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=all_tags,
        base_model=base_model,
        datasets=[datasets] if isinstance(datasets, str) else datasets,
    )

    generation_defaults = _generation_defaults(facts.generation)
    usage_kwargs = [
        (key, default if facts.generation.get(key) is None else facts.generation[key])
        for key, default in _SNIPPET_OPTIONS.items()
    ]
    kv_heads = config.get("n_kv_heads") or config.get("n_heads")
    if is_moe_config(config):
        architecture = moe_architecture_rows(config, facts)
    else:
        architecture = [
            ("parameters", _format_count(facts.num_parameters)),
            ("weights dtype", facts.dtype or "unknown"),
            ("layers", config.get("n_layers")),
            ("hidden size (`d_model`)", config.get("d_model")),
            ("attention heads / key-value heads", f"{config.get('n_heads')} / {kv_heads}"),
            ("MLP hidden size", config.get("mlp_hidden_size")),
            ("vocabulary / embedding rows", f"{config.get('vocab_size')} / {config.get('embedding_size')}"),
            ("max sequence length", config.get("max_sequence_length")),
            ("RoPE theta", config.get("rope_theta")),
            ("mask token id", config.get("mask_token_id")),
        ]
    training = training_details(
        trainer=trainer,
        trainer_state=facts.trainer_state if trainer is None else None,
        training_args=training_args,
        training_data=training_data,
    )
    dtype = "bfloat16" if facts.dtype in ("bfloat16", "float16") else "float32"
    if description is None:
        description = (
            f"A LLaDA masked diffusion language model with {_format_count(facts.num_parameters).split(' ')[0]} "
            "parameters, published with the `llada` package."
        )
    from .configuration_llada import MIN_TRANSFORMERS_VERSION
    from .modeling_llada_moe import MOE_MIN_TRANSFORMERS_VERSION

    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        description=description,
        architecture=architecture,
        usage_kwargs=usage_kwargs,
        prompt=json.dumps(example_prompt, ensure_ascii=False),
        dtype=dtype,
        chat_template=facts.chat_template,
        generation_defaults=generation_defaults,
        training=training,
        has_tokenizer=facts.has_tokenizer,
        remote_code_transformers=MOE_MIN_TRANSFORMERS_VERSION if is_moe_config(config) else MIN_TRANSFORMERS_VERSION,
    )


def _generation_defaults(generation: dict[str, Any]) -> list[tuple[str, Any]]:
    """The saved sampler settings and special ids, in a fixed order (unset ones left out)."""
    return [(key, generation[key]) for key in _GENERATION_FIELDS if generation.get(key) is not None]


def write_model_card(folder: str | os.PathLike, card: ModelCard | str | None = None, **card_kwargs) -> Path:
    """Write `README.md` into a saved checkpoint folder: `card` as given, or one built from the folder with
    [`build_model_card`] (`card_kwargs`). This is the hook for `LLaDATrainer.create_model_card`. Returns the path."""
    if card is None:
        card = build_model_card(folder, **card_kwargs)
    path = Path(folder) / "README.md"
    path.write_text(str(card), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Publishing
# ----------------------------------------------------------------------------------------------------------------


def stage_for_hub(
    model_or_folder,
    staging: str | os.PathLike,
    *,
    tokenizer=None,
    max_shard_size: int | str = "50GB",
) -> list[str]:
    """Write into the empty folder `staging` every file of the repository except the card.

    A model object is saved with `save_pretrained` (weights, `config.json` with `auto_map`, the hub-core code files,
    `generation_config.json`). A saved folder is copied (top-level files only, without the optimizer and other
    training state); if it lacks the code files (e.g. a folder in the published format), they and the `auto_map`
    are added to the copy, never to the source. Returns the relative paths written.
    """
    from .modeling_llada import AUTO_MAP, HUB_CORE_FILES, copy_hub_core_files

    staging = Path(staging)
    if isinstance(model_or_folder, (str, os.PathLike)):
        source = Path(model_or_folder)
        if not (source / "config.json").is_file():
            raise ValueError(f"{source} has no config.json; pass a folder written by save_pretrained.")
        for path in sorted(source.iterdir()):
            if path.is_file() and not path.name.startswith((".", "_")) and path.name not in _TRAINING_STATE_FILES:
                shutil.copyfile(path, staging / path.name)
        config = json.loads((staging / "config.json").read_text())
        if config.get("model_type") == "llada" and not all((staging / name).is_file() for name in HUB_CORE_FILES):
            copy_hub_core_files(staging)
            if is_moe_config(config):
                from .modeling_llada_moe import MOE_AUTO_MAP

                config["auto_map"] = dict(MOE_AUTO_MAP)
            else:
                config["auto_map"] = dict(AUTO_MAP)
            (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        model_or_folder.save_pretrained(staging, max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    return sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())


def push_to_hub(
    model_or_folder,
    repo_id: str,
    *,
    tokenizer=None,
    card: ModelCard | str | None = None,
    trainer=None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str = "50GB",
    tags: list[str] | None = None,
    endpoint: str | None = None,
    api: HfApi | None = None,
    **card_kwargs,
):
    """Publish a LLaDA checkpoint: weights, code files, generation config, tokenizer and model card, in one commit.

    Everything is written to a temporary folder before the first request, so an error while saving sends nothing.
    The repository is created if needed (`exist_ok`).

    Args:
        model_or_folder (`LLaDAModelLM` or `str`/`os.PathLike`):
            The model, or a folder written by `save_pretrained` / `Trainer.save_model`.
        repo_id (`str`):
            `"user/name"` or `"name"` (then the token's namespace).
        tokenizer (*optional*):
            Saved next to the weights.
        card (`ModelCard` or `str`, *optional*):
            The README to publish; by default one is built with [`build_model_card`] (`card_kwargs`, `trainer`,
            `tags`).
        trainer (`transformers.Trainer`, *optional*):
            Adds the training details to the built card.
        commit_message, commit_description, private, token, revision, create_pr:
            As in `HfApi.create_commit` / `HfApi.create_repo`.
        max_shard_size (`int` or `str`, *optional*, defaults to `"50GB"`):
            Passed to `save_pretrained`.
        endpoint (`str`, *optional*):
            Hub URL (defaults to `HF_ENDPOINT` or https://huggingface.co).
        api (`HfApi`, *optional*):
            A client to use instead of `HfApi(endpoint=endpoint, token=token)`.

    Returns:
        `huggingface_hub.CommitInfo` of the commit.

    Example:

    ```python
    >>> from llada.hub import push_to_hub
    >>> push_to_hub(model, "me/llada-kjv", tokenizer=tokenizer, datasets=["me/kjv"], training_data="KJV")
    ```
    """
    from . import __version__

    api = api or HfApi(endpoint=endpoint, token=token, library_name="llada", library_version=__version__)
    card_kwargs = dict(card_kwargs, trainer=trainer, tags=tags)
    if not isinstance(model_or_folder, (str, os.PathLike)) and card_kwargs.get("base_model") is None:
        # save_pretrained drops `_name_or_path`: read the base model from the object before saving it.
        name = _hub_id_or_none(getattr(getattr(model_or_folder, "config", None), "_name_or_path", None))
        card_kwargs["base_model"] = name if name != repo_id else None
    with tempfile.TemporaryDirectory(prefix="llada-push-") as staging:
        files = stage_for_hub(model_or_folder, staging, tokenizer=tokenizer, max_shard_size=max_shard_size)
        # Build the card before touching the network so that a bad argument sends nothing.
        readme = str(card) if card is not None else str(build_model_card(staging, repo_id=repo_id, **card_kwargs))
        resolved = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        if card is None and resolved != repo_id:
            readme = str(build_model_card(staging, repo_id=resolved, **card_kwargs))
        Path(staging, "README.md").write_text(readme, encoding="utf-8")
        files = sorted(set(files) | {"README.md"})
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(staging, name))) for name in files
        ]
        return api.create_commit(
            resolved,
            operations,
            commit_message=commit_message or "Upload LLaDA model",
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )
