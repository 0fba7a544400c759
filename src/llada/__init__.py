"""llada: LLaDA masked diffusion language models for the Hugging Face stack.

`import llada` registers the model with the transformers Auto classes: `AutoConfig`, and `AutoModel`,
`AutoModelForMaskedLM` and `AutoModelForCausalLM` (all resolve to `LLaDAModelLM`, as in the published checkpoints).
Training lives in `llada.training`, evaluation in `llada.evaluation`, publishing in `llada.hub`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from .configuration_llada import LLaDAConfig
from .configuration_llada_moe import LLaDAMoEConfig
from .generation_llada import (
    LLaDAGenerateOutput,
    LLaDAGenerationConfig,
    decode_generation,
    register_remasking,
    strip_after_eos,
)
from .hub import push_to_hub as _push_to_hub
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

__version__ = "0.1.0"

LLaDAPreTrainedModel.push_to_hub_function = _push_to_hub

AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
for _auto in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
    _auto.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    _auto.register(LLaDAMoEConfig, LLaDAMoEModelLM, exist_ok=True)  # same model_type; AutoConfig picks the class

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
    "register_remasking",
    "strip_after_eos",
]
