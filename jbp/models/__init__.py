"""Ready-made networks, each a :class:`jbp.Sequential` of :mod:`jbp.layers`:
:func:`gpt`, a GPT-2-style language model, and :func:`generate`, sampling from it."""

from jbp.models.gpt import generate, gpt

__all__ = ["generate", "gpt"]
