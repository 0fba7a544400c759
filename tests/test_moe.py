"""LLaDA-MoE: the published tiny checkpoint reproduced (logits, routing, generations, likelihood), dispatch from the
shared model_type "llada", saves in the published layout, trust_remote_code, bad configs, routing options."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from llada import LLaDAConfig, LLaDAModelLM, LLaDAMoEConfig, LLaDAMoEModelLM
from llada.modeling_llada import HUB_CORE_FILES

FIXTURE = Path(__file__).parent / "fixtures" / "official-lladamoe-tiny"
DENSE_FIXTURE = Path(__file__).parent / "fixtures" / "official-llada-tiny"
SRC = Path(__file__).resolve().parents[1] / "src" / "llada"
REFERENCE = torch.load(FIXTURE / "reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def model():
    return LLaDAModelLM.from_pretrained(FIXTURE).eval()


def tiny_moe_config(**overrides):
    values = dict(
        vocab_size=100,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        dense_intermediate_size=48,
        expert_intermediate_size=16,
        shared_expert_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        moe_layer_freq=[0, 1],
        max_position_embeddings=64,
        mask_token_id=99,
        eos_token_id=98,
        pad_token_id=98,
    )
    values.update(overrides)
    return LLaDAMoEConfig(**values)


# ---- the published numerics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["logits_plain", "logits_masked", "logits_padded"])
def test_reproduces_reference_logits(model, case):
    data = REFERENCE[case]
    with torch.no_grad():
        logits = model(data["input_ids"], attention_mask=data.get("attention_mask")).logits
    torch.testing.assert_close(logits, data["logits"], atol=1e-5, rtol=0)


def test_reproduces_routing_and_final_hidden_states(model):
    router = REFERENCE["router"]
    with torch.no_grad():
        out = model.model(REFERENCE["logits_plain"]["input_ids"], output_router_logits=True)
    torch.testing.assert_close(out.last_hidden_state, REFERENCE["hidden_states_last"]["hidden"], atol=1e-5, rtol=0)
    moe_layers = [i for i, f in enumerate(model.config.moe_layer_freq) if f]
    assert moe_layers == list(router["layers"])
    for n in range(len(moe_layers)):
        logits, selected = out.router_logits[n], out.selected_experts[n]
        torch.testing.assert_close(logits, router["router_logits"][n].reshape(logits.shape), atol=1e-5, rtol=0)
        assert torch.equal(selected, router["selected_experts"][n].reshape(selected.shape))
        weights = torch.softmax(logits.float(), -1).gather(-1, selected)
        torch.testing.assert_close(weights, router["routing_weights"][n].reshape(weights.shape), atol=1e-6, rtol=0)


def test_eager_attention_reproduces_padded_logits():
    model = LLaDAModelLM.from_pretrained(FIXTURE, attn_implementation="eager").eval()
    data = REFERENCE["logits_padded"]
    with torch.no_grad():
        logits = model(data["input_ids"], attention_mask=data["attention_mask"]).logits
    torch.testing.assert_close(logits, data["logits"], atol=1e-5, rtol=0)


def test_gradient_checkpointing_same_gradients_and_bfloat16_follows_float32(model):
    ids = REFERENCE["logits_masked"]["input_ids"]
    grads = []
    for checkpointing in (False, True):
        other = LLaDAMoEModelLM.from_pretrained(FIXTURE)
        if checkpointing:
            enable = getattr(other, "activation_checkpointing_enable", None) or other.gradient_checkpointing_enable
            enable()
        other.train()
        other(ids).logits.float().logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in other.named_parameters() if p.grad is not None})
    assert "model.layers.1.mlp.experts.gate_up_proj" in grads[0] and grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)
    bf16 = LLaDAMoEModelLM.from_pretrained(FIXTURE, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        low, high = bf16(ids).logits.float(), model(ids).logits
    assert (low - high).abs().max() < 0.1 * high.abs().max()


@pytest.mark.parametrize("implementation", ["eager", "batched_mm"])
def test_experts_kernels_agree(implementation):
    model = LLaDAMoEModelLM.from_pretrained(FIXTURE, experts_implementation=implementation).eval()
    assert model.config._experts_implementation == implementation
    data = REFERENCE["logits_padded"]
    with torch.no_grad():
        logits = model(data["input_ids"], attention_mask=data["attention_mask"]).logits
    torch.testing.assert_close(logits, data["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", range(len(REFERENCE["generate"])))
def test_reference_generations_token_for_token(model, case):
    ref = REFERENCE["generate"][case]
    kwargs = dict(ref["kwargs"])
    out = model.generate(
        ref["prompt"], attention_mask=ref["attention_mask"], max_new_tokens=kwargs.pop("gen_length"), **kwargs
    )
    assert torch.equal(out, ref["output"])


@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
def test_cached_generation_runs_and_cache_window_is_exact(model, kv_cache):
    ref = REFERENCE["generate"][4]
    out = model.generate(
        ref["prompt"],
        attention_mask=ref["attention_mask"],
        max_new_tokens=16,
        steps=16,
        block_length=8,
        kv_cache=kv_cache,
    )
    assert out.shape == ref["output"].shape and torch.equal(out[:, :12], ref["prompt"])
    data = REFERENCE["logits_padded"]
    with torch.no_grad():
        full = model(data["input_ids"], attention_mask=data["attention_mask"], use_cache=True)
        window = model(
            data["input_ids"][:, 8:16],
            attention_mask=data["attention_mask"],
            past_key_values=full.past_key_values,
            cache_position=torch.arange(8, 16),
        )
    torch.testing.assert_close(window.logits, full.logits[:, 8:16], atol=1e-5, rtol=0)


def test_likelihood_within_the_published_spread(model):
    ref = REFERENCE["loglikelihood"]
    n = 8
    estimates = model.log_likelihood(
        ref["prompt"], [ref["answer"]] * n, mc_num=256, generator=torch.Generator().manual_seed(0)
    )
    std = ref["official_std_mc256"]
    assert abs(estimates.mean().item() - ref["official_mean"]) < 4 * (std**2 / n + (std / 8) ** 2) ** 0.5


# ---- dispatch, saving, remote code ----------------------------------------------------------------------------------


def test_auto_classes_dispatch_both_ways():
    assert type(AutoConfig.from_pretrained(FIXTURE)) is LLaDAMoEConfig
    assert type(AutoConfig.from_pretrained(DENSE_FIXTURE)) is LLaDAConfig
    assert type(LLaDAConfig.from_pretrained(FIXTURE)) is LLaDAMoEConfig
    for auto in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
        assert type(auto.from_pretrained(FIXTURE)) is LLaDAMoEModelLM
        assert type(auto.from_pretrained(DENSE_FIXTURE)) is LLaDAModelLM
    assert type(LLaDAModelLM.from_pretrained(DENSE_FIXTURE)) is LLaDAModelLM


def test_dispatch_passes_config_overrides_and_refuses_rope_scaling():
    """`LLaDAModelLM.from_pretrained(moe_folder, field=...)` sets the field, as for a dense folder; rope_scaling, not
    implemented for LLaDA-MoE, is refused by name (not a TypeError from the model's __init__)."""
    model = LLaDAModelLM.from_pretrained(FIXTURE, router_aux_loss_coef=0.25)
    assert type(model) is LLaDAMoEModelLM and model.config.router_aux_loss_coef == 0.25
    for cls in (LLaDAModelLM, LLaDAMoEModelLM):
        with pytest.raises(ValueError, match="rope_scaling=.*not implemented for LLaDA-MoE"):
            cls.from_pretrained(FIXTURE, rope_scaling={"rope_type": "ntk", "factor": 4.0})
    assert LLaDAMoEConfig.from_pretrained(FIXTURE).rope_scaling is None
    assert "rope_scaling" not in LLaDAMoEConfig().to_dict()


def test_save_keeps_the_published_layout_and_reloads_exactly(model, tmp_path):
    model.save_pretrained(tmp_path)
    ours, published = load_file(tmp_path / "model.safetensors"), load_file(FIXTURE / "model.safetensors")
    assert sorted(ours) == sorted(published)
    assert all(torch.equal(ours[k], published[k]) for k in published)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llada" and config["architectures"] == ["LLaDAMoEModelLM"]
    assert config["auto_map"]["AutoModel"] == "modeling_llada_moe.LLaDAMoEModelLM"
    published_config = json.loads((FIXTURE / "config.json").read_text())
    for key, value in published_config.items():
        if key not in ("auto_map", "transformers_version", "torch_dtype", "dtype"):
            assert config.get(key, None) == value, key
    for name in HUB_CORE_FILES:
        assert (tmp_path / name).read_text() == (SRC / name).read_text()
    again = AutoModel.from_pretrained(tmp_path)
    ids = REFERENCE["logits_masked"]["input_ids"]
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


REMOTE_SCRIPT = r"""
import importlib.abc, sys

class BlockLLaDA(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "llada" or name.startswith("llada."):
            raise ImportError("llada is blocked in this process")

sys.meta_path.insert(0, BlockLLaDA())
import torch
from transformers import AutoModel

folder, reference = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__name__ == "LLaDAMoEModelLM" and type(model).__module__.startswith("transformers_modules")
data = torch.load(reference, weights_only=True)
with torch.no_grad():
    logits = model(data["logits_padded"]["input_ids"], attention_mask=data["logits_padded"]["attention_mask"]).logits
torch.testing.assert_close(logits, data["logits_padded"]["logits"], atol=1e-5, rtol=0)
case = data["generate"][4]
out = model.generate(
    case["prompt"], attention_mask=case["attention_mask"], max_new_tokens=16, steps=16, block_length=8
)
assert torch.equal(out, case["output"])
print("REMOTE-OK")
"""


def test_trust_remote_code_without_llada(model, tmp_path):
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(FIXTURE / "reference.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "REMOTE-OK" in result.stdout, result.stdout + result.stderr


# ---- config fields --------------------------------------------------------------------------------------------------


def test_ignored_fields_do_not_change_a_published_checkpoint(model):
    ids = REFERENCE["logits_plain"]["input_ids"]
    config = LLaDAMoEConfig.from_pretrained(
        FIXTURE, norm_topk_prob=True, routed_scaling_factor=2.5, router_aux_loss_coef=0.5
    )
    other = LLaDAMoEModelLM.from_pretrained(FIXTURE, config=config).eval()
    with torch.no_grad():
        assert torch.equal(other(ids).logits, model(ids).logits)
    # Marked as our own checkpoint, the fields take effect: renormalised and scaled top-k weights.
    config.llada_routing_options = True
    with torch.no_grad():
        out = other.model(ids, output_router_logits=True)
    from llada.modeling_llada_moe import route

    weights, experts = route(config, out.router_logits[0], None)
    torch.testing.assert_close(weights.sum(-1), torch.full((ids.numel(),), 2.5))
    assert torch.equal(experts, out.selected_experts[0])


def test_expert_bias_is_a_saved_buffer_that_shifts_routing(tmp_path):
    torch.manual_seed(0)
    model = LLaDAMoEModelLM(tiny_moe_config(moe_router_enable_expert_bias=True)).eval()
    bias = model.model.layers[1].mlp.expert_bias
    assert not isinstance(bias, torch.nn.Parameter) and "model.layers.1.mlp.expert_bias" in model.state_dict()
    bias.copy_(torch.tensor([10.0, 0.0, 0.0, -10.0]))
    ids = torch.randint(0, 98, (2, 6))
    with torch.no_grad():
        out = model.model(ids, output_router_logits=True)
    assert (out.selected_experts[0][:, 0] == 0).all() and not (out.selected_experts[0] == 3).any()
    model.save_pretrained(tmp_path)
    assert torch.equal(load_file(tmp_path / "model.safetensors")["model.layers.1.mlp.expert_bias"], bias)
    assert torch.equal(LLaDAMoEModelLM.from_pretrained(tmp_path).model.layers[1].mlp.expert_bias, bias)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(num_experts_per_tok=5), "num_experts_per_tok"),
        (dict(moe_layer_freq=[0, 1, 1]), "moe_layer_freq"),
        (dict(num_attention_heads=5), "num_attention_heads"),
        (dict(partial_rotary_factor=0.0), "partial_rotary_factor"),
        (dict(partial_rotary_factor=1.5), "partial_rotary_factor"),
        (dict(moe_router_score_function="sigmoid"), "moe_router_score_function"),
        (dict(router_num_group=4), "router_num_group"),
        (dict(router_topk_group=2), "router_topk_group"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
    ],
)
def test_inconsistent_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_moe_config(**overrides)


def test_partial_rotary_leaves_the_other_dims_alone():
    torch.manual_seed(0)
    config = tiny_moe_config(partial_rotary_factor=0.5)
    assert config.rotary_dim == 4
    model = LLaDAMoEModelLM(config).eval()
    ids = torch.randint(0, 98, (1, 8))
    with torch.no_grad():
        assert model(ids).logits.shape == (1, 8, 100)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_document_ids_compute_each_packed_document_alone(implementation):
    """Packed rows (the collators' `document_ids`): each document's logits are those of the document run alone."""
    torch.manual_seed(0)
    model = LLaDAMoEModelLM(tiny_moe_config(attn_implementation=implementation)).eval()
    ids = torch.randint(0, 98, (2, 7))
    documents = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        packed = model(ids, document_ids=documents).logits
        for row, start, end in [(0, 0, 3), (0, 3, 7), (1, 0, 2), (1, 2, 7)]:
            alone = model(ids[row : row + 1, start:end]).logits[0]
            torch.testing.assert_close(packed[row, start:end], alone, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"document_ids has shape \(2, 3\)"):
        model(ids, document_ids=documents[:, :3])


# ---- training -------------------------------------------------------------------------------------------------------


def tiny_moe_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return LLaDAMoEModelLM(tiny_moe_config(**overrides))


def test_router_losses_by_hand():
    from llada.training.moe import router_losses

    # Uniform router: balance loss 1 whatever the selections; z-loss = log(E)^2.
    logits = torch.zeros(6, 4)
    experts = torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3], [0, 1], [2, 3]])
    aux, z = router_losses((logits,), (experts,), 4)
    assert aux.item() == pytest.approx(1.0) and z.item() == pytest.approx(torch.log(torch.tensor(4.0)).item() ** 2)
    # Every token on experts 0 and 1, which also hold all the probability: E * (1/2 * 1/2 + 1/2 * 1/2) = 2.
    logits = torch.tensor([[30.0, 30.0, -30.0, -30.0]]).repeat(4, 1)
    aux, _ = router_losses((logits,), (torch.tensor([[0, 1]]).repeat(4, 1),), 4)
    assert aux.item() == pytest.approx(2.0, rel=1e-6)
    # Padding tokens do not count.
    mask = torch.tensor([1, 1, 0, 0])
    skewed = torch.tensor([[0, 1], [0, 1], [2, 3], [2, 3]])
    a_masked, _ = router_losses((logits,), (skewed,), 4, mask)
    a_real, _ = router_losses((logits[:2],), (skewed[:2],), 4)
    assert a_masked.item() == pytest.approx(a_real.item())


def test_sft_run_adds_and_logs_router_losses(tmp_path):
    from llada.training import LLaDATrainer
    from tests.test_training import random_rows, stack_batch, training_args

    model = tiny_moe_model()
    args = training_args(tmp_path, max_steps=2, router_aux_loss_coef=0.5, router_z_loss_coef=0.1, learning_rate=1e-3)
    trainer = LLaDATrainer(
        model=model, args=args, train_dataset=random_rows(4, 10, prompt=3), data_collator=stack_batch
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all("aux_loss" in e and "z_loss" in e for e in logged)
    assert all(0.9 < e["aux_loss"] < 4 and e["z_loss"] > 0 for e in logged)
    # The added term is exactly coef * aux + coef * z of the same forward.
    batch = stack_batch(random_rows(2, 10, seed=3, prompt=3))
    model.train()
    with_router = trainer.compute_loss(model, batch)
    trainer._router_logs = {}
    trainer.args.router_aux_loss_coef, trainer.args.router_z_loss_coef = 0.0, 0.0
    trainer._mask_step = (trainer.state.global_step, -1)  # draw the same masks again
    plain = trainer.compute_loss(model, batch)
    assert trainer._router_logs == {}
    trainer.args.router_aux_loss_coef, trainer.args.router_z_loss_coef = 0.5, 0.1
    trainer._mask_step = (trainer.state.global_step, -1)
    again = trainer.compute_loss(model, batch)
    aux, z = trainer._router_logs["aux_loss"], trainer._router_logs["z_loss"]
    torch.testing.assert_close(with_router, again)
    torch.testing.assert_close(again - plain, 0.5 * aux + 0.1 * z, atol=1e-5, rtol=1e-5)


def test_expert_bias_update_rule(tmp_path):
    from llada.training import LLaDATrainer
    from tests.test_training import random_rows, stack_batch, training_args

    model = tiny_moe_model(moe_router_enable_expert_bias=True)
    bias = model.model.layers[1].mlp.expert_bias
    args = training_args(tmp_path, max_steps=1, expert_bias_update_rate=0.25, router_aux_loss_coef=0.0)
    trainer = LLaDATrainer(model=model, args=args, train_dataset=random_rows(2, 10), data_collator=stack_batch)
    loads = []
    original = trainer._router_loss

    def record(out, mask, *options):
        loads.append(torch.bincount(out.selected_experts[0].reshape(-1), minlength=4).float())
        return original(out, mask, *options)

    trainer._router_loss = record
    trainer.train()
    assert not bias.requires_grad and len(loads) == 1
    expected = 0.25 * torch.sign(loads[0].mean() - loads[0])
    assert torch.equal(bias, expected)
    with pytest.raises(ValueError, match="moe_router_enable_expert_bias"):
        LLaDATrainer(model=tiny_moe_model(), args=args, train_dataset=random_rows(2, 10), data_collator=stack_batch)


def test_vrpo_adds_router_losses_and_updates_the_expert_bias(tmp_path):
    """VRPO on LLaDA-MoE trains the router like LLaDATrainer: the policy's aux / z losses join the preference loss
    (exactly log 2 + the router term while policy = reference) and are logged; the expert-bias update runs."""
    from llada.training import LLaDAVRPOConfig, LLaDAVRPOTrainer
    from tests.test_vrpo import pairs, stack

    model = tiny_moe_model(moe_router_enable_expert_bias=True)
    bias = model.model.layers[1].mlp.expert_bias
    args = LLaDAVRPOConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no",
        logging_steps=1, per_device_train_batch_size=2, mc_budget=2, max_steps=1, learning_rate=1e-3,
        router_aux_loss_coef=0.5, router_z_loss_coef=0.1, expert_bias_update_rate=0.25,
    )  # fmt: skip
    trainer = LLaDAVRPOTrainer(model=model, args=args, train_dataset=pairs(2), data_collator=stack)
    model.train()
    loss = trainer.compute_loss(model, stack(pairs(2)))
    aux, z = trainer._router_logs["aux_loss"], trainer._router_logs["z_loss"]
    torch.testing.assert_close(loss, math.log(2) + 0.5 * aux + 0.1 * z)
    trainer._router_logs, trainer._expert_loads = {}, None
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 1 and logged[0]["aux_loss"] > 0 and logged[0]["z_loss"] > 0
    assert bias.abs().sum() > 0  # moved by +-0.25 per expert


def test_lora_targets_attention_shared_and_dense_mlps_never_router_or_head():
    from peft import get_peft_model

    from llada.training.lora import llada_lora_config

    model = get_peft_model(tiny_moe_model(), llada_lora_config(r=2, moe=True))
    adapted = {
        n.split(".lora_A")[0].split("base_model.model.")[1] for n, _ in model.named_parameters() if "lora_A" in n
    }
    assert "model.layers.0.mlp.gate_proj" in adapted and "model.layers.1.shared_expert.down_proj" in adapted
    assert "model.layers.1.self_attn.o_proj" in adapted and len(adapted) == 2 * 4 + 3 + 3
    assert not any(".mlp.gate" == n[-9:] or "lm_head" in n or "experts" in n for n in adapted)
    ids = torch.randint(0, 98, (1, 6))
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, 6, 100)
    with_experts = get_peft_model(tiny_moe_model(), llada_lora_config(r=2, moe=True, experts=True))
    assert any("experts" in n and "lora" in n for n, _ in with_experts.named_parameters())
    with pytest.raises(ValueError, match="moe=True"):
        llada_lora_config(experts=True)


# ---- CLI and hub ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moe_model_dir(tmp_path_factory):
    from llada.training.tokenizer import train_tokenizer

    from .test_cli import TEXT

    tokenizer = train_tokenizer([TEXT] * 8, vocab_size=300)
    config = tiny_moe_config(
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LLaDAMoEModelLM(config)
    folder = tmp_path_factory.mktemp("cli-moe-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_generate_info_and_push(capsys, monkeypatch, moe_model_dir):
    from transformers import AutoTokenizer

    from llada.generation_llada import decode_generation

    from .test_cli import run
    from .test_hub import HubStandIn

    code, out, err = run(capsys, monkeypatch, "generate", "--model", moe_model_dir, "--steps", "4",
                         "--max-new-tokens", "8", "--block-length", "4", "In the")  # fmt: skip
    assert code == 0, err
    model = LLaDAModelLM.from_pretrained(moe_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(moe_model_dir)
    ids = tokenizer(["In the"], return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=8, steps=4, block_length=4)
    assert out.strip() == decode_generation(tokenizer, expected, prompt_length=0)[0].strip()

    code, out, err = run(capsys, monkeypatch, "info", "--model", moe_model_dir, "--json")
    info = json.loads(out)
    assert code == 0 and info["routed experts / per token"] == "4 / 2" and info["layers (MoE / dense)"] == "2 (1 / 1)"
    assert info["parameters"] == sum(p.numel() for p in model.parameters())

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with HubStandIn() as hub:
        code, out, err = run(capsys, monkeypatch, "push", "me/moe", "--model", moe_model_dir, "--endpoint",
                             hub.endpoint, "--token", "t")  # fmt: skip
    assert code == 0, err
    files = hub.repos["me/moe"]
    assert {"model.safetensors", "modeling_llada_moe.py", "configuration_llada_moe.py", "README.md"} <= set(files)
    assert "routed experts / per token" in files["README.md"].decode()
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in load_file_bytes(files["model.safetensors"])


def load_file_bytes(data: bytes) -> dict:
    from safetensors.torch import load

    return load(data)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    norm=st.booleans(),
    scale=st.sampled_from([1, 0.5, 2.5]),
    own=st.booleans(),
    with_bias=st.booleans(),
)
def test_routing_options(seed, norm, scale, own, with_bias):
    from llada.modeling_llada_moe import route

    config = tiny_moe_config(norm_topk_prob=norm, routed_scaling_factor=scale, llada_routing_options=own)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, 4, generator=g)
    bias = torch.randn(4, generator=g) * 0.1 if with_bias else None
    weights, experts = route(config, logits, bias)
    scores = logits.softmax(-1) + (0 if bias is None else bias)
    expected, chosen = scores.topk(2, dim=-1)
    assert torch.equal(experts, chosen)  # the selection never depends on the ignored fields
    if own and norm:
        expected = expected / expected.sum(-1, keepdim=True)
    if own:
        expected = expected * scale
    torch.testing.assert_close(weights, expected)


def test_eval_loss_is_the_diffusion_bound_only(tmp_path):
    from llada.training import LLaDATrainer

    from .test_training import random_rows, stack_batch, training_args

    rows = random_rows(2, 10, prompt=3)
    losses = []
    for coef in (0.0, 5.0):
        args = training_args(tmp_path, router_aux_loss_coef=coef, router_z_loss_coef=coef)
        trainer = LLaDATrainer(model=tiny_moe_model(), args=args, eval_dataset=rows, data_collator=stack_batch)
        losses.append(trainer.evaluate()["eval_loss"])
    assert losses[0] == losses[1]
