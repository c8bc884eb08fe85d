"""Reshaping: :class:`Flatten`, from convolutional features to a dense layer's input."""

from __future__ import annotations

import dataclasses
import math

import jax

from jbp.layers import args
from jbp.layers.protocol import StaticShape

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Flatten:
    """``(batch, *shape) -> (batch, prod(shape))``, row-major, without parameters.

    Forward: ``y[b, i] = x[b, *unravel(i)]``, each output one input. Backward: every
    ``∂y_i/∂x_p`` is 1 where ``p = unravel(i)`` and 0 elsewhere, so ``dx = dy`` reshaped
    back: ``dx[b, *p] = dy[b, ravel(p)]``. Residuals: the input's shape.
    """

    #: Whether the forward pass draws from its key in training mode.
    stochastic = False

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[tuple, tuple]:
        """``((), (prod(input_shape),))``."""
        _, shape, _ = args.init_args(self, key, input_shape, dtype, None, "the input's shape")
        return (), (math.prod(shape),)

    def forward(self, params: tuple, x: Array, *, key=None, train: bool = False) -> tuple[Array, StaticShape]:
        """``(x.reshape(batch, -1), shape)``."""
        return x.reshape(x.shape[0], -1), StaticShape(x.shape[1:])

    def backward(self, params: tuple, shape: StaticShape, dy: Array) -> tuple[tuple, Array]:
        """``((), dy.reshape(batch, *shape))``."""
        return (), dy.reshape(dy.shape[0], *shape.shape)
