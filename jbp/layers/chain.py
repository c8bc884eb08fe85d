"""The one forward and backward loop: a chain of layers, first to last and back.

Every network is a chain of layers (:class:`jbp.Sequential`, :class:`jbp.MLP`, the block
of a :class:`jbp.layers.Residual`), and these two functions are its passes; everything
else (per-example norms, rules, the monitor, the custom_vjp bridge, the checks) calls
them.

- :func:`forward`: each layer's ``forward`` on the output of the one before (BP1, BP2
  for the seed's layers), keeping every layer's output and residuals.
- :func:`backward`: the chain rule from ``dy = dL/d(output)`` down, each layer's
  hand-derived ``backward`` turning the ``dy`` of its output into ``dL/d(its
  parameters)`` and the ``dy`` of the layer below (BP3-BP6). A learning rule
  (:mod:`jbp.rules`) may change how the delta travels down through a layer, the seed's
  BP3, by ``transport``; everything else stays the layer's own.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax

Array = jax.Array


def layer_keys(key: Optional[Array], n: int) -> tuple:
    """The key each of ``n`` layers' forward gets: ``fold_in(key, i)`` for layer ``i``."""
    if key is None:
        return (None,) * n
    return tuple(jax.random.fold_in(key, i) for i in range(n))


def forward(layers: tuple, params: tuple, x: Array, *, key: Optional[Array] = None,
            train: bool = False, state: Optional[tuple] = None) -> tuple[tuple, tuple]:
    """The forward pass through ``layers``: ``(outputs, residuals)``, one entry per layer.

    ``outputs[-1]`` is the chain's output; layer ``i`` gets ``fold_in(key, i)``. With a
    ``state`` (one entry per layer, ``None`` for a layer without one), a stateful layer
    gets ``(its input, state[i])`` (see :mod:`jbp.layers.protocol`).
    """
    outputs, residuals, h = [], [], x
    state = (None,) * len(layers) if state is None else state
    for layer, p, k, s in zip(layers, params, layer_keys(key, len(layers)), state, strict=True):
        h, r = layer.forward(p, h if s is None else (h, s), key=k, train=train)
        outputs.append(h)
        residuals.append(r)
    return tuple(outputs), tuple(residuals)


def final_state(layers: tuple, residuals: tuple, state: Optional[tuple]) -> Optional[tuple]:
    """The state after :func:`forward` ran from ``state``, one entry per layer: each
    stateful layer's ``final_state`` (``None`` where ``state[i]`` is), the next window's."""
    if state is None:
        return None
    return tuple(None if s is None else layer.final_state(r) for layer, r, s in zip(layers, residuals, state,
                                                                                   strict=True))


#: ``transport(i, dy, dx) -> dx``: the delta that layer ``i`` sends down, given the ``dy``
#: it received and the ``dx`` of its own backward (BP3); a learning rule's hook.
Transport = Callable[[int, Array, Array], Array]


def backward(layers: tuple, params: tuple, residuals: tuple, dy: Array, *,
             transport: Optional[Transport] = None, state: Optional[tuple] = None) -> tuple[tuple, Array, tuple]:
    """The backward pass from ``dy = dL/d(output)``: ``(grads, dx, dys)``.

    Args:
      layers, params, residuals: the chain, its parameters and :func:`forward`'s residuals.
      dy: ``dL/d(output)``, the output's shape.
      transport: how each layer sends the delta down (default its own ``dx``: backprop).
      state: the ``state`` :func:`forward` ran from: a layer given one returns ``(dx,
        dstate)``, and only ``dx`` goes down; ``dstate`` is dropped (truncated BPTT: the
        gradient stops at the window's edge).

    Returns:
      ``grads`` with the structure of ``params``; ``dx = dL/d(input)``; ``dys``, the
      ``dy`` each layer received, one entry per layer (what per-example norms read).
    """
    n = len(layers)
    grads, dys = [None] * n, [None] * n
    for i in reversed(range(n)):
        dys[i] = dy
        grads[i], dx = layers[i].backward(params[i], residuals[i], dy)  # this layer's BP3-BP6
        if state is not None and state[i] is not None:
            dx = dx[0]  # truncated BPTT: dL/dstate, the gradient across the window's edge, is dropped
        dy = dx if transport is None else transport(i, dy, dx)
    return tuple(grads), dy, tuple(dys)
