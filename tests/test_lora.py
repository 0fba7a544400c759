"""LoRA: the config adapts the blocks and never the LM head; train, save, reload, merge, generate."""

import re

import pytest
import torch
from peft import PeftModel, get_peft_model

from llada import LLaDAModelLM
from llada.training import LLADA_LORA_TARGETS, LLaDATrainer, llada_lora_config, lora_target_regex

from .test_training import random_rows, stack_batch, tiny_model, training_args


def test_target_regex_selects_block_layers_not_the_head():
    pattern = lora_target_regex()
    for name in LLADA_LORA_TARGETS:
        assert re.fullmatch(pattern, f"model.transformer.blocks.11.{name}")
    assert not re.fullmatch(pattern, "model.transformer.ff_out")  # the LM head shares the `ff_out` suffix
    assert not re.fullmatch(pattern, "model.transformer.wte")
    assert not re.fullmatch(pattern, "model.transformer.blocks.0.attn_norm")
    assert re.fullmatch(lora_target_regex(["q_proj"]), "base_model.model.model.transformer.blocks.0.q_proj")
    assert not re.fullmatch(lora_target_regex(["q_proj"]), "model.transformer.blocks.0.v_proj")


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown: \['lm_head'\]"):
        lora_target_regex(["q_proj", "lm_head"])
    with pytest.raises(ValueError, match=r"LoRA rank r \(0\)"):
        llada_lora_config(r=0)
    config = llada_lora_config(r=4)
    assert config.r == 4 and config.lora_alpha == 8


def lora_model(seed: int = 0) -> PeftModel:
    return get_peft_model(tiny_model(seed), llada_lora_config(r=4, init_lora_weights=True))


def test_adapters_wrap_every_block_layer_and_not_the_head():
    model = lora_model()
    wrapped = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_modules() if name.endswith(".lora_A")}
    expected = {
        f"base_model.model.model.transformer.blocks.{i}.{layer}" for i in range(2) for layer in LLADA_LORA_TARGETS
    }
    assert wrapped == expected
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_lora_train_save_reload_merge_generate(tmp_path):
    model = lora_model()
    base_before = {k: v.clone() for k, v in model.named_parameters() if "lora_" not in k}
    args = training_args(tmp_path / "run", max_steps=3, learning_rate=5e-2, per_device_train_batch_size=4)
    trainer = LLaDATrainer(
        model=model, args=args, train_dataset=random_rows(12, 12, prompt=3), data_collator=stack_batch
    )
    trainer.train()
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(param, base_before[name]), f"{name} changed: only adapters train"
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # B starts at zero

    trainer.save_model(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    model.eval()
    ids = torch.tensor([[5, 17, 99, 99, 42, 99, 8, 3]])  # 99 = mask
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        plain = tiny_model()(ids).logits
    assert (adapted - plain).abs().max() > 1e-4  # the adapters do something

    reloaded = PeftModel.from_pretrained(tiny_model(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted)

    merged = reloaded.merge_and_unload()
    assert type(merged) is LLaDAModelLM
    merged.save_pretrained(tmp_path / "merged")
    standalone = LLaDAModelLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(standalone(ids).logits, adapted, atol=1e-5, rtol=1e-5)

    generate = getattr(LLaDAModelLM, "generate", None)
    if generate is None:
        pytest.skip("LLaDAModelLM.generate is not available")
    prompt = torch.tensor([[5, 17, 42, 8]])
    kwargs = dict(max_new_tokens=8, steps=8, block_length=8, temperature=0.0)
    with torch.no_grad():
        from_adapter = model.generate(prompt, **kwargs)
        from_merged = standalone.generate(prompt, **kwargs)
    sequences = [getattr(out, "sequences", out) for out in (from_adapter, from_merged)]
    assert sequences[0].shape == (1, 12)
    assert torch.equal(sequences[0], sequences[1])
