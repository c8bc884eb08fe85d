"""Layers with hand-derived backward passes, and the protocol any layer follows.

A layer is a frozen, hashable description with ``init``, ``forward`` and ``backward``
(:mod:`jbp.layers.protocol`); each built-in layer's backward is derived in its
docstring, beside its forward, one small module per family:

- :mod:`~jbp.layers.dense`: :class:`Dense` (the seed's BP1, BP3, BP5, BP6).
- :mod:`~jbp.layers.activation`: :class:`ActivationLayer` (BP2, BP4), :func:`as_layer`.

Check a layer of your own with :func:`jbp.check_layer`.
"""

from jbp.layers.activation import ActivationLayer, as_layer
from jbp.layers.dense import Dense
from jbp.layers.protocol import LayerProtocol, StaticShape, check_layer_object

__all__ = [
    "ActivationLayer",
    "Dense",
    "LayerProtocol",
    "StaticShape",
    "as_layer",
    "check_layer_object",
]
