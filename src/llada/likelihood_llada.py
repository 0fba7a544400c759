"""Monte Carlo likelihood bound for LLaDA (work in progress: filled in by the likelihood issue)."""


class LLaDALikelihoodMixin:
    """`log_likelihood` is provided by the likelihood issue."""
