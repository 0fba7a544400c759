"""Diffusion generation for LLaDA (work in progress: filled in by the generation issue)."""


class LLaDAGenerationMixin:
    """Reverse diffusion process; `generate` is provided by the generation issue."""
