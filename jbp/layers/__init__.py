"""Layers with hand-derived backward passes, and the protocol any layer follows.

A layer is a frozen, hashable description with ``init``, ``forward`` and ``backward``
(:mod:`jbp.layers.protocol`); each built-in layer's backward is derived in its
docstring, beside its forward, one small module per family:

- :mod:`~jbp.layers.dense`: :class:`Dense` (the seed's BP1, BP3, BP5, BP6) and
  :class:`Perceptron`, the seed's layer ``l`` (a dense layer and its activation, of which
  :class:`jbp.MLP` is made).
- :mod:`~jbp.layers.activation`: :class:`ActivationLayer` (BP2, BP4), :func:`as_layer`.
- :mod:`~jbp.layers.conv`: :class:`Conv1D`, :class:`Conv2D` (BP1, BP3, BP5, BP6 with
  shared weights).
- :mod:`~jbp.layers.pool`: :class:`MaxPool1D`, :class:`MaxPool2D`, :class:`AvgPool1D`,
  :class:`AvgPool2D`.
- :mod:`~jbp.layers.reshape`: :class:`Flatten`.
- :mod:`~jbp.layers.dropout`: :class:`Dropout`.
- :mod:`~jbp.layers.norm`: :class:`LayerNorm`.
- :mod:`~jbp.layers.residual`: :class:`Residual`, ``y = x + block(x)``.

What they are made of sits here too, below the model: :mod:`~jbp.layers.activations`
(BP2, BP4), :mod:`~jbp.layers.initializers`, :mod:`~jbp.layers.params` (:class:`jbp.Layer`).
:mod:`~jbp.layers.chain` is the one forward and backward loop over a chain of layers,
and :mod:`~jbp.layers.per_example` each layer's share of per-example gradient norms.

Check a layer of your own with :func:`jbp.check_layer`.
"""

from jbp.layers.activation import ActivationLayer, as_layer
from jbp.layers.conv import Conv1D, Conv2D
from jbp.layers.dense import Dense, Perceptron
from jbp.layers.dropout import Dropout
from jbp.layers.norm import LayerNorm, LayerNormParams
from jbp.layers.pool import AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D
from jbp.layers.protocol import LayerProtocol, StaticShape, check_layer_object
from jbp.layers.reshape import Flatten
from jbp.layers.residual import Residual

__all__ = [
    "ActivationLayer",
    "AvgPool1D",
    "AvgPool2D",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Perceptron",
    "Dropout",
    "Flatten",
    "LayerNorm",
    "LayerNormParams",
    "LayerProtocol",
    "MaxPool1D",
    "MaxPool2D",
    "Residual",
    "StaticShape",
    "as_layer",
    "check_layer_object",
]
