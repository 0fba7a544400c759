"""Registration of LLaDA with the transformers Auto classes, without importing torch or transformers early.

`import llada` must make `AutoConfig` / `AutoModel` / `AutoModelForMaskedLM` / `AutoModelForCausalLM` know the
`llada` model type, but importing transformers' Auto modules costs seconds (they import torch), which a command
such as `llada --help` should not pay. So `import llada` registers at once only when those modules are already
loaded; otherwise it installs a post-import hook that registers right after transformers loads them (and after
`llada.modeling_llada` loads, which also wires `push_to_hub` to `llada.hub`). Either way, the registration is in
place before any Auto lookup can happen.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

#: Public names of `llada` and the module that defines each (imported on first access).
_LAZY_EXPORTS = {
    "LLaDAConfig": "configuration_llada",
    "LLaDAMoEConfig": "configuration_llada_moe",
    "LLaDAMoEModel": "modeling_llada_moe",
    "LLaDAMoEModelLM": "modeling_llada_moe",
    "LLaDAGenerateOutput": "generation_llada",
    "LLaDAGenerationConfig": "generation_llada",
    "decode_generation": "generation_llada",
    "register_remasking": "generation_llada",
    "strip_after_eos": "generation_llada",
    "MASK_EPS": "masking_llada",
    "LLaDAKVCache": "modeling_llada",
    "LLaDAMissingWeightsWarning": "modeling_llada",
    "LLaDAModel": "modeling_llada",
    "LLaDAModelLM": "modeling_llada",
    "LLaDAPreTrainedModel": "modeling_llada",
    "LLaDADiffusionStreamer": "streaming",
    "LLaDATerminalStreamer": "streaming",
}

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODELING_AUTO = "transformers.models.auto.modeling_auto"
_MODELING_LLADA = "llada.modeling_llada"
_MODELING_LLADA_MOE = "llada.modeling_llada_moe"  # imports modeling_llada, whose hook must then wait for it
_CONFIGURATION_LLADA_MOE = "llada.configuration_llada_moe"
_CONFIGURATION_LLADA = "llada.configuration_llada"
_done = {"config": False, "models": False}


def _loading(name: str) -> bool:
    """Whether module `name` is being imported right now (then its own hook registers once it has loaded)."""
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_config():
    if _done["config"] or _loading(_CONFIGURATION_LLADA):
        return
    _done["config"] = True
    from transformers.models.auto.configuration_auto import AutoConfig

    from .configuration_llada import LLaDAConfig

    AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)


def _register_models():
    if _done["models"] or any(
        _loading(name)
        for name in (_MODELING_LLADA, _CONFIGURATION_LLADA, _MODELING_LLADA_MOE, _CONFIGURATION_LLADA_MOE)
    ):
        return
    _done["models"] = True
    _register_config()
    from transformers.models.auto.modeling_auto import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    from .configuration_llada_moe import LLaDAMoEConfig
    from .hub import push_to_hub
    from .modeling_llada import LLaDAConfig, LLaDAModelLM, LLaDAPreTrainedModel
    from .modeling_llada_moe import LLaDAMoEModelLM

    LLaDAPreTrainedModel.push_to_hub_function = push_to_hub
    for auto in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
        auto.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
        auto.register(LLaDAMoEConfig, LLaDAMoEModelLM, exist_ok=True)  # same model_type; AutoConfig picks the class


def register_auto_classes():
    """Register `LLaDAConfig` and `LLaDAModelLM` with the transformers Auto classes now (imports transformers)."""
    _register_config()
    _register_models()


class _HookedLoader(importlib.abc.Loader):
    """A loader that runs `callback` once the wrapped loader has executed the module."""

    def __init__(self, loader, callback):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        spec = getattr(module, "__spec__", None)
        if spec is not None:  # the module has run to its end: no longer "loading" for `_loading`
            spec._initializing = False
        self._callback()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Wraps the loaders of the modules in `hooks` (name -> callback)."""

    def __init__(self, hooks):
        self.hooks = hooks

    def find_spec(self, name, path, target=None):
        callback = self.hooks.get(name)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, callback)
        return spec


def install():
    """What `import llada` runs: register now where transformers' Auto modules are loaded, else on their import."""
    hooks = {}
    if _CONFIG_AUTO in sys.modules:
        _register_config()
    else:
        hooks[_CONFIG_AUTO] = _register_config
        hooks[_CONFIGURATION_LLADA] = _register_config
    if _MODELING_AUTO in sys.modules:
        _register_models()
    else:
        hooks[_MODELING_AUTO] = _register_models
        hooks[_MODELING_LLADA] = _register_models
        hooks[_MODELING_LLADA_MOE] = _register_models
        hooks[_CONFIGURATION_LLADA_MOE] = _register_models
    if hooks and not any(isinstance(finder, _PostImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PostImportHook(hooks))


def lazy_attribute(package: str, name: str, exports: dict[str, str] = _LAZY_EXPORTS):
    """Module `__getattr__` body of `llada` (or of a subpackage, with its own `exports`: public name -> module):
    import the module defining `name`."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", package), name)
