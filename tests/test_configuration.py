import json

import pytest
from transformers import AutoConfig

import llada  # noqa: F401  (registers the auto classes)
from llada import LLaDAConfig


def test_reads_every_published_field(fixture_dir):
    raw = json.loads((fixture_dir / "config.json").read_text())
    config = LLaDAConfig.from_pretrained(fixture_dir)
    for key, value in raw.items():
        if key in ("auto_map", "architectures", "transformers_version", "model_type"):
            continue
        assert getattr(config, key) == value, key
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id) == (317, 316, 316)


def test_hf_aliases_read_and_write_the_published_fields(fixture_dir):
    config = LLaDAConfig.from_pretrained(fixture_dir)
    assert config.hidden_size == 64 == config.d_model
    assert config.num_attention_heads == 4
    assert config.num_key_value_heads == 4
    assert config.num_hidden_layers == 2
    assert config.intermediate_size == 176
    assert config.max_position_embeddings == 256
    assert config.tie_word_embeddings is False
    config.hidden_size = 128
    assert config.d_model == 128
    built = LLaDAConfig(hidden_size=96, num_attention_heads=6, num_hidden_layers=3, num_key_value_heads=2)
    assert (built.d_model, built.n_heads, built.n_layers, built.n_kv_heads) == (96, 6, 3, 2)


def test_defaults_are_llada_8b():
    config = LLaDAConfig()
    assert (config.d_model, config.n_heads, config.n_kv_heads, config.n_layers) == (4096, 32, 32, 32)
    assert (config.mlp_hidden_size, config.vocab_size, config.max_sequence_length) == (12288, 126464, 4096)
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id) == (126336, 126081, 126081)


def test_auto_config_and_round_trip(tmp_path, fixture_dir):
    config = AutoConfig.from_pretrained(fixture_dir)
    assert isinstance(config, LLaDAConfig)
    config.save_pretrained(tmp_path)
    again = LLaDAConfig.from_pretrained(tmp_path)
    before, after = config.to_dict(), again.to_dict()
    before.pop("_name_or_path"), after.pop("_name_or_path")
    assert after == before


def test_n_kv_heads_defaults(fixture_dir):
    assert LLaDAConfig(n_heads=8, n_kv_heads=None, d_model=64).n_kv_heads == 8
    assert LLaDAConfig(n_heads=8, n_kv_heads=None, d_model=64, multi_query_attention=True).n_kv_heads == 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("alibi", True),
        ("block_type", "sequential"),
        ("layer_norm_type", "default"),
        ("activation_type", "gelu"),
        ("include_bias", True),
        ("scale_logits", True),
        ("rope", False),
    ],
)
def test_rejects_what_the_network_does_not_implement(field, value):
    with pytest.raises(ValueError, match=rf"{field}={value!r} is not implemented"):
        LLaDAConfig(**{field: value})


def test_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match=r"d_model \(100\) must be divisible by n_heads \(3\)"):
        LLaDAConfig(d_model=100, n_heads=3, n_kv_heads=3)
    with pytest.raises(ValueError, match=r"n_heads \(8\) must be a multiple of n_kv_heads \(3\)"):
        LLaDAConfig(d_model=64, n_heads=8, n_kv_heads=3)
    with pytest.raises(ValueError, match=r"mask_token_id \(500\) is outside the embedding table"):
        LLaDAConfig(vocab_size=320, embedding_size=320, mask_token_id=500, eos_token_id=1, pad_token_id=1)
    with pytest.raises(ValueError, match=r"embedding_size \(10\) must be at least vocab_size \(320\)"):
        LLaDAConfig(vocab_size=320, embedding_size=10)
