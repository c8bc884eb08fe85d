"""Ready-made networks, each a :class:`jbp.Sequential` of :mod:`jbp.layers`:
:func:`gpt`, a GPT-2-style language model."""

from jbp.models.gpt import gpt

__all__ = ["gpt"]
