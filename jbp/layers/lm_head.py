"""The fused language-model head, :class:`FusedLMHead`: the last linear layer and the
softmax cross-entropy in one, never holding the ``(tokens, vocab)`` logits beyond one
chunk of tokens.

As a layer it is a dense layer over the last axis (``z = h Wᵀ + b``, the logits, for
``predict``). As a network's last layer it also has the optional methods
``fused_loss``/``fused_loss_backward`` (see :mod:`jbp.layers.protocol`): with them a
:class:`jbp.Sequential` whose loss is ``"cross_entropy"`` computes its loss and the
loss's gradient from the head's *input* ``h`` and the targets, chunk by chunk:

Forward, for each chunk ``c`` of ``C`` token positions (rows of ``h``)::

    z_c = h_c Wᵀ + b                  (C, V), BP1
    ℓ_c = logsumexp(z_c) per row,     L += Σ_{rows, t ≠ -1} (ℓ − z_t)

and ``L`` is divided by the number ``N`` of positions whose target is not
:data:`jbp.model.losses.IGNORE` (padding). Only ``ℓ`` ``(tokens,)`` is kept.

Backward: the softmax + cross-entropy delta is ``(p − onehot(t)) / N`` (zero at
ignored positions), with ``p = exp(z_c − ℓ_c)`` recomputed from the chunk's logits;
then the dense layer's equations, ``dW = Σ_c delta_cᵀ h_c`` (BP5), ``db = Σ_c Σ_rows
delta_c`` (BP6), ``dh_c = delta_c W`` (BP3). Peak memory: ``dW`` (the parameter's size)
and one chunk's ``(C, V)``, whatever the number of tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from jbp import _validate
from jbp.layers import args
from jbp.layers.dense import bias_grad, dense, input_grad, weight_grad
from jbp.model.initializers import INITIALIZERS, init_weight
from jbp.model.losses import IGNORE
from jbp.model.params import Layer

Array = jax.Array

#: Logits per chunk by default (4 MiB in float32): a chunk is ``max(1, CHUNK_LOGITS // vocab)``
#: token positions, so that the head's memory is the same whatever the vocabulary.
CHUNK_LOGITS = 2**20


def chunk_rows(vocab: int, chunk) -> int:
    """Token positions per chunk: ``chunk``, or by default ``max(1, CHUNK_LOGITS // vocab)``."""
    return max(1, CHUNK_LOGITS // vocab) if chunk is None else chunk


def _chunked(h: Array, t: Array, chunk: int) -> tuple[Array, Array]:
    """Rows of ``h`` ``(N, D)`` and targets ``t`` ``(N,)`` as ``(n, chunk, D)`` and
    ``(n, chunk)``, padded with zero rows whose target is ``IGNORE``."""
    n = -(-h.shape[0] // chunk)
    pad = n * chunk - h.shape[0]
    h = jnp.pad(h, ((0, pad), (0, 0))).reshape(n, chunk, h.shape[1])
    t = jnp.pad(t, (0, pad), constant_values=IGNORE).reshape(n, chunk)
    return h, t


def fused_cross_entropy(head: Layer, h: Array, t: Array, chunk: int) -> tuple[Array, Array, Array]:
    """``(L, ℓ, N)``: the mean softmax cross-entropy of ``z = h Wᵀ + b`` over the
    ``N`` positions whose target is not ``IGNORE``, chunk by chunk.

    Args:
      head: ``W`` ``(V, D)`` and ``b`` ``(V,)``.
      h: ``(tokens, D)``.
      t: ``(tokens,)`` integer targets in ``[0, V)`` or ``IGNORE``.
      chunk: rows per chunk.

    Returns:
      The loss, each padded row's log-sum-exp ``ℓ`` ``(n_chunks, chunk)`` and ``N``.
    """
    h_chunks, t_chunks = _chunked(h, t, chunk)

    def step(total, chunk_):
        h_c, t_c = chunk_
        z = dense(head, h_c)  # BP1, (chunk, V)
        lse = jax.nn.logsumexp(z, axis=-1)
        valid = t_c != IGNORE
        z_t = jnp.take_along_axis(z, jnp.where(valid, t_c, 0)[:, None], axis=-1)[:, 0]
        return total + jnp.sum(jnp.where(valid, lse - z_t, 0)), lse

    total, lse = lax.scan(step, jnp.zeros((), h.dtype), (h_chunks, t_chunks))
    count = jnp.maximum(jnp.sum(t != IGNORE), 1).astype(h.dtype)
    return total / count, lse, count


def fused_cross_entropy_backward(head: Layer, h: Array, t: Array, lse: Array, count: Array,
                                 chunk: int) -> tuple[Layer, Array]:
    """``(Layer(dW, db), dh)`` of :func:`fused_cross_entropy`'s loss, each chunk's logits
    recomputed: ``delta_c = (exp(z_c − ℓ_c) − onehot(t_c)) / N`` (zero at ignored rows),
    then BP5, BP6 (summed over the chunks) and BP3."""
    h_chunks, t_chunks = _chunked(h, t, chunk)
    V = head.W.shape[0]

    def step(grads, chunk_):
        h_c, t_c, lse_c = chunk_
        z = dense(head, h_c)  # the chunk's logits again
        valid = (t_c != IGNORE)[:, None]
        delta = jnp.where(valid, jnp.exp(z - lse_c[:, None]) - jax.nn.one_hot(t_c, V, dtype=z.dtype), 0) / count
        grads = Layer(W=grads.W + weight_grad(delta, h_c), b=grads.b + bias_grad(delta))  # BP5, BP6
        return grads, input_grad(delta, head.W)  # BP3

    zeros = Layer(W=jnp.zeros_like(head.W), b=jnp.zeros_like(head.b))
    grads, dh = lax.scan(step, zeros, (h_chunks, t_chunks, lse))
    return grads, dh.reshape(-1, h.shape[1])[: h.shape[0]]


@dataclasses.dataclass(frozen=True, init=False)
class FusedLMHead:
    """The last linear layer and softmax cross-entropy, fused (see the module docstring).

    As a layer, over ``(batch, T, D)``: ``z = h Wᵀ + b`` ``(batch, T, vocab)``, with
    :class:`jbp.layers.Dense`'s backward. As a network's last layer, ``fused_loss`` and
    ``fused_loss_backward`` give the cross-entropy and its gradient without the logits.

    Params: ``jbp.Layer(W (vocab, D), b (vocab,))``. Residuals of ``fused_loss``: ``h``,
    the targets, each row's log-sum-exp and ``N``.

    Args:
      vocab: ``V``, the number of classes (tokens).
      chunk: token positions per chunk; by default :data:`CHUNK_LOGITS` logits' worth
        (:func:`chunk_rows`), so that the memory does not grow with ``V``.
      init: the weight init scheme; biases start at zero. Stored as :attr:`init_name`.
    """

    vocab: int
    chunk: int | None
    init_name: str

    def __init__(self, vocab: int, chunk: int | None = None, init: str = "glorot_uniform"):
        object.__setattr__(self, "vocab", _validate.positive_int("FusedLMHead's vocab", vocab))
        object.__setattr__(self, "chunk", None if chunk is None else _validate.positive_int("FusedLMHead's chunk", chunk))
        object.__setattr__(self, "init_name", _validate.name("FusedLMHead's init", init, tuple(INITIALIZERS)))

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[Layer, tuple]:
        """``(Layer(W, b), (*input_shape[:-1], vocab))``."""
        key, shape, dtype = args.init_args(self, key, input_shape, dtype, None, "(T, features), the features last")
        W = init_weight(self.init_name, key, shape[-1], self.vocab, dtype)
        return Layer(W=W, b=jnp.zeros((self.vocab,), dtype)), (*shape[:-1], self.vocab)

    def forward(self, params: Layer, x: Array, *, key=None, train: bool = False) -> tuple[Array, Array]:
        """``(logits, x)``: BP1 over the last axis."""
        return dense(params, x), x

    def backward(self, params: Layer, x: Array, dy: Array) -> tuple[Layer, Array]:
        """``(Layer(dW, db), dx)``: BP5, BP6 (summed over batch and positions) and BP3."""
        delta, rows = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
        return Layer(W=weight_grad(delta, rows), b=bias_grad(delta)), input_grad(dy, params.W)

    def fused_loss(self, params: Layer, x: Array, y: Array, *, key=None, train: bool = False) -> tuple[Array, tuple]:
        """``(L, residuals)``: the mean cross-entropy of ``softmax(x Wᵀ + b)`` against
        integer targets ``y`` (``x.shape[:-1]``, ``IGNORE`` for padding), chunk by chunk."""
        h, t = x.reshape(-1, x.shape[-1]), y.reshape(-1)
        loss, lse, count = fused_cross_entropy(params, h, t, min(chunk_rows(self.vocab, self.chunk), h.shape[0]))
        return loss, (x, y, lse, count)

    def fused_loss_backward(self, params: Layer, residuals: tuple) -> tuple[Layer, Array]:
        """``(dparams, dx)``: the gradient of :meth:`fused_loss`'s loss."""
        x, y, lse, count = residuals
        h = x.reshape(-1, x.shape[-1])
        grads, dh = fused_cross_entropy_backward(params, h, y.reshape(-1), lse, count, lse.shape[1])
        return grads, dh.reshape(x.shape)
