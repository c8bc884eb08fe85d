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
- :mod:`~jbp.layers.norm`: :class:`LayerNorm`, :class:`RMSNorm`.
- :mod:`~jbp.layers.residual`: :class:`Residual`, ``y = x + block(x)``.
- :mod:`~jbp.layers.embedding`: :class:`Embedding` (token ids), :class:`PositionEmbedding`.
- :mod:`~jbp.layers.attention`: :class:`CausalSelfAttention` (kept ``P``, or
  FlashAttention-2's log-sum-exp with memory linear in ``T``).
- :mod:`~jbp.layers.lm_head`: :class:`FusedLMHead`, the last linear layer and the
  cross-entropy in one, chunk by chunk.
- :mod:`~jbp.layers.transformer`: :func:`transformer_block`, pre-LayerNorm.
- :mod:`~jbp.layers.tied`: :class:`TiedLM`, embedding, body and fused head sharing the
  embedding's table.
- :mod:`~jbp.layers.recurrent`: :class:`RNN`, :class:`LSTM`, :class:`GRU` over
  ``(batch, T, features)``, by backpropagation through time.

What they are made of sits here too, below the model: :mod:`~jbp.layers.activations`
(BP2, BP4), :mod:`~jbp.layers.initializers`, :mod:`~jbp.layers.params` (:class:`jbp.Layer`).
:mod:`~jbp.layers.chain` is the one forward and backward loop over a chain of layers,
and :mod:`~jbp.layers.per_example` each layer's share of per-example gradient norms.

Check a layer of your own with :func:`jbp.check_layer`.
"""

from jbp.layers.activation import ActivationLayer, as_layer
from jbp.layers.attention import AttentionParams, CausalSelfAttention
from jbp.layers.conv import Conv1D, Conv2D
from jbp.layers.dense import Dense, Perceptron
from jbp.layers.dropout import Dropout
from jbp.layers.embedding import Embedding, EmbeddingParams, PositionEmbedding
from jbp.layers.lm_head import FusedLMHead
from jbp.layers.norm import LayerNorm, LayerNormParams, RMSNorm, RMSNormParams
from jbp.layers.pool import AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D
from jbp.layers.protocol import LayerProtocol, StaticShape, check_layer_object
from jbp.layers.recurrent import GRU, LSTM, RNN, GRUParams, LSTMState, RecurrentParams, gradient_through_time
from jbp.layers.reshape import Flatten
from jbp.layers.residual import Residual
from jbp.layers.tied import TiedLM, TiedLMParams
from jbp.layers.transformer import transformer_block

__all__ = [
    "ActivationLayer",
    "AttentionParams",
    "AvgPool1D",
    "AvgPool2D",
    "Conv1D",
    "CausalSelfAttention",
    "Conv2D",
    "Dense",
    "Perceptron",
    "Dropout",
    "Embedding",
    "EmbeddingParams",
    "Flatten",
    "FusedLMHead",
    "GRU",
    "GRUParams",
    "LSTM",
    "LSTMState",
    "LayerNorm",
    "LayerNormParams",
    "LayerProtocol",
    "MaxPool1D",
    "MaxPool2D",
    "PositionEmbedding",
    "RMSNorm",
    "RMSNormParams",
    "RNN",
    "RecurrentParams",
    "Residual",
    "StaticShape",
    "TiedLM",
    "TiedLMParams",
    "as_layer",
    "check_layer_object",
    "transformer_block",
    "gradient_through_time",
]
