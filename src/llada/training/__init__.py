"""Training LLaDA: collators, `LLaDATrainer` with the masked-diffusion loss, LoRA helpers, tokenizer training.

```python
>>> from llada.training import LLaDATrainer, LLaDATrainingArguments, LLaDAPretrainingCollator, LLaDASFTCollator
```
"""

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
