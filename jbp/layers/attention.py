"""Causal multi-head self-attention, :class:`CausalSelfAttention`, with its backward
written out, in two memory modes.

Notation, per batch entry and head (``H`` heads of size ``d = features / H``, ``T``
positions)::

    Q = x W_qᵀ + b_q,  K = x W_kᵀ,  V = x W_vᵀ + b_v      (BP1, split into heads)
    S = Q Kᵀ / √d,  S_ij = -∞ for j > i                        (causal mask)
    P = softmax(S) row by row,  O = P V
    y = concat_heads(O) W_oᵀ + b_o                             (BP1)

The backward, from ``dO`` (BP3 through the output projection)::

    dV = Pᵀ dO                    (O = P V is linear in V)
    dP = dO Vᵀ                    (... and in P)
    dS = P ⊙ (dP − rowsum(dP ⊙ P))  (the softmax's Jacobian diag(p) − p pᵀ, row by row)
    dQ = dS K / √d,   dK = dSᵀ Q / √d

then BP5/BP6 and BP3 of the four projections, ``dx`` the sum of the three paths
(``dx = dQ W_q + dK W_k + dV W_v``). The key projection has no bias: ``b_k`` would add
``Q_i · b_k`` to every score of row ``i``, which the row's softmax cancels, so its
gradient is exactly zero (``Σ_j dS_ij = 0``): a parameter that could never learn. Masked entries have ``P = 0``, so ``dS = 0`` there
and the mask needs no backward of its own.

``keep="probs"`` keeps ``P`` ``(batch, H, T, T)`` for the backward. ``keep="lse"``
(FlashAttention-2's backward, Dao 2023) keeps only each row's log-sum-exp
``ℓ_i = log Σ_j exp(S_ij)`` ``(batch, H, T)``: the forward runs over blocks of keys with
a running row max and sum (the online softmax), and the backward recomputes each
block's ``P = exp(S − ℓ)`` from ``Q`` and that block's ``K``, using
``rowsum(dP ⊙ P) = rowsum(dO ⊙ O)`` (as ``dP ⊙ P`` summed over ``j`` is
``Σ_j P_ij (dO_i · V_j) = dO_i · O_i``): memory linear in ``T`` in both passes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jbp import _validate
from jbp.layers import args
from jbp.layers.dense import bias_grad, dense, input_grad, weight_grad
from jbp.model.initializers import INITIALIZERS, init_weight
from jbp.model.params import Layer

Array = jax.Array

#: What the backward keeps: the probabilities, or each row's log-sum-exp.
KEEPS = ("probs", "lse")


class AttentionParams(NamedTuple):
    """:class:`CausalSelfAttention`'s parameters (or gradients): the four projections,
    each ``W`` ``(features, features)``, the seed's ``(n_out, n_in)``; ``query``,
    ``value`` and ``out`` are ``jbp.Layer(W, b)``, ``key`` its ``W`` alone (no bias)."""

    query: Layer
    key: Array
    value: Layer
    out: Layer

    #: K-FAC's weight blocks (:mod:`jbp.layers.protocol`): each projection, the key's without a bias.
    kronecker_blocks = ((("query", "W"), ("query", "b")), (("key",), None), (("value", "W"), ("value", "b")),
                        (("out", "W"), ("out", "b")))


def split_heads(a: Array, heads: int) -> Array:
    """``(batch, T, H·d)`` to ``(batch, H, T, d)``."""
    batch, T, features = a.shape
    return a.reshape(batch, T, heads, features // heads).transpose(0, 2, 1, 3)


def merge_heads(a: Array) -> Array:
    """``(batch, H, T, d)`` to ``(batch, T, H·d)``: :func:`split_heads` undone."""
    batch, heads, T, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(batch, T, heads * d)


def causal(query_positions: Array, key_positions: Array) -> Array:
    """``(Tq, Tk)`` booleans: key ``j`` is visible from query ``i`` when ``j <= i``."""
    return key_positions[None, :] <= query_positions[:, None]


def attention_probs(Q: Array, K: Array) -> Array:
    """``P = softmax(Q Kᵀ / √d)`` with the causal mask, ``(batch, H, T, T)``."""
    T = Q.shape[2]
    S = jnp.einsum("bhid,bhjd->bhij", Q, K) / math.sqrt(Q.shape[-1])
    S = jnp.where(causal(jnp.arange(T), jnp.arange(T)), S, -jnp.inf)
    return jax.nn.softmax(S, axis=-1)


def attention_backward(P: Array, Q: Array, K: Array, V: Array, dO: Array) -> tuple[Array, Array, Array]:
    """``(dQ, dK, dV)`` from the kept probabilities ``P``, per head::

        dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ⊙ (dP − rowsum(dP ⊙ P)),
        dQ = dS K / √d,  dK = dSᵀ Q / √d
    """
    scale = 1 / math.sqrt(Q.shape[-1])
    dV = jnp.einsum("bhij,bhid->bhjd", P, dO)
    dP = jnp.einsum("bhid,bhjd->bhij", dO, V)
    dS = P * (dP - jnp.sum(dP * P, axis=-1, keepdims=True))
    dQ = jnp.einsum("bhij,bhjd->bhid", dS, K) * scale
    dK = jnp.einsum("bhij,bhid->bhjd", dS, Q) * scale
    return dQ, dK, dV


def _key_blocks(a: Array, block: int) -> Array:
    """``(batch, H, T, d)`` to ``(n_blocks, batch, H, block, d)``, zero-padded: padded keys
    lie after every query, so the causal mask hides them."""
    batch, heads, T, d = a.shape
    n = -(-T // block)
    a = jnp.pad(a, ((0, 0), (0, 0), (0, n * block - T), (0, 0)))
    return a.reshape(batch, heads, n, block, d).transpose(2, 0, 1, 3, 4)


def _unblock(a: Array, T: int) -> Array:
    """:func:`_key_blocks` undone, the padding dropped."""
    n, batch, heads, block, d = a.shape
    return a.transpose(1, 2, 0, 3, 4).reshape(batch, heads, n * block, d)[:, :, :T]


def blocked_forward(Q: Array, K: Array, V: Array, block: int) -> tuple[Array, Array]:
    """``(O, ℓ)``: attention over blocks of keys with the online softmax, never forming
    a ``(T, T)`` array; ``ℓ`` ``(batch, H, T)`` is each row's log-sum-exp of ``S``.

    Per block of keys ``K_j``, with ``m`` the running row max and ``l`` the running sum
    of ``exp(S − m)``: ``m' = max(m, rowmax(S_j))``, ``l' = e^{m−m'} l + rowsum(e^{S_j − m'})``,
    ``acc' = e^{m−m'} acc + e^{S_j − m'} V_j``; at the end ``O = acc / l``, ``ℓ = m + log l``.
    """
    T, scale = Q.shape[2], 1 / math.sqrt(Q.shape[-1])
    positions = jnp.arange(T)

    def step(carry, blocks):
        m, l, acc = carry
        j, K_j, V_j = blocks
        visible = causal(positions, j * block + jnp.arange(block))
        S_j = jnp.where(visible, jnp.einsum("bhid,bhjd->bhij", Q, K_j) * scale, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(S_j, axis=-1))  # finite: key 0 is in block 0
        alpha = jnp.exp(m - m_new)
        P_j = jnp.where(visible, jnp.exp(S_j - m_new[..., None]), 0)
        l = alpha * l + jnp.sum(P_j, axis=-1)
        acc = alpha[..., None] * acc + jnp.einsum("bhij,bhjd->bhid", P_j, V_j)
        return (m_new, l, acc), None

    K_b, V_b = _key_blocks(K, block), _key_blocks(V, block)
    init = (jnp.full(Q.shape[:3], -jnp.inf, Q.dtype), jnp.zeros(Q.shape[:3], Q.dtype), jnp.zeros_like(Q))
    (m, l, acc), _ = lax.scan(step, init, (jnp.arange(K_b.shape[0]), K_b, V_b))
    return acc / l[..., None], m + jnp.log(l)


def blocked_backward(Q: Array, K: Array, V: Array, O: Array, lse: Array, dO: Array,
                     block: int) -> tuple[Array, Array, Array]:
    """``(dQ, dK, dV)`` from ``ℓ`` alone (FlashAttention-2's backward): per block of keys,
    ``P_j = exp(S_j − ℓ)`` recomputed, then :func:`attention_backward`'s equations with
    ``rowsum(dP ⊙ P) = rowsum(dO ⊙ O)``; ``dQ`` summed over the blocks, ``dK_j`` and
    ``dV_j`` each block's own."""
    T, scale = Q.shape[2], 1 / math.sqrt(Q.shape[-1])
    positions = jnp.arange(T)
    D = jnp.sum(dO * O, axis=-1, keepdims=True)  # rowsum(dP ⊙ P)

    def step(dQ, blocks):
        j, K_j, V_j = blocks
        visible = causal(positions, j * block + jnp.arange(block))
        S_j = jnp.einsum("bhid,bhjd->bhij", Q, K_j) * scale
        P_j = jnp.where(visible, jnp.exp(S_j - lse[..., None]), 0)
        dV_j = jnp.einsum("bhij,bhid->bhjd", P_j, dO)
        dP_j = jnp.einsum("bhid,bhjd->bhij", dO, V_j)
        dS_j = P_j * (dP_j - D)
        dQ = dQ + jnp.einsum("bhij,bhjd->bhid", dS_j, K_j) * scale
        dK_j = jnp.einsum("bhij,bhid->bhjd", dS_j, Q) * scale
        return dQ, (dK_j, dV_j)

    K_b, V_b = _key_blocks(K, block), _key_blocks(V, block)
    dQ, (dK_b, dV_b) = lax.scan(step, jnp.zeros_like(Q), (jnp.arange(K_b.shape[0]), K_b, V_b))
    return dQ, _unblock(dK_b, T), _unblock(dV_b, T)


def _rows(a: Array) -> Array:
    return a.reshape(-1, a.shape[-1])


def _projection_backward(layer: Layer, x: Array, delta: Array) -> tuple[Layer, Array]:
    """A projection's BP5, BP6 (summed over batch and positions) and BP3."""
    return Layer(W=weight_grad(_rows(delta), _rows(x)), b=bias_grad(_rows(delta))), input_grad(delta, layer.W)


@dataclasses.dataclass(frozen=True, init=False)
class CausalSelfAttention:
    """Causal multi-head self-attention over ``(batch, T, features)`` (see the module
    docstring for the forward and the backward's equations).

    Params: :class:`AttentionParams` ``(query, key, value, out)``, each ``W``
    ``(features, features)`` (the seed's ``(n_out, n_in)``) with a bias ``b``, but for
    the key's (see the module docstring).
    Residuals: ``x``, ``Q``, ``K``, ``V``, the heads' concatenated ``O``, and ``P``
    (``keep="probs"``) or ``ℓ`` and ``O`` per head (``keep="lse"``).

    Args:
      heads: ``H``; must divide the features.
      keep: ``"probs"`` (keep ``P``, ``O(T²)`` memory) or ``"lse"`` (keep each row's
        log-sum-exp and recompute ``P`` block by block, ``O(T · block)``).
      block: keys per block for ``keep="lse"``.
      init: the projections' weight init scheme (:mod:`jbp.model.initializers`);
        biases start at zero. Stored as :attr:`init_name`.
    """

    heads: int
    keep: str
    block: int
    init_name: str

    def __init__(self, heads: int, keep: str = "probs", block: int = 128, init: str = "glorot_uniform"):
        object.__setattr__(self, "heads", _validate.positive_int("CausalSelfAttention's heads", heads))
        object.__setattr__(self, "keep", _validate.name("CausalSelfAttention's keep", keep, KEEPS))
        object.__setattr__(self, "block", _validate.positive_int("CausalSelfAttention's block", block))
        object.__setattr__(self, "init_name", _validate.name("CausalSelfAttention's init", init, tuple(INITIALIZERS)))

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[AttentionParams, tuple]:
        """``(AttentionParams, input_shape)`` for ``input_shape = (T, features)``."""
        key, shape, dtype = args.init_args(self, key, input_shape, dtype, 2, "(T, features)")
        features = shape[1]
        if features % self.heads:
            raise ValueError(
                f"CausalSelfAttention's heads={self.heads} must divide the features, got "
                f"input_shape {shape} ({features} features)"
            )
        layers = [
            Layer(W=init_weight(self.init_name, k, features, features, dtype), b=jnp.zeros((features,), dtype))
            for k in jax.random.split(key, 4)
        ]
        return AttentionParams(layers[0], layers[1].W, layers[2], layers[3]), shape

    def forward(self, params: AttentionParams, x: Array, *, key=None, train: bool = False):
        """``(y, residuals)``."""
        Q, K, V = (split_heads(a, self.heads) for a in (dense(params.query, x), x @ params.key.T,
                                                         dense(params.value, x)))  # BP1, per head
        if self.keep == "probs":
            P = attention_probs(Q, K)
            O_heads = jnp.einsum("bhij,bhjd->bhid", P, V)
            kept = P
        else:
            O_heads, lse = blocked_forward(Q, K, V, min(self.block, x.shape[1]))
            kept = (O_heads, lse)
        O = merge_heads(O_heads)
        return dense(params.out, O), (x, Q, K, V, O, kept)

    def _deltas(self, params: AttentionParams, residuals: tuple, dy: Array) -> tuple[Array, Array, Array]:
        """``(dQ, dK, dV)``, the projections' deltas, heads merged: BP3 through the
        output projection, then the attention's backward."""
        x, Q, K, V, O, kept = residuals
        dO = split_heads(input_grad(dy, params.out.W), self.heads)
        if self.keep == "probs":
            dQ, dK, dV = attention_backward(kept, Q, K, V, dO)
        else:
            dQ, dK, dV = blocked_backward(Q, K, V, *kept, dO, min(self.block, x.shape[1]))
        return merge_heads(dQ), merge_heads(dK), merge_heads(dV)

    def backward(self, params: AttentionParams, residuals: tuple, dy: Array) -> tuple[AttentionParams, Array]:
        """``(AttentionParams(dquery, dkey, dvalue, dout), dx)``."""
        x, O = residuals[0], residuals[4]
        d_out = Layer(W=weight_grad(_rows(dy), _rows(O)), b=bias_grad(_rows(dy)))  # BP5, BP6
        dQ, dK, dV = self._deltas(params, residuals, dy)
        d_query, dx_q = _projection_backward(params.query, x, dQ)
        d_key, dx_k = weight_grad(_rows(dK), _rows(x)), input_grad(dK, params.key)  # BP5, BP3
        d_value, dx_v = _projection_backward(params.value, x, dV)
        return AttentionParams(d_query, d_key, d_value, d_out), dx_q + dx_k + dx_v  # three paths add

    def kronecker_operands(self, params: AttentionParams, residuals: tuple, dy: Array) -> tuple:
        """BP5's operands of the four projections, in :attr:`AttentionParams.kronecker_blocks`'
        order (:mod:`jbp.layers.protocol`): ``((x, dQ), (x, dK), (x, dV), (O, dy))``, each
        ``(B, T, ·)``; every projection's weight is shared by the ``T`` positions."""
        x, O = residuals[0], residuals[4]
        dQ, dK, dV = self._deltas(params, residuals, dy)
        return (x, dQ), (x, dK), (x, dV), (O, dy)
