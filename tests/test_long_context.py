"""Long context: RoPE scaling (`rope_scaling`), document masking of packed rows, and the collators that pack."""

import functools
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llada import LLaDAModelLM
from llada.masking_llada import diffusion_loss_sum
from llada.modeling_llada import document_mask_for, document_positions
from llada.rope_llada import diffusion_critical_dim, diffusion_ntk_base, rope_frequencies
from llada.training import LLaDAPretrainingCollator, LLaDASFTCollator, document_ids_from_eos, train_tokenizer
from llada.training.trainer import masked_diffusion_loss_sum

from .conftest import tiny_config
from .test_collators import CORPUS


@functools.cache
def _tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config(**overrides)).eval()


# ---- RoPE scaling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rope_type", ["linear", "ntk", "diffusion_ntk", "dynamic"])
def test_factor_one_is_plain_rope_bit_exact(rope_type):
    plain = _model()
    scaled = _model(rope_scaling={"rope_type": rope_type, "factor": 1.0})
    scaled.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 98, (2, 40))
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, scaled(ids).logits)


def test_diffusion_ntk_formula_llada_8b():
    # LLaDA-8B: head dim 128, base 5e5, trained at 4K, extended to 128K (the values the issue quotes).
    assert diffusion_critical_dim(128, 5e5, 4096) == 70
    base = diffusion_ntk_base(128, 5e5, 4096, 131072)
    assert base == pytest.approx((2 * 131072 / (2 * math.pi)) ** (128 / 70), rel=1e-12)
    assert 2.7e8 < base < 2.9e8
    # By hand: log_5e5(4096 / pi) = 0.54669..., * 64 = 34.99 -> ceil 35 -> d_crit 70.
    assert math.ceil(64 * math.log(4096 / math.pi) / math.log(5e5)) == 35


@pytest.mark.parametrize(
    "scaling, theta",
    [
        ({"rope_type": "ntk", "factor": 4.0}, 500.0 * 4),
        ({"rope_type": "diffusion_ntk", "factor": 4.0, "original_max_position_embeddings": 64}, None),
    ],
)
def test_scaled_inverse_frequencies_follow_the_formula(scaling, theta):
    config = tiny_config(rope_theta=500.0, rope_scaling=scaling)
    if theta is None:  # d = 8, b = 500, T_train 64 -> 256: d_crit = 2 ceil(4 log_500(64 / pi)) = 2 ceil(1.94) = 4
        assert diffusion_critical_dim(8, 500.0, 64) == 4
        theta = (2 * 256 / (2 * math.pi)) ** (8 / 4)  # 6640.7
        assert diffusion_ntk_base(8, 1e4, 64, 256) == 1e4  # below the trained base: the base is kept
    inv_freq, scale = rope_frequencies(config)
    expected = 1.0 / (torch.tensor(theta, dtype=torch.float) ** (torch.arange(0, 8, 2).float() / 8))
    torch.testing.assert_close(inv_freq, expected, rtol=1e-6, atol=0)
    assert scale == 1.0
    assert config.max_sequence_length == 256


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "dynamic", "factor": 4.0},
        {"rope_type": "yarn", "factor": 4.0},
        {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
        {"rope_type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0], "long_factor": [1.0, 2.0, 4.0, 8.0]},
    ],
)
def test_standard_types_match_transformers_llama(scaling):
    """Our view of the config gives transformers' own numbers for a Llama of the same head and lengths."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    ours = tiny_config(max_sequence_length=64, rope_theta=10000.0, rope_scaling=dict(scaling))
    target = ours.max_sequence_length
    llama = LlamaConfig(
        hidden_size=32,
        num_attention_heads=4,
        max_position_embeddings=64 if scaling["rope_type"] == "dynamic" else target,
        rope_parameters={**scaling, "rope_theta": 10000.0, "original_max_position_embeddings": 64},
    )
    for seq_len in (32, 200):
        inv_freq, scale = rope_frequencies(ours, seq_len)
        expected, expected_scale = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](llama, None, seq_len)
        torch.testing.assert_close(inv_freq, expected.float(), rtol=1e-6, atol=0)
        assert scale == pytest.approx(expected_scale)


def test_rope_scaling_round_trips_and_reloads(tmp_path):
    model = _model(rope_scaling={"rope_type": "diffusion_ntk", "factor": 4})
    assert model.config.rope_scaling == {
        "rope_type": "diffusion_ntk",
        "factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    assert model.config.max_sequence_length == 256
    model.save_pretrained(tmp_path)
    assert (tmp_path / "rope_llada.py").is_file()
    again = LLaDAModelLM.from_pretrained(tmp_path).eval()
    assert again.config.to_dict() | {"_name_or_path": ""} == model.config.to_dict() | {"_name_or_path": ""}
    ids = torch.randint(0, 98, (1, 200))  # longer than the training length 64
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_transformers_5_rope_parameters_and_legacy_type_are_accepted():
    config = tiny_config(rope_parameters={"rope_type": "ntk", "factor": 2.0, "rope_theta": 1234.0})
    assert config.rope_theta == 1234.0
    assert config.rope_scaling == {"rope_type": "ntk", "factor": 2.0, "original_max_position_embeddings": 64}
    assert tiny_config(rope_scaling={"type": "linear", "factor": 2.0}).rope_scaling["rope_type"] == "linear"
    assert tiny_config(rope_parameters={"rope_type": "default", "rope_theta": 10.0}).rope_scaling is None


@pytest.mark.parametrize(
    "scaling, message",
    [
        ({"rope_type": "su", "factor": 2.0}, "unknown rope_scaling rope_type 'su'"),
        ({"rope_type": "ntk", "factor": 0}, "must be a positive number"),
        ({"rope_type": "ntk", "factor": -2.0}, "must be a positive number"),
        ({"rope_type": "diffusion_ntk", "factor": 0.5}, "target shorter than the training length"),
        ({"rope_type": "ntk"}, "needs factor"),
        ({"rope_type": "ntk", "factor": 2.0, "original_max_position_embeddings": 0}, "positive integer"),
        ({"rope_type": "diffusion_ntk", "factor": 2.0, "original_max_position_embeddings": 2}, "above pi"),
        ("ntk", "must be a dict"),
    ],
)
def test_bad_rope_scaling(scaling, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(rope_scaling=scaling)


def test_longrope_factor_lists_of_the_wrong_length_are_named():
    scaling = {"rope_type": "longrope", "short_factor": [1.0, 1.5, 2.0], "long_factor": [1.0, 2.0, 4.0, 8.0]}
    model = _model(rope_scaling=scaling)
    message = r"short_factor must be a list of head_dim / 2 = 4 numbers \(one per rotary pair\), got 3 numbers"
    with pytest.raises(ValueError, match=message):
        rope_frequencies(model.config)
    with pytest.raises(ValueError, match=message):
        model(torch.tensor([[1, 2, 3]]))


def test_lengths_beyond_the_scaled_maximum_are_refused():
    model = _model(rope_scaling={"rope_type": "ntk", "factor": 2.0})
    with pytest.raises(ValueError, match="exceeds max_sequence_length \\(128\\)"):
        model(torch.zeros(1, 129, dtype=torch.long))


# ---- document masking --------------------------------------------------------------------------------------------


def _packed_row(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(0, 98, (1, n), generator=g) for n in lengths]
    ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    return docs, torch.cat(docs, 1), ids


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_document_mask_equals_each_document_alone(attn):
    model = _model(attn_implementation=attn)
    docs, row, ids = _packed_row([5, 9, 1, 7])
    with torch.no_grad():
        packed = model(row, document_ids=ids).logits
        alone = torch.cat([model(d).logits for d in docs], 1)
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)


def test_flex_block_mask_is_the_dense_document_mask():
    docs, row, ids = _packed_row([3, 6, 4])
    padding = torch.ones_like(ids)
    padding[0, -2:] = 0
    for attention_mask, start, q_len in ((None, 0, 13), (padding, 0, 13), (padding, 4, 5)):
        block = document_mask_for("flex_attention", ids, attention_mask, start, q_len, torch.float32)
        dense = document_mask_for("sdpa", ids, attention_mask, start, q_len, torch.float32)  # (1, 1, Tq, Tk)
        q, kv = torch.meshgrid(torch.arange(q_len), torch.arange(13), indexing="ij")
        zero = torch.zeros_like(q)
        assert torch.equal(block.mask_mod(zero, zero, q, kv), dense[0, 0])


@pytest.mark.skipif(not os.environ.get("LLADA_FLEX_TESTS"), reason="flex_attention compiles for ~1 min on CPU")
def test_flex_document_mask_equals_each_document_alone():
    flex, sdpa = _model(attn_implementation="flex_attention"), _model(attn_implementation="sdpa")
    docs, row, ids = _packed_row([5, 9, 4])
    with torch.no_grad():
        packed = flex(row, document_ids=ids).logits
        alone = torch.cat([sdpa(d).logits for d in docs], 1)
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)


def test_document_mask_with_cache_window_and_padding():
    model = _model(attn_implementation="sdpa")
    docs, row, ids = _packed_row([6, 6])
    attention_mask = torch.ones_like(row)
    attention_mask[0, :2] = 0  # left padding inside the first document
    with torch.no_grad():
        full = model(row, attention_mask=attention_mask, document_ids=ids, use_cache=True)
        window = model(
            row[:, 3:9],
            attention_mask=attention_mask,
            document_ids=ids,
            past_key_values=full.past_key_values,
            cache_position=torch.arange(3, 9),
        ).logits
        second = model(docs[1]).logits
    torch.testing.assert_close(window, full.logits[:, 3:9], rtol=0, atol=1e-5)
    torch.testing.assert_close(full.logits[:, 6:], second, rtol=0, atol=1e-5)


def test_packed_loss_is_the_per_document_losses_combined():
    model = _model()
    lengths = [5, 9, 6]
    docs, row, ids = _packed_row(lengths, seed=1)
    g = torch.Generator().manual_seed(2)
    masked = torch.rand(row.shape, generator=g) < 0.5
    masked[0, 0] = True
    p = torch.tensor([0.5])
    maskable = torch.ones_like(masked)
    with torch.no_grad():
        packed = masked_diffusion_loss_sum(model, row, maskable, masked, p, 99, document_ids=ids)
        # Alone: each document's CE / p at its masked tokens, normalised by the row's length (DESIGN section 5).
        total, start = torch.zeros(()), 0
        for doc, n in zip(docs, lengths, strict=True):
            m = masked[:, start : start + n]
            logits = model(torch.where(m, 99, doc)).logits[m]
            nll = torch.nn.functional.cross_entropy(logits.float(), doc[m], reduction="none")
            total += diffusion_loss_sum(nll, torch.zeros_like(doc[m]), p, torch.tensor([row.shape[1]]))
            start += n
    torch.testing.assert_close(packed, total, rtol=1e-5, atol=1e-6)


def test_positions_restart_in_each_document():
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, 3, 3]])
    assert document_positions(ids).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]


@pytest.mark.parametrize(
    "document_ids, message",
    [
        (torch.zeros(1, 7, dtype=torch.long), "must match the rows"),
        (torch.zeros(2, 8, dtype=torch.long), "must match the rows"),
        (torch.zeros(1, 8), "integer tensor"),
        (torch.tensor([[0, 0, 1, 1, 0, 0, 2, 2]]), "split into several runs"),
    ],
)
def test_bad_document_layouts(document_ids, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 8, dtype=torch.long), document_ids=document_ids)


def test_flash_attention_refuses_document_masking():
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="not implemented for attn_implementation='flash_attention_2'"):
        document_mask_for("flash_attention_2", ids, None, 0, 4, torch.float32)


# ---- collators ---------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(2, 20), min_size=1, max_size=9), min_size=1, max_size=6), st.integers(3, 16))
def test_pretraining_collator_document_ids_follow_the_packing(documents, max_length):
    collator = LLaDAPretrainingCollator(
        _tokenizer(), max_length=max_length, document_mask=True, eos_token_id=0, mask_token_id=1
    )
    batch = collator([{"input_ids": d} for d in documents])
    eos = collator.eos_token_id
    # Rebuild the expected layout token by token: the EOS that closes a document belongs to it.
    stream, owner = [], []
    for k, doc in enumerate(documents):
        stream += doc + [eos]
        owner += [k] * (len(doc) + 1)
    for r in range(batch["input_ids"].shape[0]):
        ids, got = batch["input_ids"][r].tolist(), batch["document_ids"][r].tolist()
        chunk = owner[r * max_length : (r + 1) * max_length]
        # Same document <=> same owner (fill EOS: one document each); numbering is 0, 1, ... in order.
        assert got[0] == 0 and all(b - a in (0, 1) for a, b in zip(got, got[1:], strict=False))
        for i in range(len(chunk) - 1):
            assert (got[i] == got[i + 1]) == (chunk[i] == chunk[i + 1])
        assert ids[: len(chunk)] == stream[r * max_length : (r + 1) * max_length]
    assert torch.equal(batch["document_ids"], document_ids_from_eos(batch["input_ids"], eos))


def test_sft_collator_packing():
    tokenizer = _tokenizer()
    collator = LLaDASFTCollator(tokenizer, max_length=64, packing=True, pad_to_max_length=True)
    examples = [{"prompt": "a b", "response": "c d e"}, {"prompt": "f", "response": "g h"}] * 4
    plain = LLaDASFTCollator(tokenizer, max_length=64)
    one = plain([examples[0]])["input_ids"][0]
    two = plain([examples[1]])["input_ids"][0]
    batch = collator(examples)
    ids, labels, docs = batch["input_ids"], batch["labels"], batch["document_ids"]
    per_row = 64 // (len(one) + len(two)) * 2
    assert ids.shape == (-(-len(examples) // per_row), 64)
    row = ids[0].tolist()
    assert row[: len(one)] == one.tolist() and row[len(one) : len(one) + len(two)] == two.tolist()
    assert docs[0, : len(one)].tolist() == [0] * len(one)
    assert docs[0, len(one) : len(one) + len(two)].tolist() == [1] * len(two)
    assert (labels[0, : len(one)] == -100).sum() == (plain([examples[0]])["labels"][0] == -100).sum()
    # The fill after the last sample of a row belongs to that sample.
    last = int(docs[-1].max())
    assert (docs[-1, -1] == last) and (ids[-1, -1] == collator.eos_token_id)
