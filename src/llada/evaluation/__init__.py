"""Evaluation with the diffusion likelihood bound and the sampler.

- `perplexity`: `bound_perplexity`, the bound-based perplexity of a text (`llada eval ppl`).
- `lm_eval_model`: `LLaDAEvalHarness`, the lm-evaluation-harness model registered as `llada` (needs the `eval` extra;
  imported only on demand so that `import llada.evaluation` does not need lm-eval).
- `cli`: `add_eval_subparser`, the `llada eval ppl | lm-eval` commands.
"""

from .perplexity import PerplexityResult, bound_perplexity, chunk_pairs

__all__ = ["PerplexityResult", "bound_perplexity", "chunk_pairs"]
