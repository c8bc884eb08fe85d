"""Dense: BP1, BP3, BP5, BP6 as a layer; the equations are the ones the MLP uses."""

import chex
import jax
import jax.numpy as jnp
import pytest

import jbp
from jbp.layers import Dense
from jbp.layers import dense as dense_module
from jbp.model import backward_pass, forward_pass
from layer_cases import assert_backwards_match_vjp, point


def test_backward_matches_vjp():
    assert_backwards_match_vjp([(Dense(1), (1,), 1), (Dense(3), (4,), 5), (Dense(2, init="he_normal"), (7,), 2)])


def test_a_sequence_applies_over_the_last_axis_and_bp5_bp6_sum_over_positions():
    layer = Dense(3)
    assert_backwards_match_vjp([(layer, (6, 4), 2)])
    params, x, dy = point(layer, (6, 4), batch=2)
    assert layer.init(jax.random.key(0), (6, 4), jnp.float32)[1] == (6, 3)
    grads, dx = layer.backward(params, layer.forward(params, x)[1], dy)
    rows_x, rows_dy = x.reshape(12, 4), dy.reshape(12, 3)
    chex.assert_trees_all_close(grads, jbp.Layer(rows_dy.T @ rows_x, rows_dy.sum(0)), rtol=1e-12)
    assert dx.shape == x.shape


def test_per_example_norms_of_a_sequence_are_each_examples_own():
    report = jbp.check_layer(Dense(3), (5, 4), key=jax.random.key(1), batch=3)
    assert report.ok and report.per_example is not None and report.per_example.ok, str(report)


def test_each_equation_has_one_definition():
    """The MLP's passes and the layer use the same functions (moved, not copied)."""
    assert forward_pass.dense is dense_module.dense
    assert backward_pass.input_grad is dense_module.input_grad
    assert backward_pass.weight_grad is dense_module.weight_grad
    assert backward_pass.bias_grad is dense_module.bias_grad


def test_init_matches_the_mlp(optimized):
    layer = Dense(5, init="he_normal")
    key = jax.random.key(3)
    (want,) = jbp.MLP((4, 5), init="he_normal").init(key, dtype=jnp.float32)
    params, shape = layer.init(jax.random.split(key, 1)[0], (4,), jnp.float32)  # the MLP's key for its layer 1
    assert shape == (5,) and isinstance(params, jbp.Layer)
    chex.assert_trees_all_close(params, want, rtol=0, atol=0)


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_is_x_WT_plus_b_and_backward_the_seed_equations(self):
        layer = Dense(3)
        params, x, dy = point(layer, (4,), batch=5)
        forward = self.variant(lambda p, x: layer.forward(p, x))
        backward = self.variant(layer.backward)
        z, residual = forward(params, x)
        chex.assert_trees_all_close(z, x @ params.W.T + params.b, rtol=1e-12)
        grads, dx = backward(params, residual, dy)
        chex.assert_trees_all_close(grads, jbp.Layer(dy.T @ x, dy.sum(0)), rtol=1e-12)
        chex.assert_trees_all_close(dx, dy @ params.W, rtol=1e-12)


def test_one_compilation_for_new_values():
    layer = Dense(3)
    step = chex.assert_max_traces(n=1)(lambda p, x, dy: layer.backward(p, layer.forward(p, x)[1], dy))
    step = jax.jit(step)
    for seed in range(3):
        params, x, dy = point(layer, (4,), batch=5, seed=seed)
        step(params, x, dy)


@pytest.mark.parametrize("call, error, match", [
    (lambda: Dense(0), ValueError, "Dense's features must be >= 1, got 0"),
    (lambda: Dense(2.5), TypeError, "Dense's features must be an int, got float 2.5"),
    (lambda: Dense(2, init="zeros"), ValueError, "unknown Dense's init 'zeros'; expected one of glorot_uniform"),
    (lambda: Dense(2).init(jax.random.key(0), (), jnp.float32), ValueError,
     r"Dense.init's input_shape must be \(n_in,\) or \(T, n_in\), the features last \(at least 1 entry, no batch axis\), got \(\)"),
    (lambda: Dense(2).init(jax.random.key(0), 4, jnp.float32), TypeError, "Dense.init's input_shape must be a tuple of ints"),
    (lambda: Dense(2).init(0, (4,), jnp.float32), TypeError, "Dense.init's key must be a PRNG key"),
    (lambda: Dense(2).init(jax.random.key(0), (4,), jnp.int32), TypeError, "Dense.init's dtype must be a floating dtype, got int32"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
