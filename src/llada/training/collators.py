"""Collators for LLaDA training: they tokenize, pack and pad; the masking happens in `LLaDATrainer.compute_loss`.

Both produce the batch contract of the trainer: `input_ids` (B, L) and `labels` (B, L), where `labels == -100`
marks positions that are never masked (the SFT prompt) and every other position holds its token and is maskable and
supervised (all of a pretraining row; the response and its EOS padding in SFT).
"""

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from .tokenizer import EOT_TOKEN, special_token_ids

logger = logging.getLogger(__name__)

#: `labels` value of positions that are never masked (the prompt).
IGNORE_INDEX = -100


def pack_documents(
    documents: Iterable[Sequence[int]], max_length: int, eos_token_id: int, drop_remainder: bool = True
) -> Iterator[list[int]]:
    """Concatenate token lists, each followed by EOS, and cut the stream into rows of exactly `max_length` tokens.

    A document longer than a row continues in the next row. The last, incomplete row is dropped
    (`drop_remainder=True`) or filled with EOS.

    Example:

    ```python
    >>> list(pack_documents([[1, 2, 3], [4, 5]], max_length=3, eos_token_id=0, drop_remainder=False))
    [[1, 2, 3], [0, 4, 5], [0, 0, 0]]
    ```
    """
    if max_length < 1:
        raise ValueError(f"max_length ({max_length}) must be at least 1.")
    buffer: list[int] = []
    for document in documents:
        buffer.extend(document)
        buffer.append(eos_token_id)
        while len(buffer) >= max_length:
            yield buffer[:max_length]
            buffer = buffer[max_length:]
    if buffer and not drop_remainder:
        yield buffer + [eos_token_id] * (max_length - len(buffer))


def document_ids_from_eos(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(B, L) document index of each token of packed rows: a new document starts after each EOS.

    This is the layout `pack_documents` writes (each document followed by its EOS, which belongs to it); each EOS of
    the final fill is a one-token document of its own.

    Example:

    ```python
    >>> document_ids_from_eos(torch.tensor([[5, 6, 0, 7, 0, 0]]), eos_token_id=0)
    tensor([[0, 0, 0, 1, 1, 2]])
    ```
    """
    ends = input_ids == eos_token_id
    starts = torch.zeros_like(ends, dtype=torch.long)
    starts[:, 1:] = ends[:, :-1].long()
    return starts.cumsum(dim=1)


def _check_no_mask_token(ids: Sequence[int], mask_token_id: int, where: str):
    if mask_token_id in ids:
        raise ValueError(
            f"{where} contains the mask token (id {mask_token_id}); the mask token is the noise of the diffusion "
            "process and must not appear in training data. Remove it from the text (or tokenize it as plain text)."
        )


def _check_token_ids(ids: Sequence, vocab_size: int, where: str) -> list[int]:
    """`ids` as a list of ints in [0, vocab_size): float, bool or out-of-range ids are an error naming the value."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    for position, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int):
            raise TypeError(
                f"{where} holds {token!r} ({type(token).__name__}) at position {position}; input_ids must be integer "
                "token ids (ids are never rounded)."
            )
        if not 0 <= token < vocab_size:
            raise ValueError(
                f"{where} holds token id {token} at position {position}, outside the tokenizer's vocabulary "
                f"[0, {vocab_size}); check that the data was tokenized with this tokenizer."
            )
    return ids


@dataclass
class LLaDAPretrainingCollator:
    """Pretraining batches: documents packed into rows of exactly `max_length` tokens, EOS after each document.

    Each example is a mapping with `text` (a string, tokenized here) or `input_ids` (token ids). The documents of a
    batch are concatenated (each followed by EOS) and cut into rows of `max_length` tokens; the last incomplete
    row is filled with EOS. With `packed=True` the examples are rows already packed by `pack_documents` (as the
    `llada train pretrain` command prepares them): their `input_ids` are stacked unchanged, one row each. Every
    position is maskable: `labels == input_ids`.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            Tokenizes `text`; supplies the EOS and mask ids.
        max_length (`int`):
            Row length L.
        text_field (`str`, *optional*, defaults to `"text"`):
            Key of the text in each example.
        packed (`bool`, *optional*, defaults to `False`):
            The examples are packed rows of exactly `max_length` `input_ids`; stack them.
        eos_token_id, mask_token_id (`int`, *optional*):
            Override the tokenizer's ids (pass the model's `config.eos_token_id` / `config.mask_token_id`).
        document_mask (`bool`, *optional*, defaults to `False`):
            Also return `document_ids` (B, L) (`document_ids_from_eos`: a document ends at its EOS): the model then
            attends only within each document and restarts positions in each, as UltraLLaDA's document masking.

    Example:

    ```python
    >>> collator = LLaDAPretrainingCollator(tokenizer, max_length=8)
    >>> batch = collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9, 10, 11, 12]}])  # EOS = 1
    >>> batch["input_ids"]
    tensor([[ 5,  6,  7,  1,  8,  9, 10, 11],
            [12,  1,  1,  1,  1,  1,  1,  1]])
    >>> bool((batch["labels"] == batch["input_ids"]).all())
    True
    ```
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    text_field: str = "text"
    packed: bool = False
    eos_token_id: int | None = None
    mask_token_id: int | None = None
    document_mask: bool = False

    def __post_init__(self):
        self.eos_token_id, self.mask_token_id = special_token_ids(
            self.tokenizer, self.eos_token_id, self.mask_token_id
        )
        if self.max_length < 1:
            raise ValueError(f"max_length ({self.max_length}) must be at least 1.")

    def document_ids(self, example: Mapping) -> list[int]:
        """Token ids of one example (`input_ids`, or the tokenized `text` without special tokens)."""
        if "input_ids" in example:
            ids = _check_token_ids(example["input_ids"], len(self.tokenizer), "A pretraining example")
        elif self.text_field in example:
            ids = self.tokenizer(example[self.text_field], add_special_tokens=False)["input_ids"]
        else:
            raise ValueError(
                f"A pretraining example needs {self.text_field!r} or 'input_ids'; got keys {sorted(example)}."
            )
        _check_no_mask_token(ids, self.mask_token_id, "A pretraining document")
        return ids

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        documents = [self.document_ids(example) for example in examples]
        if self.packed:
            for i, ids in enumerate(documents):
                if len(ids) != self.max_length:
                    raise ValueError(
                        f"Packed example {i} has {len(ids)} input_ids, not max_length ({self.max_length}); pack the "
                        "data with pack_documents(..., max_length) or use packed=False."
                    )
            rows = documents
        else:
            rows = list(pack_documents(documents, self.max_length, self.eos_token_id, drop_remainder=False))
        input_ids = torch.tensor(rows, dtype=torch.long)  # (B, L)
        batch = {"input_ids": input_ids, "labels": input_ids.clone()}
        if self.document_mask:
            batch["document_ids"] = document_ids_from_eos(input_ids, self.eos_token_id)
        return batch


@dataclass
class LLaDASFTCollator:
    """SFT batches: chat `messages` or `prompt`/`response` pairs through the tokenizer's chat template.

    The prompt is everything before the last assistant turn, rendered with `add_generation_prompt=True` (it ends
    with the assistant header); the response is the last assistant message (trimmed, as the LLaDA template does)
    followed by the end-of-turn token `<|eot_id|>` when the tokenizer has one. Each sample is then filled with EOS
    to the batch length (the longest sample, rounded up to `pad_to_multiple_of`, or `max_length` with
    `pad_to_max_length`). The EOS padding counts as response: it is maskable and supervised, so the model learns
    where answers end. `labels` is -100 on the prompt and the token elsewhere.

    A response that does not fit in `max_length` is truncated with a warning (its EOS padding then is empty);
    a prompt that leaves no room for a response is an error.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            With a chat template (see `train_tokenizer`), an EOS and a mask token.
        max_length (`int`, *optional*):
            Longest sample (prompt + response); defaults to `tokenizer.model_max_length` when that is finite.
        pad_to_multiple_of (`int`, *optional*):
            Round the batch length up to a multiple of this (capped at `max_length`).
        pad_to_max_length (`bool`, *optional*, defaults to `False`):
            Fill every sample to `max_length` (fixed shapes, e.g. for `torch.compile`).
        end_of_turn_token (`str`, *optional*, defaults to `"<|eot_id|>"`):
            Appended to the response when the tokenizer knows it; `None` to append nothing.
        eos_token_id, mask_token_id (`int`, *optional*):
            Override the tokenizer's ids (pass the model's `config.eos_token_id` / `config.mask_token_id`).
        packing (`bool`, *optional*, defaults to `False`):
            Pack several samples into each row of `max_length` (greedily, in order) and return `document_ids`
            (B, L): sample k of a row is document k, and the row's EOS fill belongs to its last sample (its EOS
            padding, as without packing). The model attends within each sample only. The loss still normalises
            per row (by the row's maskable tokens).

    Example:

    ```python
    >>> collator = LLaDASFTCollator(tokenizer, max_length=64)
    >>> chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    >>> batch = collator([{"prompt": "Capital of France?", "response": "Paris."}, {"messages": chat}])
    >>> batch["labels"][0]  # -100 on the prompt, then "Paris." <|eot_id|> and EOS padding
    ```
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    pad_to_max_length: bool = False
    end_of_turn_token: str | None = EOT_TOKEN
    eos_token_id: int | None = None
    mask_token_id: int | None = None
    packing: bool = False
    _end_of_turn_ids: list[int] = field(default_factory=list, init=False, repr=False)
    example_name: ClassVar[str] = "SFT example"  # how errors name an example (subclasses reuse the checks)

    def __post_init__(self):
        self.eos_token_id, self.mask_token_id = special_token_ids(
            self.tokenizer, self.eos_token_id, self.mask_token_id
        )
        if self.max_length is None:
            limit = getattr(self.tokenizer, "model_max_length", None)
            self.max_length = int(limit) if limit is not None and limit < 1_000_000 else None
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length ({self.max_length}) must be at least 2 (a prompt and a response token).")
        if self.pad_to_multiple_of is not None and (
            isinstance(self.pad_to_multiple_of, bool)
            or not isinstance(self.pad_to_multiple_of, int)
            or self.pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of ({self.pad_to_multiple_of!r}) must be a positive integer, or None.")
        if self.pad_to_max_length and self.max_length is None:
            raise ValueError("pad_to_max_length=True needs max_length; pass max_length=<row length>.")
        if self.packing and self.max_length is None:
            raise ValueError("packing=True needs max_length (the row length samples are packed into).")
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"The tokenizer ({type(self.tokenizer).__name__}) has no chat template; set tokenizer.chat_template "
                "(llada.training.LLADA_CHAT_TEMPLATE is LLaDA's)."
            )
        if self.end_of_turn_token is not None:
            token_id = self.tokenizer.convert_tokens_to_ids(self.end_of_turn_token)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                self._end_of_turn_ids = [int(token_id)]

    @classmethod
    def messages_of(cls, example: Mapping, index: int = 0) -> list[dict]:
        """The conversation of an example: its `messages`, or a user `prompt` and an assistant `response`."""
        who = f"{cls.example_name} {index}"
        if not isinstance(example, Mapping):
            raise ValueError(
                f"{who} is a {type(example).__name__}; it must be a dict with 'messages' or 'prompt' and 'response'."
            )
        if "messages" in example:
            if isinstance(example["messages"], (str, bytes)) or not isinstance(example["messages"], Sequence):
                raise ValueError(
                    f"{who}: 'messages' is a {type(example['messages']).__name__}; it must be a list of "
                    "{'role': ..., 'content': ...} dicts."
                )
            messages = list(example["messages"])
        elif "prompt" in example and "response" in example:
            messages = [
                {"role": "user", "content": example["prompt"]},
                {"role": "assistant", "content": example["response"]},
            ]
        else:
            raise ValueError(f"{who} needs 'messages' or 'prompt' and 'response'; got keys {sorted(example)}.")
        for position, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise ValueError(
                    f"{who}: message {position} is {message!r}; each message must be a dict with 'role' "
                    "and 'content', e.g. {'role': 'user', 'content': 'Hi'}."
                )
            if not isinstance(message.get("content"), str):
                raise ValueError(
                    f"{who}: message {position} ({message['role']}) has content "
                    f"{message.get('content')!r}; the content must be a string."
                )
        if not messages or messages[-1].get("role") != "assistant":
            role = messages[-1].get("role") if messages else None
            raise ValueError(
                f"{who}: the last message must be the assistant's response (got role {role!r}); the "
                "response is what the model learns to produce."
            )
        if len(messages) < 2:
            raise ValueError(f"{who} has a response but no prompt; add the user turn before it.")
        return messages

    def _template_ids(self, messages: list[dict]) -> list[int]:
        out = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return list(out["input_ids"] if isinstance(out, Mapping) else out)

    def encode(self, example: Mapping, index: int = 0) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of one example, checked and truncated to `max_length`."""
        who = f"{self.example_name} {index}"
        messages = self.messages_of(example, index)
        content = messages[-1].get("content")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"{who} has an empty response ({content!r}); drop the example or write the answer.")
        prompt = self._template_ids(messages[:-1])
        response = self.tokenizer(content.strip(), add_special_tokens=False)["input_ids"] + self._end_of_turn_ids
        _check_no_mask_token(prompt, self.mask_token_id, f"The prompt of {who}")
        _check_no_mask_token(response, self.mask_token_id, f"The response of {who}")
        if self.max_length is not None:
            if len(prompt) >= self.max_length:
                raise ValueError(
                    f"The prompt of {who} has {len(prompt)} tokens, which leaves no room for a response "
                    f"within max_length ({self.max_length}); raise max_length or drop/shorten the example."
                )
            room = self.max_length - len(prompt)
            if len(response) > room:
                logger.warning(
                    "%s %d: the response (%d tokens) is truncated to %d to fit max_length (%d).",
                    self.example_name,
                    index,
                    len(response),
                    room,
                    self.max_length,
                )
                response = response[:room]
        return prompt, response

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("LLaDASFTCollator got no examples; a batch needs at least one.")
        pairs = [self.encode(example, i) for i, example in enumerate(examples)]
        if self.packing:
            return self._packed(pairs)
        length = max(len(p) + len(r) for p, r in pairs)
        if self.pad_to_max_length:
            length = self.max_length
        elif self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
            if self.max_length is not None:
                length = min(length, self.max_length)
        input_ids = torch.full((len(pairs), length), self.eos_token_id, dtype=torch.long)  # (B, L) EOS padding
        labels = input_ids.clone()
        for row, (prompt, response) in enumerate(pairs):
            ids = torch.tensor(prompt + response, dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            labels[row, : len(ids)] = ids
            labels[row, : len(prompt)] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels}

    def _packed(self, pairs: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        rows: list[list[tuple[list[int], list[int]]]] = [[]]
        used = 0
        for prompt, response in pairs:
            size = len(prompt) + len(response)
            if rows[-1] and used + size > self.max_length:
                rows.append([])
                used = 0
            rows[-1].append((prompt, response))
            used += size
        length = max(sum(len(p) + len(r) for p, r in row) for row in rows)
        if self.pad_to_max_length:
            length = self.max_length
        elif self.pad_to_multiple_of:
            length = min(-(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of, self.max_length)
        input_ids = torch.full((len(rows), length), self.eos_token_id, dtype=torch.long)  # (B, L) EOS padding
        labels = input_ids.clone()
        document_ids = torch.zeros((len(rows), length), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for k, (prompt, response) in enumerate(row):
                ids = torch.tensor(prompt + response, dtype=torch.long)
                end = start + len(ids)
                input_ids[r, start:end] = ids
                labels[r, start:end] = ids
                labels[r, start : start + len(prompt)] = IGNORE_INDEX
                document_ids[r, start:] = k  # the fill after the last sample stays in it
                start = end
        return {"input_ids": input_ids, "labels": labels, "document_ids": document_ids}


__all__ = [
    "IGNORE_INDEX",
    "LLaDAPretrainingCollator",
    "LLaDASFTCollator",
    "document_ids_from_eos",
    "pack_documents",
]
