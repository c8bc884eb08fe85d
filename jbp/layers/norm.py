"""Normalisation over the last axis: :class:`LayerNorm` (learned scale and offset) and
:class:`RMSNorm` (learned scale, no centring)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jbp import _validate
from jbp.layers import args

Array = jax.Array


class LayerNormParams(NamedTuple):
    """:class:`LayerNorm`'s parameters (or their gradients)."""

    scale: Array  # (d,), gamma
    offset: Array  # (d,), beta


@dataclasses.dataclass(frozen=True)
class LayerNorm:
    """Layer normalisation over the last axis (the features; for channels-last images,
    the channels of each position), with a learned scale ``γ`` and offset ``β`` per
    feature (Ba, Kiros & Hinton, 2016).

    Forward, for each row ``x`` of ``d`` features (every index but the last)::

        μ = mean(x),  σ² = mean((x - μ)²),  r = 1 / sqrt(σ² + ε)
        x̂ = (x - μ) r
        y = γ x̂ + β

    Backward, from ``dy``: ``γ`` and ``β`` are shared by all rows, so (BP5 and BP6 of a
    diagonal layer) ``dγ = Σ_rows dy x̂`` and ``dβ = Σ_rows dy``; for a sequence
    ``(batch, T, d)`` the rows are every batch entry and position. Through ``x̂`` with
    ``g = dy γ``: ``∂x̂_i/∂x_j = r (δ_ij - 1/d - x̂_i x̂_j / d)`` (from ``∂μ/∂x_j = 1/d``
    and ``∂r/∂x_j = -r³ (x_j - μ) / d``), hence::

        dx = r (g - mean(g) - x̂ mean(g x̂))

    Per example (for clipping): example ``i``'s ``dγ_i = Σ_{its rows} dy x̂`` and
    ``dβ_i = Σ_{its rows} dy`` are ``(d,)`` each, as cheap as the batch's, so
    :meth:`per_example_sq_norms` forms them and squares them (exact, ``O(B · size)``).

    Residuals: ``x̂`` and ``r``. Params: :class:`LayerNormParams` ``(scale, offset)``,
    each ``(d,)``, initially ones and zeros.

    Args:
      epsilon: ``ε`` > 0, added to the variance.
    """

    epsilon: float = 1e-5

    #: Whether the forward pass draws from its key in training mode.
    stochastic = False

    def __post_init__(self):
        object.__setattr__(self, "epsilon", float(_validate.real("LayerNorm's epsilon", self.epsilon, positive=True, finite=True)))

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[LayerNormParams, tuple]:
        """``(LayerNormParams(ones, zeros), input_shape)``, each ``(input_shape[-1],)``."""
        _, shape, dtype = args.init_args(self, key, input_shape, dtype, None, "the input's shape")
        d = shape[-1]
        return LayerNormParams(scale=jnp.ones((d,), dtype), offset=jnp.zeros((d,), dtype)), shape

    def forward(self, params: LayerNormParams, x: Array, *, key=None, train: bool = False):
        """``(y, (x̂, r))``."""
        xc = x - jnp.mean(x, axis=-1, keepdims=True)
        r = lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + self.epsilon)
        x_hat = xc * r
        return params.scale * x_hat + params.offset, (x_hat, r)

    def backward(self, params: LayerNormParams, residuals: tuple, dy: Array) -> tuple[LayerNormParams, Array]:
        """``(LayerNormParams(dγ, dβ), dx)``."""
        x_hat, r = residuals
        rows = tuple(range(dy.ndim - 1))
        g = dy * params.scale
        dx = r * (g - jnp.mean(g, axis=-1, keepdims=True) - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True))
        return LayerNormParams(scale=jnp.sum(dy * x_hat, axis=rows), offset=jnp.sum(dy, axis=rows)), dx

    def per_example_sq_norms(self, params: LayerNormParams, residuals: tuple, dy: Array) -> Array:
        """``‖dγ_i‖² + ‖dβ_i‖²`` per example, ``(B,)``: each example's own ``dγ`` and
        ``dβ`` (summed over its rows only), squared."""
        x_hat, _ = residuals
        rows = tuple(range(1, dy.ndim - 1))  # an example's rows: every axis but batch and features
        d_scale, d_offset = jnp.sum(dy * x_hat, axis=rows), jnp.sum(dy, axis=rows)  # (B, d) each
        return jnp.sum(d_scale * d_scale, axis=-1) + jnp.sum(d_offset * d_offset, axis=-1)


class RMSNormParams(NamedTuple):
    """:class:`RMSNorm`'s parameters (or their gradients)."""

    scale: Array  # (d,), gamma


@dataclasses.dataclass(frozen=True)
class RMSNorm:
    """Root-mean-square normalisation over the last axis, with a learned scale ``γ`` per
    feature and no centring or offset (Zhang & Sennrich, 2019).

    Forward, for each row ``x`` of ``d`` features (every index but the last)::

        r = 1 / sqrt(mean(x²) + ε),  x̂ = x r,  y = γ x̂

    Backward, from ``dy``: ``γ`` is shared by all rows (every batch entry and position of
    a sequence), so ``dγ = Σ_rows dy x̂``. Through ``x̂`` with ``g = dy γ``:
    ``∂r/∂x_j = -r³ x_j / d``, so ``∂x̂_i/∂x_j = r (δ_ij - x̂_i x̂_j / d)``, hence::

        dx = r (g - x̂ mean(g x̂))

    (LayerNorm's ``dx`` without the ``- mean(g)`` of its centring.)

    Residuals: ``x̂`` and ``r``. Params: :class:`RMSNormParams` ``(scale,)``, ``(d,)``,
    initially ones.

    Args:
      epsilon: ``ε`` > 0, added to the mean square.
    """

    epsilon: float = 1e-6

    def __post_init__(self):
        object.__setattr__(self, "epsilon", float(_validate.real("RMSNorm's epsilon", self.epsilon, positive=True, finite=True)))

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[RMSNormParams, tuple]:
        """``(RMSNormParams(ones), input_shape)``, ``(input_shape[-1],)``."""
        _, shape, dtype = args.init_args(self, key, input_shape, dtype, None, "the input's shape")
        return RMSNormParams(scale=jnp.ones((shape[-1],), dtype)), shape

    def forward(self, params: RMSNormParams, x: Array, *, key=None, train: bool = False):
        """``(y, (x̂, r))``."""
        r = lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
        x_hat = x * r
        return params.scale * x_hat, (x_hat, r)

    def backward(self, params: RMSNormParams, residuals: tuple, dy: Array) -> tuple[RMSNormParams, Array]:
        """``(RMSNormParams(dγ), dx)``."""
        x_hat, r = residuals
        rows = tuple(range(dy.ndim - 1))
        g = dy * params.scale
        dx = r * (g - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True))
        return RMSNormParams(scale=jnp.sum(dy * x_hat, axis=rows)), dx

    def per_example_sq_norms(self, params: RMSNormParams, residuals: tuple, dy: Array) -> Array:
        """``‖dγ_i‖²`` per example, ``(B,)``: each example's own ``dγ`` (summed over its
        rows only), squared."""
        x_hat, _ = residuals
        d_scale = jnp.sum(dy * x_hat, axis=tuple(range(1, dy.ndim - 1)))  # (B, d)
        return jnp.sum(d_scale * d_scale, axis=-1)
