"""The forward pass (BP1, BP2), keeping what the backward pass needs.

BP1 is :func:`jbp.layers.dense.dense` (imported here: ``jbp.model.forward_pass.dense``
still names it), BP2 :attr:`jbp.model.activations.Activation.f`.

Batch convention: data is ``(batch, features)``. Per layer, ``z = x @ W.T + b`` is the
seed's ``z_j = Σ_i w_ji x_i + b_j`` for every row of the batch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax

from jbp import _validate
from jbp.layers.dense import dense  # BP1 lives with the dense layer
from jbp.model.activations import Activation, get_activation
from jbp.model.params import Params

Array = jax.Array


class Cache(NamedTuple):
    """Everything the forward pass computed, for the backward pass.

    Attributes:
      zs: ``z^(l)`` for ``l = 1..L``, each ``(batch, n_l)``.
      xs: ``x^(l)`` for ``l = 0..L``, each ``(batch, n_l)``; ``xs[0]`` is the input and
        ``xs[-1]`` the network's output.
    """

    zs: tuple
    xs: tuple


def forward(
    params: Params, x: Array, activations: Sequence[str | Activation]
) -> tuple[Array, Cache]:
    """The seed's forward pass: BP1 then BP2, layer after layer.

    Args:
      params: one :class:`Layer` per layer.
      x: inputs, ``(batch, n_0)``.
      activations: one activation (name or :class:`Activation`) per layer, the
        output layer's last.

    Returns:
      ``(out, cache)``: the output ``x^(L)``, ``(batch, n_L)``, and the :class:`Cache`
      of every ``z^(l)`` and ``x^(l)``.
    """
    return forward_unchecked(params, _validate.forward_inputs(params, x, activations), activations)


def forward_unchecked(params: Params, x: Array, activations: Sequence[str | Activation]) -> tuple[Array, Cache]:
    """:func:`forward` on arguments already checked (by it, or by :class:`jbp.MLP`)."""
    zs, xs = [], [x]
    for layer, activation in zip(params, activations, strict=True):
        z = dense(layer, xs[-1])  # BP1
        zs.append(z)
        xs.append(get_activation(activation).f(z))  # BP2: x = f(z)
    return xs[-1], Cache(tuple(zs), tuple(xs))
