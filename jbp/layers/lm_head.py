"""The fused language-model head, :class:`FusedLMHead`: the last linear layer and the
softmax cross-entropy in one, never holding the ``(tokens, vocab)`` logits beyond one
chunk of tokens, in the forward or the backward.

As a layer it is a dense layer over the last axis (``z = h Wᵀ + b``, the logits, for
``predict``). As a network's last layer it also has the optional methods
``fused_loss``/``fused_loss_backward`` (see :mod:`jbp.layers.protocol`): with them a
:class:`jbp.Sequential` whose loss is ``"cross_entropy"`` computes its loss and the
loss's gradient from the head's *input* ``h`` and the targets, chunk by chunk:

For each chunk ``c`` of ``C`` token positions (rows of ``h``), with ``N`` the number of
positions whose target is not :data:`jbp.model.losses.IGNORE` (padding), counted first::

    z_c = h_c Wᵀ + b                     (C, V), BP1
    ℓ_c = logsumexp(z_c) per row,        L += Σ_{rows, t ≠ -1} (ℓ − z_t) / N
    delta_c = (exp(z_c − ℓ_c) − onehot(t_c)) / N     (0 at padding)
    dW += delta_cᵀ h_c   (BP5),   db += Σ_rows delta_c   (BP6),   dh_c = delta_c W   (BP3)

The network's loss is the last thing computed, so its cotangent is 1 and ``delta_c``
is final as soon as the chunk's logits are: the backward's equations run in the same
pass over the chunks as the loss (as Liger Kernel's fused linear cross-entropy does),
and the logits are never formed twice. What the backward receives is ``dW``, ``db`` and
``dh``. Peak memory: ``dW`` (the parameter's size) and one chunk's ``(C, V)``, whatever
the number of tokens.
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


def fused_cross_entropy(head: Layer, h: Array, t: Array, chunk: int) -> tuple[Array, Layer, Array]:
    """``(L, Layer(dW, db), dh)``: the mean softmax cross-entropy of ``z = h Wᵀ + b``
    over the ``N`` positions whose target is not ``IGNORE``, and its gradient, in one
    pass over chunks of ``chunk`` rows (see the module docstring).

    Args:
      head: ``W`` ``(V, D)`` and ``b`` ``(V,)``.
      h: ``(tokens, D)``.
      t: ``(tokens,)`` integer targets in ``[0, V)`` or ``IGNORE``.
      chunk: rows per chunk.

    Returns:
      The loss, ``dL/dW``, ``dL/db`` and ``dL/dh`` ``(tokens, D)``.
    """
    h_chunks, t_chunks = _chunked(h, t, chunk)
    V = head.W.shape[0]
    count = jnp.maximum(jnp.sum(t != IGNORE), 1).astype(h.dtype)  # N

    def step(carry, chunk_):
        total, grads = carry
        h_c, t_c = chunk_
        z = dense(head, h_c)  # BP1, (chunk, V)
        lse = jax.nn.logsumexp(z, axis=-1)
        valid = t_c != IGNORE
        z_t = jnp.take_along_axis(z, jnp.where(valid, t_c, 0)[:, None], axis=-1)[:, 0]
        total = total + jnp.sum(jnp.where(valid, lse - z_t, 0))
        # the fused softmax + cross-entropy delta, (p − y) / N
        delta = jnp.where(valid[:, None], jnp.exp(z - lse[:, None]) - jax.nn.one_hot(t_c, V, dtype=z.dtype), 0) / count
        grads = Layer(W=grads.W + weight_grad(delta, h_c), b=grads.b + bias_grad(delta))  # BP5, BP6
        return (total, grads), input_grad(delta, head.W)  # BP3

    zeros = Layer(W=jnp.zeros_like(head.W), b=jnp.zeros_like(head.b))
    (total, grads), dh = lax.scan(step, (jnp.zeros((), h.dtype), zeros), (h_chunks, t_chunks))
    return total / count, grads, dh.reshape(-1, h.shape[1])[: h.shape[0]]


@dataclasses.dataclass(frozen=True, init=False)
class FusedLMHead:
    """The last linear layer and softmax cross-entropy, fused (see the module docstring).

    As a layer, over ``(batch, T, D)``: ``z = h Wᵀ + b`` ``(batch, T, vocab)``, with
    :class:`jbp.layers.Dense`'s backward. As a network's last layer, ``fused_loss`` and
    ``fused_loss_backward`` give the cross-entropy and its gradient without the logits.

    Params: ``jbp.Layer(W (vocab, D), b (vocab,))``. Residuals of ``fused_loss``: the
    gradient, ``(Layer(dW, db), dh)``, formed in the same pass as the loss.

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
        loss, grads, dh = fused_cross_entropy(params, h, t, min(chunk_rows(self.vocab, self.chunk), h.shape[0]))
        return loss, (grads, dh.reshape(x.shape))

    def fused_loss_backward(self, params: Layer, residuals: tuple) -> tuple[Layer, Array]:
        """``(dparams, dx)``: the gradient of :meth:`fused_loss`'s loss, formed with it."""
        grads, dx = residuals
        return grads, dx
