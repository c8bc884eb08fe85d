"""Helpers for the layer tests: draw a layer's parameters and inputs, and compare its
hand-derived backward with jax.vjp of its forward in float64, a whole table of layers
under one compilation."""

import functools

import chex
import jax
import numpy as np

from helpers import rel_errors

#: Float64 bound on each leaf's max |manual - jax.vjp| / max |jax.vjp| (the issue's).
RTOL64 = 1e-10
KEY = jax.random.key(0)


def shapes(layer, input_shape, dtype=np.float64):
    """``(params as ShapeDtypeStructs, output_shape)`` from the layer's init, traced
    only (jax.random would compile anew for every shape of a table)."""
    box = {}

    def init(key):
        params, box["out"] = layer.init(key, input_shape, dtype)
        return params

    return jax.eval_shape(init, KEY), box["out"]


def point(layer, input_shape, batch=3, dtype=np.float64, seed=0):
    """``(params, x, dy)`` ~ N(0, 1), drawn with NumPy in the shapes the layer's init
    gives (no parameter at a special value such as a scale of one or a bias of zero)."""
    rng = np.random.default_rng(seed)
    params, out_shape = shapes(layer, input_shape, dtype)
    params = jax.tree.map(lambda p: np.asarray(rng.normal(size=p.shape), dtype), params)
    x = np.asarray(rng.normal(size=(batch, *input_shape)), dtype)
    dy = np.asarray(rng.normal(size=(batch, *out_shape)), dtype)
    return params, x, dy


@functools.partial(jax.jit, static_argnums=(0, 3))
def _manual_and_autodiff(layers, points, key, train):
    """Per layer: ``(y, manual (dparams, dx), jax.vjp's (dparams, dx))``."""
    out = []
    for layer, (params, x, dy) in zip(layers, points):
        y, residuals = layer.forward(params, x, key=key, train=train)
        manual = layer.backward(params, residuals, dy)
        _, vjp = jax.vjp(lambda p, x: layer.forward(p, x, key=key, train=train)[0], params, x)
        out.append((y, manual, vjp(dy)))
    return out


def backward_errors(cases, key=KEY, train=False):
    """``cases``: ``(layer, input_shape, batch)``. Checks shapes and dtypes, and returns
    per case the outputs ``y`` and the relative error of each leaf of ``(dparams, dx)``."""
    layers = tuple(layer for layer, _, _ in cases)
    points = [point(layer, shape, batch, seed=i) for i, (layer, shape, batch) in enumerate(cases)]
    results = _manual_and_autodiff(layers, points, key, train)
    errors = []
    for layer, (y, manual, want) in zip(layers, results):
        chex.assert_trees_all_equal_shapes_and_dtypes(manual, want, custom_message=repr(layer))
        errors.append(rel_errors(manual, want))
    return [y for y, _, _ in results], errors


def assert_backwards_match_vjp(cases, key=KEY, train=False):
    """Every case's backward equals jax.vjp of its forward in float64, leaf by leaf."""
    ys, errors = backward_errors(cases, key, train)
    bad = [(layer, shape, batch, ["%.1e" % e for e in errs]) for (layer, shape, batch), errs in zip(cases, errors)
           if not (np.all(np.isfinite(errs)) and max(errs, default=0.0) <= RTOL64)]
    assert bad == [], f"backward vs jax.vjp beyond {RTOL64:g}: {bad}"
    return ys
