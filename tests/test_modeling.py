import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

import llada  # noqa: F401
from llada import LLaDAKVCache, LLaDAModelLM

from .conftest import tiny_config

CASES = ["logits_plain", "logits_masked", "logits_padded"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("attn", ["sdpa", "eager", "flex_attention"])
def test_reproduces_reference_logits(fixture_dir, reference, case, attn):
    model = LLaDAModelLM.from_pretrained(fixture_dir, attn_implementation=attn).eval()
    data = reference[case]
    with torch.no_grad():
        logits = model(data["input_ids"], attention_mask=data.get("attention_mask")).logits
    torch.testing.assert_close(logits, data["logits"], atol=1e-5, rtol=1e-5)


def test_auto_classes_resolve_to_the_lm(fixture_dir):
    for auto in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
        assert type(auto.from_pretrained(fixture_dir)) is LLaDAModelLM


def test_attention_is_bidirectional(official_model):
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 300
    with torch.no_grad():
        a, b = official_model(ids).logits, official_model(changed).logits
    # A token at the END changes the predictions at the START: no causal mask anywhere.
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4
    for block in official_model.model.transformer.blocks:
        assert block.is_causal is False


def test_padding_keys_are_invisible(official_model):
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[0, :4] = 0
    other = ids.clone()
    other[0, :4] = 7  # different tokens under the padding
    with torch.no_grad():
        a = official_model(ids, attention_mask=mask).logits
        b = official_model(other, attention_mask=mask).logits
    torch.testing.assert_close(a[:, 4:], b[:, 4:])


def test_save_reload_is_bit_exact_and_keeps_published_keys(tmp_path, fixture_dir, reference):
    model = LLaDAModelLM.from_pretrained(fixture_dir).eval()
    model.save_pretrained(tmp_path)
    with safe_open(fixture_dir / "model.safetensors", "pt") as f:
        published = set(f.keys())
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    assert saved == published
    again = LLaDAModelLM.from_pretrained(tmp_path).eval()
    ids = reference["logits_masked"]["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_grouped_query_attention_backends_agree():
    torch.manual_seed(0)
    config = tiny_config(n_heads=4, n_kv_heads=2)
    sdpa = LLaDAModelLM(config).eval()
    config_eager = tiny_config(n_heads=4, n_kv_heads=2)
    config_eager._attn_implementation = "eager"
    eager = LLaDAModelLM(config_eager).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert eager.config._attn_implementation == "eager"
    ids = torch.randint(0, 98, (2, 10))
    mask = torch.tensor([[1] * 10, [0] * 3 + [1] * 7])
    with torch.no_grad():
        torch.testing.assert_close(sdpa(ids, attention_mask=mask).logits, eager(ids, attention_mask=mask).logits)
    assert sdpa.model.transformer.blocks[0].k_proj.weight.shape == (2 * 8, 32)


def test_logits_to_keep_variants(official_model, reference):
    ids = reference["logits_plain"]["input_ids"]
    with torch.no_grad():
        full = official_model(ids).logits
        assert torch.allclose(official_model(ids, logits_to_keep=5).logits, full[:, -5:], atol=1e-6)
        assert torch.allclose(official_model(ids, logits_to_keep=slice(3, 9)).logits, full[:, 3:9], atol=1e-6)
        index = torch.tensor([0, 7, 23])
        assert torch.allclose(official_model(ids, logits_to_keep=index).logits, full[:, index], atol=1e-6)
        chosen = torch.zeros(ids.shape, dtype=torch.bool)
        chosen[0, 2] = chosen[2, 5] = chosen[2, 6] = True
        picked = official_model(ids, logits_to_keep=chosen).logits
    assert picked.shape == (3, 320)
    torch.testing.assert_close(picked, full[chosen], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("window", [(8, 24), (8, 16), (0, 24), (20, 24)])
def test_kv_cache_window_equals_full_forward(official_model, reference, window):
    """A forward pass over a window with the rest cached gives the logits of the full pass when nothing changed."""
    data = reference["logits_padded"]
    ids, mask = data["input_ids"], data["attention_mask"]
    start, end = window
    with torch.no_grad():
        full = official_model(ids, attention_mask=mask, use_cache=True)
        assert isinstance(full.past_key_values, LLaDAKVCache) and len(full.past_key_values) == 2
        part = official_model(
            ids[:, start:end],
            attention_mask=mask,
            past_key_values=full.past_key_values,
            cache_position=torch.arange(start, end),
        ).logits
    torch.testing.assert_close(part, full.logits[:, start:end], atol=1e-5, rtol=1e-5)


def test_kv_cache_sees_updated_window(official_model):
    """Changed tokens inside the window are attended to; positions outside keep their cached (old) keys."""
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(2))
    new = ids.clone()
    new[0, 8:12] = 317
    window = torch.arange(8, 12)
    with torch.no_grad():
        old = official_model(ids, use_cache=True)
        windowed = official_model(new[:, 8:12], past_key_values=old.past_key_values, cache_position=window).logits
        fresh = official_model(new, use_cache=True)
        refreshed = official_model(new[:, 8:12], past_key_values=fresh.past_key_values, cache_position=window).logits
    assert (windowed - old.logits[:, 8:12]).abs().max() > 1e-3  # the new window tokens are seen
    assert (windowed - fresh.logits[:, 8:12]).abs().max() > 1e-6  # but the keys outside are the cached ones
    torch.testing.assert_close(refreshed, fresh.logits[:, 8:12], atol=1e-5, rtol=1e-5)


def test_hidden_states_and_tuple_output(official_model, reference):
    ids = reference["logits_plain"]["input_ids"]
    with torch.no_grad():
        out = official_model(ids, output_hidden_states=True)
        as_tuple = official_model(ids, return_dict=False)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (3, 24, 64)
    torch.testing.assert_close(as_tuple[0], out.logits)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).train()
    ids = torch.randint(0, 98, (2, 12))

    def grads():
        model.zero_grad()
        model(ids).logits.float().pow(2).mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.gradient_checkpointing_enable()
    assert model.model.transformer.blocks[0].gradient_checkpointing
    checkpointed = grads()
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


def test_bfloat16_follows_float32(fixture_dir, reference):
    model = LLaDAModelLM.from_pretrained(fixture_dir, dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16
    data = reference["logits_padded"]
    with torch.no_grad():
        logits = model(data["input_ids"], attention_mask=data["attention_mask"]).logits
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - data["logits"]).abs().max() < 0.1


def test_weight_tying_uses_the_embedding_as_head(tmp_path):
    model = LLaDAModelLM(tiny_config(weight_tying=True)).eval()
    assert "ff_out" not in model.model.transformer
    ids = torch.randint(0, 98, (1, 6))
    with torch.no_grad():
        h = model.model(ids).last_hidden_state
        torch.testing.assert_close(model(ids).logits, h @ model.model.transformer.wte.weight.T)
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert "model.transformer.ff_out.weight" not in set(f.keys())
    again = LLaDAModelLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


# --- bad input -------------------------------------------------------------------------------------------------


def test_token_id_outside_vocabulary(official_model):
    with pytest.raises(ValueError, match=r"token id 320 is outside the vocabulary \[0, 320\)"):
        official_model(torch.tensor([[1, 2, 320]]))
    with pytest.raises(ValueError, match=r"token id -1 is outside the vocabulary"):
        official_model(torch.tensor([[-1, 2, 3]]))


def test_sequence_longer_than_max(official_model):
    with pytest.raises(ValueError, match=r"sequence length 257 exceeds max_sequence_length \(256\)"):
        official_model(torch.zeros(1, 257, dtype=torch.long))


def test_attention_mask_of_wrong_shape(official_model):
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 5\) but must be .* \(1, 6\)"):
        official_model(torch.zeros(1, 6, dtype=torch.long), attention_mask=torch.ones(1, 5))


def test_input_ids_without_batch_dimension(official_model):
    with pytest.raises(ValueError, match=r"add a batch dimension"):
        official_model(torch.zeros(6, dtype=torch.long))


def test_unknown_attention_implementation(fixture_dir):
    with pytest.raises(ValueError, match="no_such_backend"):
        LLaDAModelLM.from_pretrained(fixture_dir, attn_implementation="no_such_backend")


def test_cache_needs_cache_position(official_model):
    ids = torch.zeros(1, 6, dtype=torch.long)
    cache = official_model(ids, use_cache=True).past_key_values
    with pytest.raises(ValueError, match="past_key_values needs cache_position"):
        official_model(ids[:, 2:], past_key_values=cache)
    with pytest.raises(ValueError, match=r"cache_position 4\.\.7 runs past the cached length 6"):
        official_model(ids[:, 2:], past_key_values=cache, cache_position=torch.arange(4, 8))


def test_forward_refuses_labels(official_model):
    ids = torch.zeros(1, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="computes no loss from labels.*LLaDATrainer"):
        official_model(ids, labels=ids)


def test_full_graph_compile_matches_eager(official_model, reference):
    """The exact path (no cache) compiles as one graph: no host syncs or data-dependent branches in the forward."""
    data = reference["logits_padded"]
    ids, mask = data["input_ids"], data["attention_mask"]
    compiled = torch.compile(official_model, fullgraph=True)
    with torch.no_grad():
        eager = official_model(ids, attention_mask=mask, logits_to_keep=slice(8, 16)).logits
        graph = compiled(ids, attention_mask=mask, logits_to_keep=slice(8, 16)).logits  # no private flag needed
    torch.testing.assert_close(graph, eager, atol=1e-5, rtol=1e-5)


def test_kv_cache_written_in_place_equals_concatenation(official_model):
    """The sampler's block-private cache writes the window in place: same logits as the concatenating cache."""
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(3))
    window = torch.arange(8, 12)
    with torch.no_grad():
        copying = official_model(ids, use_cache=True).past_key_values
        in_place = official_model(ids, use_cache=True).past_key_values
        in_place.write_in_place = True
        before = in_place.keys[0].clone()
        for step in range(2):  # two successive steps of one block, each with new tokens in the window
            new = ids.clone()
            new[:, 8 : 10 + step] = 317
            a = official_model(new[:, 8:12], past_key_values=copying, cache_position=window).logits
            b = official_model(new[:, 8:12], past_key_values=in_place, cache_position=window).logits
            torch.testing.assert_close(b, a)
    assert torch.equal(in_place.keys[0][:, :, :8], before[:, :, :8])  # outside the window: untouched
    assert not torch.equal(in_place.keys[0][:, :, 8:12], before[:, :, 8:12])  # the window: rewritten
    assert torch.equal(copying.keys[0], before)  # the default cache is never modified
