"""Helpers for the layer tests: draw a layer's parameters and inputs, and compare its
hand-derived backward with jax.vjp of its forward (float64, one compilation per case)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from helpers import assert_grads_close

#: Float64 bound on each leaf's max |manual - jax.vjp| / max |jax.vjp| (the issue's).
RTOL64 = 1e-10


def point(layer, input_shape, batch=3, dtype=np.float64, seed=0):
    """``(params, x, dy)``: the layer's init moved off its special values (ones, zeros)
    by noise, inputs and cotangent ~ N(0, 1), drawn with NumPy."""
    rng = np.random.default_rng(seed)
    params, out_shape = layer.init(jax.random.key(seed), input_shape, dtype)
    params = jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + 0.3 * rng.normal(size=p.shape), dtype), params)
    x = jnp.asarray(rng.normal(size=(batch, *input_shape)), dtype)
    dy = jnp.asarray(rng.normal(size=(batch, *out_shape)), dtype)
    return params, x, dy


@functools.partial(jax.jit, static_argnums=(0, 5))
def manual_and_autodiff(layer, params, x, dy, key, train):
    """``(y, manual (dparams, dx), jax.vjp's (dparams, dx))`` at one point."""
    y, residuals = layer.forward(params, x, key=key, train=train)
    manual = layer.backward(params, residuals, dy)
    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x, key=key, train=train)[0], params, x)
    return y, manual, vjp(dy)


def assert_backward_matches_vjp(layer, input_shape, batch=3, key=None, train=False, seed=0):
    """The layer's backward equals jax.vjp of its forward in float64, leaf by leaf."""
    params, x, dy = point(layer, input_shape, batch, seed=seed)
    y, manual, want = manual_and_autodiff(layer, params, x, dy, key, train)
    chex.assert_trees_all_equal_shapes_and_dtypes(manual, want)
    assert_grads_close(manual, want, RTOL64)
    return y, manual
