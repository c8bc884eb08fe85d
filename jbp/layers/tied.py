"""Tied embeddings, :class:`TiedLM`: one table ``E`` both embeds the token ids and is
the fused head's weight, so its gradient is the sum of the two uses'.

A network's layers each see only their own parameters, so the layers that share ``E``
(the embedding at the bottom, the head at the top) and everything between them are one
composite layer, as :class:`jbp.layers.Residual` holds its block:

Forward, with integer ``x`` ``(batch, T)``::

    h_0 = E[x]                                   the embedding
    h_i = layer_i(h_{i-1})                       the body (positions, blocks, final norm)
    z = h_n Eᵀ + b                               the head, weight E (vocab, features)

Backward, from ``dz``: the head's BP5/BP6/BP3 (``dE_head = Σ dzᵀ h_n``, ``db = Σ dz``,
``dh_n = dz E``), the body's backwards in reverse, then the embedding's scatter-add
``dE_embed`` of ``dh_0``. ``E`` reaches the loss along both paths, so the chain rule
adds them: ``dE = dE_head + dE_embed``.

As a network's last layer it also has ``fused_loss``/``fused_loss_backward``: the
head's cross-entropy and its gradient are computed chunk by chunk
(:func:`jbp.layers.lm_head.fused_cross_entropy`), never forming the logits.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.layers import args
from jbp.layers.activation import as_layer
from jbp.layers.dense import bias_grad, dense, input_grad, weight_grad
from jbp.layers.embedding import EMBEDDING_STD, scatter_add_rows
from jbp.layers.lm_head import chunk_rows, fused_cross_entropy
from jbp.model.params import Layer

Array = jax.Array


class TiedLMParams(NamedTuple):
    """:class:`TiedLM`'s parameters (or their gradients)."""

    table: Array  # (vocab, features): E, the embedding and the head's weight
    body: tuple  # one entry per body layer
    bias: Array  # (vocab,): the head's bias


@dataclasses.dataclass(frozen=True, init=False)
class TiedLM:
    """Embedding, body and fused head with the embedding's table as the head's weight
    (see the module docstring).

    Params: :class:`TiedLMParams` ``(table, body, bias)``. Residuals: ``x``, the body's
    output and each body layer's residuals. With a ``key``, body layer ``i`` gets
    ``jax.random.fold_in(key, i)``.

    Args:
      vocab: the number of token ids.
      features: the embedding's size, the body's width.
      layers: the body, a sequence of layers keeping ``(T, features)``.
      chunk: the fused head's token positions per chunk (see
        :func:`jbp.layers.lm_head.chunk_rows`).
    """

    vocab: int
    features: int
    layers: tuple
    chunk: Optional[int]

    def __init__(self, vocab: int, features: int, layers, chunk: Optional[int] = None):
        object.__setattr__(self, "vocab", _validate.positive_int("TiedLM's vocab", vocab))
        object.__setattr__(self, "features", _validate.positive_int("TiedLM's features", features))
        if isinstance(layers, str) or not isinstance(layers, (tuple, list)):
            raise TypeError(f"TiedLM's layers must be a tuple or list of layers, got {_validate.describe(layers)}")
        object.__setattr__(self, "layers", tuple(as_layer(l, f"TiedLM's layers[{i}]") for i, l in enumerate(layers)))
        object.__setattr__(self, "chunk", None if chunk is None else _validate.positive_int("TiedLM's chunk", chunk))

    @property
    def input_vocab(self) -> int:
        """The inputs are integer ids in ``[0, input_vocab)``."""
        return self.vocab

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[TiedLMParams, tuple]:
        """``(TiedLMParams, (T, vocab))`` for ``input_shape = (T,)``."""
        key, shape, dtype = args.init_args(self, key, input_shape, dtype, 1, "(T,), the positions")
        table_key, *keys = jax.random.split(key, len(self.layers) + 1)
        hidden, body = (*shape, self.features), []
        for layer, k in zip(self.layers, keys):
            p, hidden = layer.init(k, hidden, dtype)
            body.append(p)
        if tuple(hidden) != (*shape, self.features):
            raise ValueError(
                f"TiedLM's body must keep the shape {(*shape, self.features)} (T, features), "
                f"but its layers give {tuple(hidden)}"
            )
        table = EMBEDDING_STD * jax.random.normal(table_key, (self.vocab, self.features), dtype)
        return TiedLMParams(table, tuple(body), jnp.zeros((self.vocab,), dtype)), (*shape, self.vocab)

    def _body_forward(self, params: TiedLMParams, x: Array, key, train):
        h, residuals = jnp.take(params.table, x, axis=0), []  # h_0 = E[x]
        for i, (layer, p) in enumerate(zip(self.layers, params.body)):
            h, r = layer.forward(p, h, key=None if key is None else jax.random.fold_in(key, i), train=train)
            residuals.append(r)
        return h, tuple(residuals)

    def _body_backward(self, params: TiedLMParams, x: Array, residuals: tuple, dh: Array, d_head: Layer):
        body = []
        for layer, p, r in reversed(list(zip(self.layers, params.body, residuals))):
            dp, dh = layer.backward(p, r, dh)
            body.append(dp)
        d_table = d_head.W + scatter_add_rows(x, dh, self.vocab)  # E's two uses add
        return TiedLMParams(d_table, tuple(reversed(body)), d_head.b)

    def forward(self, params: TiedLMParams, x: Array, *, key=None, train: bool = False):
        """``(logits, (x, h_n, body residuals))``."""
        h, residuals = self._body_forward(params, x, key, train)
        return dense(Layer(W=params.table, b=params.bias), h), (x, h, residuals)

    def backward(self, params: TiedLMParams, residuals: tuple, dy: Array) -> tuple[TiedLMParams, None]:
        """``(TiedLMParams(dE_head + dE_embed, dbody, db), None)``: no ``dx`` for ids."""
        x, h, body_residuals = residuals
        delta, rows = dy.reshape(-1, dy.shape[-1]), h.reshape(-1, h.shape[-1])
        d_head = Layer(W=weight_grad(delta, rows), b=bias_grad(delta))  # BP5, BP6
        return self._body_backward(params, x, body_residuals, input_grad(dy, params.table), d_head), None

    def fused_loss(self, params: TiedLMParams, x: Array, y: Array, *, key=None, train: bool = False):
        """``(L, residuals)``: the body, then the head's cross-entropy chunk by chunk."""
        h, body_residuals = self._body_forward(params, x, key, train)
        rows, t = h.reshape(-1, h.shape[-1]), y.reshape(-1)
        head = Layer(W=params.table, b=params.bias)
        loss, d_head, dh = fused_cross_entropy(head, rows, t, min(chunk_rows(self.vocab, self.chunk), rows.shape[0]))
        return loss, (x, body_residuals, d_head, dh.reshape(h.shape))

    def fused_loss_backward(self, params: TiedLMParams, residuals: tuple) -> tuple[TiedLMParams, None]:
        """``(dparams, None)``: the gradient of :meth:`fused_loss`'s loss (the head's part
        formed with it), down the body and the embedding."""
        x, body_residuals, d_head, dh = residuals
        return self._body_backward(params, x, body_residuals, dh, d_head), None
