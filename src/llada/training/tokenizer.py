"""LLaDA-style tokenizers: train a small byte-level BPE with LLaDA's special tokens and chat template, and resolve
the special ids a training run needs.

The special tokens and the chat template follow the published LLaDA-8B-Instruct tokenizer:
`<|startoftext|>` (BOS), `<|endoftext|>` (EOS, also the padding that fills SFT samples), `<|mdm_mask|>` (the mask
of the diffusion process), and the Llama-3 style turn markers `<|start_header_id|>`, `<|end_header_id|>` and
`<|eot_id|>`. As in the published vocabulary they come after the ordinary tokens (the mask id is near the end).
"""

from collections.abc import Iterable

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MASK_TOKEN = "<|mdm_mask|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
EOT_TOKEN = "<|eot_id|>"
#: In vocabulary order (appended after the learned tokens).
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, START_HEADER_TOKEN, END_HEADER_TOKEN, EOT_TOKEN, MASK_TOKEN)

#: The published LLaDA-8B-Instruct chat template, except that the trailing assistant header is written only when
#: `add_generation_prompt=True` (the published one always writes it); with `add_generation_prompt=True` both render
#: the same text: `<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>
#: assistant<|end_header_id|>\n\n`.
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    min_frequency: int = 2,
    chat_template: str = LLADA_CHAT_TEMPLATE,
    model_max_length: int = 4096,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with LLaDA's special tokens and chat template.

    Byte-level: every string round-trips through encode/decode, whatever its characters. The six special tokens
    (`SPECIAL_TOKENS`) take the last ids, so `len(tokenizer) == vocab_size` when the corpus is large enough to
    learn `vocab_size - 6` tokens (fewer otherwise).

    Args:
        texts (`Iterable[str]`):
            The training corpus.
        vocab_size (`int`, *optional*, defaults to 4096):
            Total vocabulary size including the 256 byte tokens and the 6 special tokens.
        min_frequency (`int`, *optional*, defaults to 2):
            A pair must occur this often to be merged.
        chat_template (`str`, *optional*, defaults to `LLADA_CHAT_TEMPLATE`):
            Jinja chat template stored on the tokenizer.
        model_max_length (`int`, *optional*, defaults to 4096):
            Longest sequence, stored on the tokenizer.

    Returns:
        `PreTrainedTokenizerFast` with `bos_token`, `eos_token` (= `pad_token`) and `mask_token` set.

    Example:

    ```python
    >>> tok = train_tokenizer(["the cat sat on the mat", "the dog sat"], vocab_size=300)
    >>> tok.decode(tok("the cat")["input_ids"])
    'the cat'
    >>> tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    '<|startoftext|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n'
    ```
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    n_special = len(SPECIAL_TOKENS)
    if vocab_size < 256 + n_special:
        raise ValueError(
            f"vocab_size ({vocab_size}) must be at least {256 + n_special}: 256 byte tokens plus {n_special} special "
            "tokens."
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_special,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # the last ids, in LLaDA's order
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=[START_HEADER_TOKEN, END_HEADER_TOKEN, EOT_TOKEN],
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = chat_template
    return fast


def special_token_ids(
    tokenizer: PreTrainedTokenizerBase, eos_token_id: int | None = None, mask_token_id: int | None = None
) -> tuple[int, int]:
    """The EOS and mask ids for training: the given ones, else the tokenizer's `eos_token_id` and its
    `mask_token_id` or the id of `<|mdm_mask|>`.

    Raises:
        `ValueError`: when the tokenizer has neither, or both resolve to the same id.
    """
    if eos_token_id is None:
        eos_token_id = tokenizer.eos_token_id
    if eos_token_id is None:
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has no EOS token; set tokenizer.eos_token (LLaDA uses "
            f"{EOS_TOKEN!r}) or pass eos_token_id."
        )
    if mask_token_id is None:
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
    if mask_token_id is None:
        found = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
        if found is not None and found != tokenizer.unk_token_id:
            mask_token_id = found
    if mask_token_id is None:
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has no mask token: add {MASK_TOKEN!r} with "
            "tokenizer.add_special_tokens({'mask_token': '<|mdm_mask|>'}) (and resize the model's embeddings), or "
            "pass mask_token_id."
        )
    if mask_token_id == eos_token_id:
        raise ValueError(f"mask_token_id and eos_token_id are the same id ({mask_token_id}); they must differ.")
    return int(eos_token_id), int(mask_token_id)


__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "EOT_TOKEN",
    "END_HEADER_TOKEN",
    "LLADA_CHAT_TEMPLATE",
    "MASK_TOKEN",
    "SPECIAL_TOKENS",
    "START_HEADER_TOKEN",
    "special_token_ids",
    "train_tokenizer",
]
