"""Reading local training data for `llada train`: text files, JSON / JSONL records, or `datasets` saved to disk.

- `.txt` / `.md` / `.text`: the whole file is one document (pretraining).
- `.jsonl`: one JSON object per line; `.json`: a list of objects. Pretraining reads `text_field` of each;
  SFT reads `messages` or `prompt` + `response`.
- A directory written by `datasets.Dataset.save_to_disk` (needs the `datasets` package).
"""

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .collators import pack_documents

TEXT_SUFFIXES = (".txt", ".md", ".text")


def _load_from_disk(path: Path) -> list[dict]:
    try:
        import datasets
    except ImportError as error:
        raise ValueError(
            f"{path} is a directory; reading a dataset saved with `save_to_disk` needs the `datasets` package "
            "(pip install datasets), or pass .txt / .jsonl / .json files."
        ) from error
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise ValueError(f"{path} holds splits {list(loaded)}; point at one split's folder.")
        loaded = loaded["train"]
    return [dict(row) for row in loaded]


def read_records(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """All records of the given `.jsonl` / `.json` files and saved datasets, in order."""
    records: list[dict] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ValueError(f"Data file {path} does not exist.")
        if path.is_dir():
            records.extend(_load_from_disk(path))
        elif path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except json.JSONDecodeError as error:
                            raise ValueError(f"{path}:{number} is not valid JSON ({error.msg}).") from error
        elif path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise ValueError(f"{path} must hold a JSON list of records, got {type(data).__name__}.")
            records.extend(data)
        else:
            raise ValueError(f"Unsupported data file {path}: use .jsonl, .json or a saved `datasets` folder.")
    return records


def read_documents(paths: Sequence[str | os.PathLike], text_field: str = "text") -> Iterator[str]:
    """Pretraining documents: whole text files, or the `text_field` of each JSON record."""
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            yield path.read_text(encoding="utf-8")
            continue
        for number, record in enumerate(read_records([path])):
            if text_field not in record:
                raise ValueError(
                    f"Record {number} of {path} has no {text_field!r} field (keys {sorted(record)}); pass "
                    "--text-field with the right key."
                )
            yield record[text_field]


def packed_pretraining_rows(
    documents: Iterator[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    eos_token_id: int,
    mask_token_id: int,
    batch_documents: int = 256,
) -> list[dict]:
    """Tokenize documents and pack them into rows of `max_length` ids (EOS after each document; the incomplete
    last row is dropped unless it is the only one, then it is filled with EOS)."""

    def token_lists():
        batch = []
        for document in documents:
            batch.append(document)
            if len(batch) == batch_documents:
                yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
                batch = []
        if batch:
            yield from tokenizer(batch, add_special_tokens=False)["input_ids"]

    def checked():
        for number, ids in enumerate(token_lists()):
            if mask_token_id in ids:
                raise ValueError(
                    f"Document {number} contains the mask token (id {mask_token_id}); remove it from the data."
                )
            yield ids

    streamed = list(checked())
    rows = list(pack_documents(streamed, max_length, eos_token_id, drop_remainder=True))
    if not rows and streamed:
        rows = list(pack_documents(streamed, max_length, eos_token_id, drop_remainder=False))
    return [{"input_ids": row} for row in rows]


__all__ = ["packed_pretraining_rows", "read_documents", "read_records"]
