"""Pooling, channels-last, ``"VALID"`` windows: :class:`MaxPool1D`, :class:`MaxPool2D`,
:class:`AvgPool1D`, :class:`AvgPool2D`.

Take one spatial axis (two work the same, index by index): input ``x`` ``(B, n, C)``,
window ``k``, stride ``s`` (default ``k``: windows side by side), ``o_n = floor((n - k)
/ s) + 1`` outputs; output ``o`` pools the window ``x[o s : o s + k]`` of each channel.
Both are written with the windows laid out as patches, ``P[b, o, t, c] = x[b, o s + t,
c]`` (:func:`patches`), whose transpose, :func:`unpatch`, adds each patch entry back
onto the input position it came from (overlapping windows add up).

**Max**: ``y[o] = max_t x[o s + t] = x[o s + t*(o)]`` with ``t*(o)`` the window's
argmax, so ``∂y[o]/∂x[p]`` is 1 where ``p = o s + t*(o)`` and 0 elsewhere::

    dx[p] = Σ_o dy[o] · [p = o s + t*(o)]

the delta is routed to each window's winner. Ties: the first maximum in the window's
row-major order wins alone (a subgradient; JAX's own derivative of ``lax.reduce_window`` also
picks one). The forward reads each max at its winner, ``y[o] = x[o s + t*(o)]``, so that
this is the derivative of the function computed even at a tie, where autodiff of a plain
``max`` would share the delta among the tied entries: after a ReLU whole windows of zeros
tie, and a gradient check would report the difference. Residuals: the winners ``t*``
(small integers) and the input's shape.

**Average**: ``y[o] = (1/K) Σ_t x[o s + t]`` with ``K`` the window's size, so::

    dx[p] = (1/K) Σ_{o, t : o s + t = p} dy[o]

the delta is spread evenly over each window. Residuals: the input's shape only.

Inputs past the last window (when ``(n - k)`` is not a multiple of ``s``) get ``dx = 0``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from jbp.layers import args
from jbp.layers.protocol import StaticShape

Array = jax.Array


def out_spatial(in_spatial: tuple, window: tuple, strides: tuple) -> tuple:
    """``floor((n - k) / s) + 1`` per spatial axis."""
    return tuple((n - k) // s + 1 for n, k, s in zip(in_spatial, window, strides))


def _offsets(window: tuple) -> list:
    return list(itertools.product(*(range(k) for k in window)))


def patches(x: Array, window: tuple, strides: tuple) -> Array:
    """``P[b, *o, t, c] = x[b, *(o s + t), c]``: ``(B, *O, K, C)``, the ``K`` entries of
    each window in row-major order."""
    out = out_spatial(x.shape[1:-1], window, strides)
    rows = [
        lax.slice(x, (0, *t, 0), (x.shape[0], *(ti + (o - 1) * s + 1 for ti, o, s in zip(t, out, strides)), x.shape[-1]),
                  (1, *strides, 1))
        for t in _offsets(window)
    ]
    return jnp.stack(rows, axis=-2)


def unpatch(dP: Array, in_spatial: tuple, window: tuple, strides: tuple) -> Array:
    """The transpose of :func:`patches`: ``dx[b, p, c] = Σ_{o, t : o s + t = p} dP[b, o, t, c]``,
    ``(B, *in_spatial, C)``. Each window offset ``t`` is placed by a pad that puts
    ``s - 1`` zeros between entries and ``t`` in front."""
    out = dP.shape[1:-2]
    zero = jnp.zeros((), dP.dtype)
    dx = None
    for j, t in enumerate(_offsets(window)):
        config = [(0, 0, 0)] + [
            (ti, n - ti - (o - 1) * s - 1, s - 1) for ti, n, o, s in zip(t, in_spatial, out, strides)
        ] + [(0, 0, 0)]
        placed = lax.pad(dP[..., j, :], zero, config)
        dx = placed if dx is None else dx + placed
    return dx


class _Pool:
    """What the pools share; each sets ``window`` and ``strides`` (tuples)."""

    #: Whether the forward pass draws from its key in training mode.
    stochastic = False

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[tuple, tuple]:
        """``((), output_shape)``: no parameters."""
        n = len(self.window)
        what = "(length, channels)" if n == 1 else "(height, width, channels)"
        _, shape, _ = args.init_args(self, key, input_shape, dtype, n + 1, what)
        if any(k > m for k, m in zip(self.window, shape[:-1])):
            raise ValueError(
                f"{type(self).__name__}'s window {self.window} is larger than the input's spatial shape {shape[:-1]}"
            )
        return (), (*out_spatial(shape[:-1], self.window, self.strides), shape[-1])


def _fields(layer, window, strides, n):
    name = type(layer).__name__
    window = args.ints(f"{name}'s window", window, n)
    strides = window if strides is None else args.ints(f"{name}'s {'stride' if n == 1 else 'strides'}", strides, n)
    object.__setattr__(layer, "window", window)
    object.__setattr__(layer, "strides", strides)


class _MaxPool(_Pool):
    def forward(self, params: tuple, x: Array, *, key=None, train: bool = False) -> tuple[Array, tuple]:
        """``(y, (winners, shape))``: each window's max and where it was."""
        P = patches(x, self.window, self.strides)
        K = math.prod(self.window)
        winners = jnp.argmax(P, axis=-2)  # the first maximum on ties
        # The max read at the winner: the function whose derivative backward computes, ties
        # included (autodiff of a plain max would share a tie's delta among the tied entries).
        y = jnp.take_along_axis(P, winners[..., None, :], axis=-2)[..., 0, :]
        return y, (winners.astype(jnp.int8 if K <= 127 else jnp.int32), StaticShape(x.shape[1:-1]))

    def backward(self, params: tuple, residuals: tuple, dy: Array) -> tuple[tuple, Array]:
        """``((), dx)``: ``dy`` routed to each window's winner."""
        winners, shape = residuals
        K = math.prod(self.window)
        routed = jnp.where(jnp.arange(K)[:, None] == winners[..., None, :], dy[..., None, :], 0)
        return (), unpatch(routed.astype(dy.dtype), shape.shape, self.window, self.strides)


class _AvgPool(_Pool):
    def forward(self, params: tuple, x: Array, *, key=None, train: bool = False) -> tuple[Array, StaticShape]:
        """``(y, shape)``: each window's mean."""
        return jnp.mean(patches(x, self.window, self.strides), axis=-2), StaticShape(x.shape[1:-1])

    def backward(self, params: tuple, shape: StaticShape, dy: Array) -> tuple[tuple, Array]:
        """``((), dx)``: ``dy / K`` spread over each window."""
        K = math.prod(self.window)
        spread = jnp.broadcast_to((dy / K)[..., None, :], (*dy.shape[:-1], K, dy.shape[-1]))
        return (), unpatch(spread, shape.shape, self.window, self.strides)


@dataclasses.dataclass(frozen=True, init=False)
class MaxPool1D(_MaxPool):
    """Max pooling on ``(batch, length, channels)``, ``"VALID"`` windows; see the module
    docstring for the backward.

    Args:
      window: ``k``, an int.
      stride: ``s``, an int; default ``k``.
    """

    window: tuple
    strides: tuple

    def __init__(self, window: int, stride: Optional[int] = None):
        _fields(self, window, stride, 1)


@dataclasses.dataclass(frozen=True, init=False)
class MaxPool2D(_MaxPool):
    """Max pooling on ``(batch, height, width, channels)``, ``"VALID"`` windows; see the
    module docstring for the backward.

    Args:
      window: ``(kh, kw)``, or one int for both.
      strides: ``(sh, sw)``, or one int for both; default ``window``.
    """

    window: tuple
    strides: tuple

    def __init__(self, window, strides=None):
        _fields(self, window, strides, 2)


@dataclasses.dataclass(frozen=True, init=False)
class AvgPool1D(_AvgPool):
    """Average pooling on ``(batch, length, channels)``, ``"VALID"`` windows; see the
    module docstring for the backward.

    Args:
      window: ``k``, an int.
      stride: ``s``, an int; default ``k``.
    """

    window: tuple
    strides: tuple

    def __init__(self, window: int, stride: Optional[int] = None):
        _fields(self, window, stride, 1)


@dataclasses.dataclass(frozen=True, init=False)
class AvgPool2D(_AvgPool):
    """Average pooling on ``(batch, height, width, channels)``, ``"VALID"`` windows; see
    the module docstring for the backward.

    Args:
      window: ``(kh, kw)``, or one int for both.
      strides: ``(sh, sw)``, or one int for both; default ``window``.
    """

    window: tuple
    strides: tuple

    def __init__(self, window, strides=None):
        _fields(self, window, strides, 2)
