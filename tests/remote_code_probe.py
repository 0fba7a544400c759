"""Load a saved LLaDA folder as a user without `llada` does (`trust_remote_code=True`); write what it computes.

Run by tests/test_remote_code_versions.py in a separate virtual environment (another transformers, no `llada`), and
in the saving process itself for the reference: the two outputs must be equal. Usable by hand too:

    python tests/remote_code_probe.py SAVED_FOLDER OUT.pt [--block-llada]

Writes a dict of tensors: logits of a padded batch, greedy generations (exact path, dual cache, the saved generation
config), a sampled one, log-likelihoods,
and the transformers version that loaded the folder.
"""

import importlib.abc
import sys


class _BlockLLaDA(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "llada" or name.startswith("llada."):
            raise ImportError("llada is blocked in this process")


def probe(folder: str) -> dict:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    kind = "LLaDAMoE" if type(config).__name__ == "LLaDAMoEConfig" else "LLaDA"
    assert type(config).__name__ == f"{kind}Config", type(config)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == f"{kind}ModelLM", type(model)
    assert type(AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)).__name__ == f"{kind}ModelLM"

    vocab, mask_id, pad_id = config.vocab_size, config.mask_token_id, config.pad_token_id
    ids = torch.arange(2 * 12).reshape(2, 12) * 37 % (vocab - 8)  # ordinary tokens, below the special ids
    ids[:, 5:9] = mask_id
    ids[1, :3] = pad_id
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :3] = 0
    prompts = ids[:, :6].clone()
    prompts[:, 5] = 7
    out = {"transformers_version": torch.tensor([int(p) for p in transformers.__version__.split(".")[:2]])}
    with torch.no_grad():
        out["logits"] = model(ids, attention_mask=attention_mask).logits
        for kv_cache in (None, "dual"):
            sequences = model.generate(
                prompts,
                attention_mask=attention_mask[:, :6],
                max_new_tokens=8,
                steps=8,
                block_length=4,
                temperature=0.0,
                kv_cache=kv_cache,
            )
            out[f"generation_{kv_cache}"] = sequences
        # With the settings of the folder's generation_config.json.
        out["generation_saved_config"] = model.generate(prompts, attention_mask=attention_mask[:, :6])
        out["generation_sampled"] = model.generate(
            prompts[:1], max_new_tokens=8, steps=4, temperature=1.0, generator=torch.Generator().manual_seed(3)
        )
    out["log_likelihood"] = model.log_likelihood(
        [prompts[0].tolist(), prompts[0, 2:].tolist()],
        [[11, 12, 13], [40, 41]],
        mc_num=8,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    out["tie_word_embeddings"] = torch.tensor(bool(model.config.tie_word_embeddings))
    out["special_ids"] = torch.tensor([config.mask_token_id, config.eos_token_id, config.pad_token_id])
    return out


def main(argv: list[str]) -> None:
    folder, target = argv[0], argv[1]
    if "--block-llada" in argv:
        sys.meta_path.insert(0, _BlockLLaDA())
    import torch

    torch.manual_seed(0)
    torch.save(probe(folder), target)
    print("PROBE-OK")


if __name__ == "__main__":
    main(sys.argv[1:])
