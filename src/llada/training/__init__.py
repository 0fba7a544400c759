"""Training LLaDA: collators, `LLaDATrainer` with the masked-diffusion loss, LoRA helpers, tokenizer training.

```python
>>> from llada.training import LLaDATrainer, LLaDATrainingArguments, LLaDAPretrainingCollator, LLaDASFTCollator
```

The package imports lazily, like `llada` itself: each name below is imported from its module on first access, so
that `llada train --help` (which imports `llada.training.cli`) costs no torch, transformers or peft import.
"""

from typing import TYPE_CHECKING

from .._registration import lazy_attribute

if TYPE_CHECKING:
    from .arguments import CHECKPOINTING_ARGUMENT, LLaDATrainingArguments
    from .collators import (
        IGNORE_INDEX,
        LLaDAPretrainingCollator,
        LLaDASFTCollator,
        document_ids_from_eos,
        pack_documents,
    )
    from .lora import LLADA_LORA_TARGETS, llada_lora_config, lora_target_regex
    from .preference import LLaDAPreferenceCollator
    from .tokenizer import LLADA_CHAT_TEMPLATE, SPECIAL_TOKENS, special_token_ids, train_tokenizer
    from .trainer import LLaDATrainer, cross_entropy_float32, masked_diffusion_loss_rows, masked_diffusion_loss_sum
    from .vrpo import LLaDAVRPOConfig, LLaDAVRPOTrainer

#: Public names of `llada.training` and the module that defines each (imported on first access).
_LAZY_EXPORTS = {
    "CHECKPOINTING_ARGUMENT": "arguments",
    "LLaDATrainingArguments": "arguments",
    "IGNORE_INDEX": "collators",
    "LLaDAPretrainingCollator": "collators",
    "LLaDASFTCollator": "collators",
    "document_ids_from_eos": "collators",
    "pack_documents": "collators",
    "LLADA_LORA_TARGETS": "lora",
    "llada_lora_config": "lora",
    "lora_target_regex": "lora",
    "LLaDAPreferenceCollator": "preference",
    "LLADA_CHAT_TEMPLATE": "tokenizer",
    "SPECIAL_TOKENS": "tokenizer",
    "special_token_ids": "tokenizer",
    "train_tokenizer": "tokenizer",
    "LLaDATrainer": "trainer",
    "cross_entropy_float32": "trainer",
    "masked_diffusion_loss_rows": "trainer",
    "masked_diffusion_loss_sum": "trainer",
    "LLaDAVRPOConfig": "vrpo",
    "LLaDAVRPOTrainer": "vrpo",
}


def __getattr__(name: str):
    return lazy_attribute(__name__, name, _LAZY_EXPORTS)


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


__all__ = [
    "CHECKPOINTING_ARGUMENT",
    "IGNORE_INDEX",
    "LLADA_CHAT_TEMPLATE",
    "LLADA_LORA_TARGETS",
    "LLaDAPreferenceCollator",
    "LLaDAPretrainingCollator",
    "LLaDASFTCollator",
    "LLaDATrainer",
    "LLaDATrainingArguments",
    "LLaDAVRPOConfig",
    "LLaDAVRPOTrainer",
    "SPECIAL_TOKENS",
    "cross_entropy_float32",
    "llada_lora_config",
    "lora_target_regex",
    "masked_diffusion_loss_rows",
    "masked_diffusion_loss_sum",
    "document_ids_from_eos",
    "pack_documents",
    "special_token_ids",
    "train_tokenizer",
]
