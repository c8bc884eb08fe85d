"""LayerNorm over the last axis, with learned scale and offset."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp

from jbp.layers import LayerNorm, LayerNormParams
from layer_cases import assert_backwards_match_vjp, point


def test_backward_matches_vjp():
    assert_backwards_match_vjp([(LayerNorm(), (5,), 3), (LayerNorm(1e-3), (2, 4), 3), (LayerNorm(), (3, 2, 6), 2)])


def test_normalises_each_row_then_scales_and_shifts():
    layer = LayerNorm(epsilon=1e-12)
    params, x, _ = point(layer, (2, 7), batch=3)
    y, _ = layer.forward(params, x)
    x_hat = (y - params.offset) / params.scale
    chex.assert_trees_all_close(x_hat.mean(-1), np.zeros((3, 2)), atol=1e-12)
    chex.assert_trees_all_close(x_hat.var(-1), np.ones((3, 2)), rtol=1e-10)


def test_init_is_ones_and_zeros_over_the_last_axis():
    params, shape = LayerNorm().init(jax.random.key(0), (4, 3), jnp.float32)
    assert shape == (4, 3)
    chex.assert_trees_all_equal(params, LayerNormParams(jnp.ones(3, jnp.float32), jnp.zeros(3, jnp.float32)))


@pytest.mark.parametrize("epsilon, error, match", [
    (0.0, ValueError, "LayerNorm's epsilon must be > 0, got 0.0"),
    (float("inf"), ValueError, "LayerNorm's epsilon must be a finite real number"),
    (None, TypeError, "LayerNorm's epsilon must be a real number, got NoneType None"),
])
def test_bad_epsilon_is_named(epsilon, error, match):
    with pytest.raises(error, match=match):
        LayerNorm(epsilon)


def test_rms_norm_backward_matches_vjp():
    from jbp.layers import RMSNorm

    assert_backwards_match_vjp([(RMSNorm(), (5,), 3), (RMSNorm(1e-3), (4, 6), 2)])
    report = jbp.check_layer(RMSNorm(), (4, 6), key=jax.random.key(0), batch=3)
    assert report.ok and report.per_example.ok, str(report)


def test_rms_norm_gives_unit_root_mean_square_rows():
    from jbp.layers import RMSNorm

    layer = RMSNorm(epsilon=1e-12)
    params, x, _ = point(layer, (2, 7), batch=3)
    y, _ = layer.forward(params, x)
    chex.assert_trees_all_close(jnp.mean((y / params.scale) ** 2, axis=-1), np.ones((3, 2)), rtol=1e-10)
