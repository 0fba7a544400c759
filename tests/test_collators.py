"""Collators (exact tensors, errors) and the LLaDA-style tokenizer builder."""

import logging

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llada.training import (
    IGNORE_INDEX,
    SPECIAL_TOKENS,
    LLaDAPretrainingCollator,
    LLaDASFTCollator,
    pack_documents,
    special_token_ids,
    train_tokenizer,
)

CORPUS = [
    "The cat sat on the mat. The dog sat on the log.",
    "What is the capital of France? Paris is the capital of France.",
    "Hello there! How are you today? I am fine, thank you.",
] * 4


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS, vocab_size=320)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---- tokenizer ---------------------------------------------------------------------------------------------------


def test_tokenizer_special_tokens_chat_template_and_round_trip(tokenizer, tmp_path):
    n = len(tokenizer)
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(n - 6, n))  # last ids, LLaDA order
    assert tokenizer.mask_token == "<|mdm_mask|>" and tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    text = "Ünïcode, emoji 🙂 and   spaces\n\tkeep round-tripping."
    assert tokenizer.decode(ids(tokenizer, text)) == text  # byte-level: nothing is unknown
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": " What is 2+2? "}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.mask_token_id == tokenizer.mask_token_id and reloaded.chat_template == tokenizer.chat_template
    assert ids(reloaded, text) == ids(tokenizer, text)


def test_tokenizer_too_small_vocabulary():
    with pytest.raises(ValueError, match=r"vocab_size \(100\) must be at least 262"):
        train_tokenizer(CORPUS, vocab_size=100)


# ---- pretraining -------------------------------------------------------------------------------------------------


def test_pack_documents_exact():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]]
    assert list(pack_documents(docs, 4, eos_token_id=0)) == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 10]]
    assert list(pack_documents(docs, 4, eos_token_id=0, drop_remainder=False)) == [
        [1, 2, 3, 0],
        [4, 5, 0, 6],
        [7, 8, 9, 10],
        [11, 0, 0, 0],
    ]
    with pytest.raises(ValueError, match=r"max_length \(0\)"):
        list(pack_documents(docs, 0, eos_token_id=0))


def test_pretraining_collator_packs_text_with_eos_between_documents(tokenizer):
    eos = tokenizer.eos_token_id
    a, b = ids(tokenizer, "The cat sat on the mat."), ids(tokenizer, "Hello there!")
    stream = a + [eos] + b + [eos]
    length = 6
    collator = LLaDAPretrainingCollator(tokenizer, max_length=length)
    batch = collator([{"text": "The cat sat on the mat."}, {"input_ids": b}])
    rows = -(-len(stream) // length)
    expected = torch.tensor(stream + [eos] * (rows * length - len(stream))).view(rows, length)
    assert torch.equal(batch["input_ids"], expected)
    assert torch.equal(batch["labels"], expected)  # pretraining: every position maskable


def test_pretraining_collator_packed_rows(tokenizer):
    collator = LLaDAPretrainingCollator(tokenizer, max_length=3, packed=True)
    batch = collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9, 10]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 10]] == batch["labels"].tolist()
    with pytest.raises(ValueError, match=r"Packed example 1 has 2 input_ids, not max_length \(3\)"):
        collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    with pytest.raises(ValueError, match="needs 'text' or 'input_ids'"):
        LLaDAPretrainingCollator(tokenizer, max_length=3)([{"body": "x"}])


def test_pretraining_collator_rejects_mask_token(tokenizer):
    collator = LLaDAPretrainingCollator(tokenizer, max_length=8)
    with pytest.raises(ValueError, match=rf"contains the mask token \(id {tokenizer.mask_token_id}\)"):
        collator([{"text": "The cat <|mdm_mask|> on the mat."}])


# ---- SFT ---------------------------------------------------------------------------------------------------------


def prompt_ids(tokenizer, messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return ids(tokenizer, text)


def test_sft_collator_exact_tensors(tokenizer):
    eos, eot = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot_id|>")
    examples = [
        {"prompt": "What is the capital of France?", "response": " Paris. "},
        {
            "messages": [
                {"role": "user", "content": "Hello there!"},
                {"role": "assistant", "content": "How are you today?"},
                {"role": "user", "content": "I am fine."},
                {"role": "assistant", "content": "The cat sat on the mat."},
            ]
        },
    ]
    p0 = prompt_ids(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    r0 = ids(tokenizer, "Paris.") + [eot]
    p1 = prompt_ids(tokenizer, examples[1]["messages"][:3])  # earlier turns belong to the prompt
    r1 = ids(tokenizer, "The cat sat on the mat.") + [eot]
    assert p0[0] == tokenizer.bos_token_id and p0[-3:] == ids(tokenizer, "<|end_header_id|>\n\n")
    length = max(len(p0) + len(r0), len(p1) + len(r1))

    batch = LLaDASFTCollator(tokenizer, max_length=128)(examples)
    expected_ids = torch.full((2, length), eos)
    expected_labels = torch.full((2, length), eos)  # EOS padding is response: maskable, supervised
    for row, (p, r) in enumerate([(p0, r0), (p1, r1)]):
        expected_ids[row, : len(p) + len(r)] = torch.tensor(p + r)
        expected_labels[row, : len(p)] = IGNORE_INDEX
        expected_labels[row, len(p) : len(p) + len(r)] = torch.tensor(r)
    assert torch.equal(batch["input_ids"], expected_ids)
    assert torch.equal(batch["labels"], expected_labels)
    assert (batch["input_ids"][:, -1] == eos).any()  # at least one row is padded


def test_sft_collator_padding_options(tokenizer):
    example = [{"prompt": "Hello there!", "response": "Paris."}]
    natural = LLaDASFTCollator(tokenizer, max_length=64)(example)["input_ids"].shape[1]
    assert LLaDASFTCollator(tokenizer, max_length=64, pad_to_multiple_of=16)(example)["input_ids"].shape[1] == (
        -(-natural // 16) * 16
    )
    fixed = LLaDASFTCollator(tokenizer, max_length=64, pad_to_max_length=True)(example)
    assert fixed["input_ids"].shape == (1, 64) and (fixed["input_ids"][0, natural:] == tokenizer.eos_token_id).all()
    assert (fixed["labels"][0, natural:] == tokenizer.eos_token_id).all()


def test_sft_collator_truncates_long_response_with_warning(tokenizer, caplog):
    messages = [{"role": "user", "content": "Hello there!"}]
    prompt_length = len(prompt_ids(tokenizer, messages))
    collator = LLaDASFTCollator(tokenizer, max_length=prompt_length + 3)
    with caplog.at_level(logging.WARNING, logger="llada.training.collators"):
        batch = collator([{"prompt": "Hello there!", "response": "The cat sat on the mat. The dog sat on the log."}])
    assert "is truncated to 3" in caplog.text
    assert batch["input_ids"].shape == (1, prompt_length + 3)
    assert batch["labels"][0, prompt_length:].tolist() == ids(tokenizer, "The cat sat on the mat.")[:3]


@pytest.mark.parametrize(
    "example, message",
    [
        ({"prompt": "Hello", "response": "   "}, r"SFT example 0 has an empty response \('   '\)"),
        ({"prompt": "The cat sat on the mat. " * 8, "response": "Yes."}, r"leaves no room for a response"),
        ({"prompt": "Hi <|mdm_mask|>", "response": "Yes."}, r"prompt of SFT example 0 contains the mask token"),
        ({"prompt": "Hi", "response": "a <|mdm_mask|>"}, r"response of SFT example 0 contains the mask token"),
        ({"messages": [{"role": "user", "content": "Hi"}]}, r"last message must be the assistant's"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, r"has a response but no prompt"),
        ({"question": "Hi"}, r"needs 'messages' or 'prompt' and 'response'"),
    ],
)
def test_sft_collator_errors(tokenizer, example, message):
    with pytest.raises(ValueError, match=message):
        LLaDASFTCollator(tokenizer, max_length=32)([example])


def test_tokenizer_without_eos_mask_or_template(tokenizer):
    backend = tokenizer.backend_tokenizer
    no_eos = PreTrainedTokenizerFast(tokenizer_object=backend, mask_token="<|mdm_mask|>")
    with pytest.raises(ValueError, match="has no EOS token"):
        LLaDAPretrainingCollator(no_eos, max_length=8)
    # like the published LLaDA tokenizer: `<|mdm_mask|>` in the vocabulary but not registered as mask_token
    by_name = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    assert by_name.mask_token_id is None
    assert special_token_ids(by_name) == (tokenizer.eos_token_id, tokenizer.mask_token_id)
    from tokenizers import Tokenizer, models, pre_tokenizers

    bare = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<eos>": 2, "<unk>": 3}, unk_token="<unk>"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=bare, eos_token="<eos>", unk_token="<unk>")
    with pytest.raises(ValueError, match=r"has no mask token: add '<\|mdm_mask\|>'"):
        LLaDASFTCollator(plain)
    plain.add_special_tokens({"mask_token": "<|mdm_mask|>"})
    with pytest.raises(ValueError, match="has no chat template"):
        LLaDASFTCollator(plain)
    with pytest.raises(ValueError, match=r"mask_token_id and eos_token_id are the same id \(2\)"):
        special_token_ids(plain, mask_token_id=2)
