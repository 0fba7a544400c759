"""Evaluation with the diffusion likelihood bound and the sampler.

- `perplexity`: `bound_perplexity`, the bound-based perplexity of a text (`llada eval ppl`).
- `lm_eval_model`: `LLaDAEvalHarness`, the lm-evaluation-harness model registered as `llada` (needs the `eval` extra;
  imported only on demand so that `import llada.evaluation` does not need lm-eval).
- `cli`: `add_eval_subparser`, the `llada eval ppl | lm-eval` commands.

The names below are imported from `perplexity` on first access (as in `llada`), so that `llada eval --help` costs
no torch import.
"""

from typing import TYPE_CHECKING

from .._registration import lazy_attribute

if TYPE_CHECKING:
    from .perplexity import PerplexityResult, bound_perplexity, chunk_pairs

#: Public names of `llada.evaluation` and the module that defines each (imported on first access).
_LAZY_EXPORTS = {"PerplexityResult": "perplexity", "bound_perplexity": "perplexity", "chunk_pairs": "perplexity"}


def __getattr__(name: str):
    return lazy_attribute(__name__, name, _LAZY_EXPORTS)


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


__all__ = ["PerplexityResult", "bound_perplexity", "chunk_pairs"]
