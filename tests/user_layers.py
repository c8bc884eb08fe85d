"""Layers written the way a user writes them (frozen dataclasses with a hand-derived
backward), for the tests of jbp.Sequential: they depend on the layer protocol only."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Affine(NamedTuple):
    w: jax.Array  # (n_out, n_in)
    b: jax.Array  # (n_out,)


@dataclasses.dataclass(frozen=True)
class MyDense:
    """``y = x w^T + b``."""

    features: int

    def init(self, key, input_shape, dtype):
        (n_in,) = input_shape
        w = jax.random.normal(key, (self.features, n_in), dtype) / jnp.sqrt(jnp.asarray(n_in, dtype))
        return Affine(w, 0.1 * jnp.ones((self.features,), dtype)), (self.features,)

    def forward(self, params, x, *, key=None, train=False):
        return x @ params.w.T + params.b, x

    def backward(self, params, x, dy):
        return Affine(dy.T @ x, dy.sum(axis=0)), dy @ params.w


@dataclasses.dataclass(frozen=True)
class BiasAveraged(MyDense):
    """:class:`MyDense` with the classic mistake: ``db`` a mean over the batch."""

    def backward(self, params, x, dy):
        return Affine(dy.T @ x, dy.mean(axis=0)), dy @ params.w


@dataclasses.dataclass(frozen=True)
class MyTanh:
    def init(self, key, input_shape, dtype):
        return (), tuple(input_shape)

    def forward(self, params, x, *, key=None, train=False):
        y = jnp.tanh(x)
        return y, y

    def backward(self, params, y, dy):
        return (), dy * (1 - y * y)


@dataclasses.dataclass(frozen=True)
class MyDropout:
    """Inverted dropout; the mask is drawn in float32 whatever the data's dtype, so a
    float64 re-run sees the same mask."""

    rate: float

    def init(self, key, input_shape, dtype):
        return (), tuple(input_shape)

    def forward(self, params, x, *, key=None, train=False):
        if not train:
            return x, None
        keep = jax.random.uniform(key, x.shape, jnp.float32) >= self.rate
        scale = jnp.where(keep, 1 / (1 - self.rate), 0).astype(x.dtype)
        return x * scale, scale

    def backward(self, params, scale, dy):
        return (), dy if scale is None else dy * scale


@dataclasses.dataclass(frozen=True)
class MyDenseWithNorms(MyDense):
    """:class:`MyDense` with the optional per-example method: the outer-product identity."""

    def per_example_sq_norms(self, params, x, dy):
        return jnp.sum(dy * dy, axis=1) * (jnp.sum(x * x, axis=1) + 1)


@dataclasses.dataclass(frozen=True)
class MyScale:
    """``y = x * s``, ``s`` ``(n,)``, keeping ``s`` (no batch axis) in its residuals: its
    backward cannot be mapped over the examples."""

    def init(self, key, input_shape, dtype):
        return jnp.ones(input_shape, dtype), tuple(input_shape)

    def forward(self, params, x, *, key=None, train=False):
        return x * params, (x, params)

    def backward(self, params, residuals, dy):
        x, s = residuals
        return jnp.sum(dy * x, axis=0), dy * s
