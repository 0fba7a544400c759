"""The embedded demo model: a small LLaDA trained on the King James Bible, shipped inside the package so that
`llada generate "In the beginning"` works offline on a CPU in seconds.

`DEMO_MODEL_DIR` is a folder in the usual format (`config.json`, bfloat16 `model.safetensors`, tokenizer,
`generation_config.json`, `README.md` model card); the code files are not duplicated there because the package
provides them. `examples/train_demo_model.py` remakes it.
"""

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).parent / "model"


def load_demo_model(device: str = "cpu", dtype=None):
    """Load the demo model and its tokenizer.

    Args:
        device (`str`, *optional*, defaults to `"cpu"`):
            Where to put the model.
        dtype (`torch.dtype`, *optional*):
            Defaults to float32 (the weights are stored in bfloat16 to keep the package small).

    Returns:
        `(LLaDAModelLM, PreTrainedTokenizerFast)`, the model in eval mode.
    """
    import torch
    from transformers import AutoTokenizer

    from ..modeling_llada import LLaDAModelLM

    if not (DEMO_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"The demo model is missing from this installation ({DEMO_MODEL_DIR}); remake it with "
            "examples/train_demo_model.py."
        )
    # float32 is also what config.json says (the weights are stored in bfloat16)
    model = LLaDAModelLM.from_pretrained(DEMO_MODEL_DIR, dtype=dtype or torch.float32).to(device).eval()
    return model, AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


__all__ = ["DEMO_MODEL_DIR", "load_demo_model"]
