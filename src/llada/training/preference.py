"""`LLaDAPreferenceCollator`: preference batches (prompt, chosen answer, rejected answer) for `LLaDAVRPOTrainer`.

The dataset shapes are trl's: `{"prompt": str, "chosen": str, "rejected": str}` (standard),
`{"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}` (conversational), or
`{"chosen": [messages], "rejected": [messages]}` (implicit prompt: the turns before the last, which must be equal).
Each side is rendered exactly as `LLaDASFTCollator` renders a `prompt`/`response` pair (chat template on the prompt,
the answer trimmed and followed by `<|eot_id|>`), and both sides of the whole batch are filled with EOS to ONE
length, so that the trainer scores chosen and rejected rows in one forward pass. The EOS padding counts as answer
(maskable), as in SFT.

Batch: `chosen_input_ids`, `chosen_labels`, `rejected_input_ids`, `rejected_labels`, all (B, L); labels are -100
on the prompt.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from .collators import IGNORE_INDEX, LLaDASFTCollator
from .tokenizer import EOT_TOKEN

logger = logging.getLogger(__name__)

#: Keys of the batches of `LLaDAPreferenceCollator`.
PREFERENCE_KEYS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


def _as_messages(value, role: str, what: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, Sequence) and all(isinstance(m, Mapping) for m in value):
        return [dict(m) for m in value]
    raise ValueError(f"{what} must be a string or a list of chat messages ({{'role', 'content'}}), got {value!r}.")


class _PreferenceSide(LLaDASFTCollator):
    """Renders and checks one side (chosen or rejected) of a preference example as SFT does, naming it as such."""

    example_name = "Preference example"


@dataclass
class LLaDAPreferenceCollator:
    """Preference batches for `LLaDAVRPOTrainer` from trl-shaped examples (see the module docstring).

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            With a chat template, an EOS and a mask token (as for `LLaDASFTCollator`).
        max_length (`int`, *optional*):
            Longest sample (prompt + answer); longer answers are truncated with a warning.
        pad_to_multiple_of (`int`, *optional*):
            Round the batch length up to a multiple of this (capped at `max_length`).
        end_of_turn_token (`str`, *optional*, defaults to `"<|eot_id|>"`):
            Appended to each answer when the tokenizer knows it.
        eos_token_id, mask_token_id (`int`, *optional*):
            Override the tokenizer's ids.

    Example:

    ```python
    >>> collator = LLaDAPreferenceCollator(tokenizer, max_length=128)
    >>> batch = collator([{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}])
    >>> sorted(batch)
    ['chosen_input_ids', 'chosen_labels', 'rejected_input_ids', 'rejected_labels']
    ```
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    end_of_turn_token: str | None = EOT_TOKEN
    eos_token_id: int | None = None
    mask_token_id: int | None = None
    _sft: LLaDASFTCollator = field(init=False, repr=False)

    def __post_init__(self):
        self._sft = _PreferenceSide(
            self.tokenizer,
            max_length=self.max_length,
            end_of_turn_token=self.end_of_turn_token,
            eos_token_id=self.eos_token_id,
            mask_token_id=self.mask_token_id,
        )
        self.max_length = self._sft.max_length
        self.eos_token_id, self.mask_token_id = self._sft.eos_token_id, self._sft.mask_token_id

    @staticmethod
    def conversations(example: Mapping, index: int = 0) -> tuple[list[dict], list[dict]]:
        """(chosen conversation, rejected conversation), each ending with the assistant's answer."""
        missing = [key for key in ("chosen", "rejected") if key not in example]
        if missing:
            raise ValueError(
                f"Preference example {index} lacks {missing}; it needs 'chosen' and 'rejected' (and 'prompt' unless "
                f"they are whole conversations); got keys {sorted(example)}."
            )
        if "prompt" in example:
            prompt = _as_messages(example["prompt"], "user", f"The prompt of preference example {index}")
            chosen = prompt + _as_messages(example["chosen"], "assistant", f"'chosen' of example {index}")
            rejected = prompt + _as_messages(example["rejected"], "assistant", f"'rejected' of example {index}")
        else:
            if isinstance(example["chosen"], str) or isinstance(example["rejected"], str):
                raise ValueError(
                    f"Preference example {index} has no 'prompt'; add one, or give 'chosen' and 'rejected' as whole "
                    "conversations (lists of messages) sharing their turns before the answer."
                )
            chosen = _as_messages(example["chosen"], "assistant", f"'chosen' of example {index}")
            rejected = _as_messages(example["rejected"], "assistant", f"'rejected' of example {index}")
            if chosen[:-1] != rejected[:-1]:
                raise ValueError(
                    f"Preference example {index}: without a 'prompt', 'chosen' and 'rejected' must share every turn "
                    "before the last (their common prompt); pass the prompt explicitly."
                )
        for name, conversation in (("chosen", chosen), ("rejected", rejected)):
            content = conversation[-1].get("content") if conversation else None
            if not isinstance(content, str) or not content.strip():
                raise ValueError(f"Preference example {index} has an empty {name} answer ({content!r}); drop it.")
        if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
            logger.warning(
                "Preference example %d: chosen and rejected answers are identical; it teaches nothing (loss log 2).",
                index,
            )
        return chosen, rejected

    def encode(self, example: Mapping, index: int = 0) -> tuple[list[int], list[int], list[int]]:
        """(prompt ids, chosen answer ids, rejected answer ids) of one example, checked and truncated."""
        chosen, rejected = self.conversations(example, index)
        prompt, chosen_ids = self._sft.encode({"messages": chosen}, index)
        _, rejected_ids = self._sft.encode({"messages": rejected}, index)
        return prompt, chosen_ids, rejected_ids

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        triples = [self.encode(example, i) for i, example in enumerate(examples)]
        length = max(len(p) + max(len(c), len(r)) for p, c, r in triples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
            if self.max_length is not None:
                length = min(length, self.max_length)
        batch = {}
        for side, which in (("chosen", 1), ("rejected", 2)):
            input_ids = torch.full((len(triples), length), self.eos_token_id, dtype=torch.long)  # EOS padding
            labels = input_ids.clone()
            for row, triple in enumerate(triples):
                prompt = triple[0]
                ids = torch.tensor(prompt + triple[which], dtype=torch.long)
                input_ids[row, : len(ids)] = ids
                labels[row, : len(ids)] = ids
                labels[row, : len(prompt)] = IGNORE_INDEX
            batch[f"{side}_input_ids"], batch[f"{side}_labels"] = input_ids, labels
        return batch


__all__ = ["PREFERENCE_KEYS", "LLaDAPreferenceCollator"]
