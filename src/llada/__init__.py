"""llada: LLaDA masked diffusion language models for the Hugging Face stack.

`import llada` registers the model with the transformers Auto classes: `AutoConfig`, and `AutoModel`,
`AutoModelForMaskedLM` and `AutoModelForCausalLM` (all resolve to `LLaDAModelLM`, as in the published checkpoints).
Training lives in `llada.training`, evaluation in `llada.evaluation`, publishing in `llada.hub`.

The package imports lazily (as transformers does): `import llada` costs no torch or transformers import; the names
below are imported on first access, and the Auto registration happens as soon as transformers' Auto modules load
(see `llada._registration`).
"""

from typing import TYPE_CHECKING

from . import _registration

__version__ = "0.1.0"

_registration.install()

if TYPE_CHECKING:
    from .configuration_llada import LLaDAConfig
    from .configuration_llada_moe import LLaDAMoEConfig
    from .generation_llada import (
        LLaDAGenerateOutput,
        LLaDAGenerationConfig,
        decode_generation,
        register_remasking,
        strip_after_eos,
    )
    from .masking_llada import MASK_EPS
    from .modeling_llada import (
        LLaDAKVCache,
        LLaDAMissingWeightsWarning,
        LLaDAModel,
        LLaDAModelLM,
        LLaDAPreTrainedModel,
    )
    from .modeling_llada_moe import LLaDAMoEModel, LLaDAMoEModelLM
    from .streaming import LLaDADiffusionStreamer, LLaDATerminalStreamer


def __getattr__(name: str):
    return _registration.lazy_attribute(__name__, name)


def __dir__():
    return sorted(set(globals()) | set(_registration._LAZY_EXPORTS))


register_auto_classes = _registration.register_auto_classes

__all__ = [
    "MASK_EPS",
    "LLaDAConfig",
    "LLaDADiffusionStreamer",
    "LLaDAGenerateOutput",
    "LLaDAGenerationConfig",
    "LLaDAKVCache",
    "LLaDAMissingWeightsWarning",
    "LLaDAModel",
    "LLaDAModelLM",
    "LLaDAMoEConfig",
    "LLaDAMoEModel",
    "LLaDAMoEModelLM",
    "LLaDAPreTrainedModel",
    "LLaDATerminalStreamer",
    "__version__",
    "decode_generation",
    "register_auto_classes",
    "register_remasking",
    "strip_after_eos",
]
