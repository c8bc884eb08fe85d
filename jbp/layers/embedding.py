"""Embeddings of a sequence: :class:`Embedding` (token ids to vectors) and
:class:`PositionEmbedding` (a learned vector added at each position).

An :class:`Embedding` takes integer ids, not floats: it has the optional attribute
``input_vocab`` (the ids lie in ``[0, input_vocab)``), by which a network keeps its
inputs integer and :func:`jbp.check_layer` draws valid ids. It has no ``dx``: the
gradient with respect to an integer is not defined, and its backward returns ``None``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.layers import args

Array = jax.Array

#: The standard deviation of the tables' initial entries (GPT-2's).
EMBEDDING_STD = 0.02


class EmbeddingParams(NamedTuple):
    """An embedding's parameters (or their gradients)."""

    table: Array  # (rows, features): row v is the vector of id (or position) v


def scatter_add_rows(ids: Array, delta: Array, rows: int) -> Array:
    """BP5 of a lookup ``y_t = E[ids_t]``: ``dE_v = Σ_{t: ids_t = v} delta_t``.

    A lookup is a dense layer whose input is the one-hot row of ``ids_t``
    (``y_t = onehotᵀ E``), so BP5's ``delta x_prevᵀ`` is ``delta_t`` placed in row
    ``ids_t``, summed over every batch entry and position: a scatter-add, never forming
    the one-hot rows.

    Args:
      ids: integer ids, any shape ``S``.
      delta: ``dL/dy``, ``(*S, features)``.
      rows: the table's rows.

    Returns:
      ``dL/dE``, ``(rows, features)``.
    """
    flat_ids, flat_delta = ids.reshape(-1), delta.reshape(-1, delta.shape[-1])
    return jnp.zeros((rows, delta.shape[-1]), delta.dtype).at[flat_ids].add(flat_delta)


@dataclasses.dataclass(frozen=True)
class Embedding:
    """Token ids to vectors: ``y_t = E[x_t]``, ``E`` ``(vocab, features)``.

    Forward, with integer ``x`` ``(batch, T)`` in ``[0, vocab)``::

        y[b, t] = E[x[b, t]]                        (batch, T, features)

    Backward: ``y[b, t]`` is row ``x[b, t]`` of ``E``, i.e. the dense layer
    ``onehot(x[b, t])ᵀ E`` without bias, so BP5 puts each ``dy[b, t]`` in row
    ``x[b, t]``, summed over batch and positions (:func:`scatter_add_rows`)::

        dE_v = Σ_{b,t: x[b,t] = v} dy[b, t]

    There is no ``dx`` (``x`` is integer): ``backward`` returns ``(dparams, None)``.

    Residuals: ``x``. Params: :class:`EmbeddingParams` ``(table,)``, ``(vocab, features)``,
    entries ``N(0, EMBEDDING_STD²)``.

    Args:
      vocab: the number of ids.
      features: the vector size.
    """

    vocab: int
    features: int

    def __post_init__(self):
        _validate.positive_int("Embedding's vocab", self.vocab)
        _validate.positive_int("Embedding's features", self.features)

    @property
    def input_vocab(self) -> int:
        """The inputs are integer ids in ``[0, input_vocab)``."""
        return self.vocab

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[EmbeddingParams, tuple]:
        """``(EmbeddingParams(table), (*input_shape, features))``; ``input_shape = (T,)``."""
        key, shape, dtype = args.init_args(self, key, input_shape, dtype, None, "(T,), the positions")
        table = EMBEDDING_STD * jax.random.normal(key, (self.vocab, self.features), dtype)
        return EmbeddingParams(table=table), (*shape, self.features)

    def forward(self, params: EmbeddingParams, x: Array, *, key=None, train: bool = False):
        """``(E[x], x)``."""
        return jnp.take(params.table, x, axis=0), x

    def backward(self, params: EmbeddingParams, x: Array, dy: Array) -> tuple[EmbeddingParams, None]:
        """``(EmbeddingParams(dE), None)``: the scatter-add of ``dy``'s rows (BP5)."""
        return EmbeddingParams(table=scatter_add_rows(x, dy, self.vocab)), None


@dataclasses.dataclass(frozen=True)
class PositionEmbedding:
    """A learned vector per position, added: ``y[b, t] = x[b, t] + P[t]``, ``P``
    ``(context, features)``.

    Forward, with ``x`` ``(batch, T, features)``, ``T <= context``::

        y = x + P[:T]

    Backward: ``∂y/∂x = I`` and ``P[t]`` is added to every batch entry at position ``t``
    (a bias shared by the batch, BP6)::

        dx = dy,   dP[t] = Σ_b dy[b, t]  (t < T),   dP[t] = 0  (t >= T)

    Residuals: none (``None``). Params: :class:`EmbeddingParams` ``(table,)``,
    ``(context, features)``, entries ``N(0, EMBEDDING_STD²)``.

    Args:
      context: the longest sequence, the table's rows.
    """

    context: int

    def __post_init__(self):
        _validate.positive_int("PositionEmbedding's context", self.context)

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[EmbeddingParams, tuple]:
        """``(EmbeddingParams(table), input_shape)``; ``input_shape = (T, features)``."""
        key, shape, dtype = args.init_args(self, key, input_shape, dtype, 2, "(T, features)")
        if shape[0] > self.context:
            raise ValueError(
                f"PositionEmbedding.init's input_shape has T={shape[0]} positions but its context "
                f"is {self.context}; T must be <= context"
            )
        table = EMBEDDING_STD * jax.random.normal(key, (self.context, shape[1]), dtype)
        return EmbeddingParams(table=table), shape

    def forward(self, params: EmbeddingParams, x: Array, *, key=None, train: bool = False):
        """``(x + P[:T], None)``."""
        return x + params.table[: x.shape[1]], None

    def backward(self, params: EmbeddingParams, residuals: None, dy: Array) -> tuple[EmbeddingParams, Array]:
        """``(EmbeddingParams(dP), dy)``: ``dP`` is ``dy`` summed over the batch (BP6),
        zero beyond ``T``."""
        dP = jnp.zeros_like(params.table).at[: dy.shape[1]].set(jnp.sum(dy, axis=0))
        return EmbeddingParams(table=dP), dy
