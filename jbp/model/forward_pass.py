"""The forward pass (BP1, BP2), keeping what the backward pass needs: the seed's view.

:func:`forward` runs the one forward loop (:func:`jbp.layers.chain.forward`) over the
seed's layers, a :class:`jbp.layers.Dense` (BP1, :func:`jbp.layers.dense.dense`; imported
here, so ``jbp.model.forward_pass.dense`` still names it) and an
:class:`jbp.layers.ActivationLayer` (BP2, :attr:`jbp.model.activations.Activation.f`) per
layer, and reads the :class:`Cache` off their outputs.

Batch convention: data is ``(batch, features)``. Per layer, ``z = x @ W.T + b`` is the
seed's ``z_j = Σ_i w_ji x_i + b_j`` for every row of the batch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax

from jbp import _validate
from jbp.layers import chain
from jbp.layers.activation import ActivationLayer
from jbp.layers.dense import Dense, dense  # BP1 lives with the dense layer
from jbp.model.activations import Activation
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


def seed_layers(params: Params, activations: Sequence[str | Activation]) -> tuple:
    """The seed's layers of ``params`` as a chain: ``Dense`` (BP1) then its activation
    (BP2) for each layer; with :func:`seed_params` they are what :func:`forward` runs."""
    return tuple(
        layer
        for p, activation in zip(params, activations, strict=True)
        for layer in (Dense(p.W.shape[0]), ActivationLayer(activation))
    )


def seed_params(params: Params) -> tuple:
    """``params`` for :func:`seed_layers`: each ``Layer`` followed by its activation's ``()``."""
    return tuple(entry for p in params for entry in (p, ()))


def forward_unchecked(params: Params, x: Array, activations: Sequence[str | Activation]) -> tuple[Array, Cache]:
    """:func:`forward` on arguments already checked."""
    outputs, _ = chain.forward(seed_layers(params, activations), seed_params(params), x)
    zs, xs = outputs[0::2], outputs[1::2]  # BP1's z and BP2's x, layer after layer
    return xs[-1], Cache(zs, (x,) + xs)
