"""Dropout: :class:`Dropout`, inverted (scaled while training, the identity otherwise)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.layers import args

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Dropout:
    """Inverted dropout: while training each entry is kept with probability ``1 - rate``
    and scaled by ``1 / (1 - rate)``, so that its expectation is unchanged; otherwise
    the identity.

    Forward, with a mask ``m`` of independent Bernoulli(``1 - rate``) draws from ``key``::

        y = x · m / (1 - rate)                    (train=True)
        y = x                                      (train=False)

    Backward: ``∂y_i/∂x_i = m_i / (1 - rate)`` and nothing else depends on ``x_i``, so::

        dx = dy · m / (1 - rate)                   (dx = dy when not training)

    Any shape: a sequence ``(batch, T, features)`` gets one independent draw per entry,
    every position and feature. Residuals: the mask ``m`` (booleans) while training,
    ``None`` otherwise.

    Args:
      rate: the probability of dropping an entry, in ``[0, 1)``.
    """

    rate: float

    #: Whether the forward pass draws from its key in training mode.
    stochastic = True

    def __post_init__(self):
        rate = float(_validate.real("Dropout's rate", self.rate))
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout's rate must be in [0, 1), got {rate!r}")
        object.__setattr__(self, "rate", rate)

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[tuple, tuple]:
        """``((), input_shape)``: no parameters; the output has the input's shape."""
        _, shape, _ = args.init_args(self, key, input_shape, dtype, None, "the input's shape")
        return (), shape

    def forward(self, params: tuple, x: Array, *, key: Optional[Array] = None, train: bool = False):
        """``(y, mask)``; needs ``key`` when ``train`` is true (and ``rate > 0``)."""
        if not train or self.rate == 0:
            return x, None
        if key is None:
            raise ValueError(
                f"Dropout(rate={self.rate}).forward with train=True needs key=, a PRNG key "
                "(jax.random.key(seed)), got None"
            )
        _validate.prng_key("Dropout's key", key)
        mask = jax.random.bernoulli(key, 1 - self.rate, x.shape)
        return jnp.where(mask, x / (1 - self.rate), 0).astype(x.dtype), mask

    def backward(self, params: tuple, mask: Optional[Array], dy: Array) -> tuple[tuple, Array]:
        """``((), dy · m / (1 - rate))``, or ``((), dy)`` when not training."""
        if mask is None:
            return (), dy
        return (), jnp.where(mask, dy / (1 - self.rate), 0).astype(dy.dtype)
