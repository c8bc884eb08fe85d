"""The parameter pytree: one :class:`Layer` per layer, in a tuple.

``params[l - 1]`` holds layer ``l``'s ``W^(l)``, ``(n_out, n_in)`` (row ``j``, column
``i`` is the seed's ``w_ji``: from neuron ``i`` of layer ``l-1`` to neuron ``j`` of layer
``l``), and ``b^(l)``, ``(n_out,)``. Gradients have exactly this structure, so any
``jax.tree`` function or optax optimizer applies to both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

Array = jax.Array


class Layer(NamedTuple):
    """One dense layer's parameters (or their gradients)."""

    W: Array  # (n_out, n_in)
    b: Array  # (n_out,)


Params = tuple  # tuple[Layer, ...]
