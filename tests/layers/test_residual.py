"""Residual: y = x + block(x); the backward sums the skip and the block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jbp.layers import ActivationLayer, Conv1D, Dense, Dropout, LayerNorm, Residual
from layer_cases import assert_backwards_match_vjp, point

KEY = jax.random.key(3)


def test_backward_matches_vjp():
    assert_backwards_match_vjp([
        (Residual((Dense(4), "tanh", Dense(4))), (4,), 3),
        (Residual([Conv1D(2, 3), "relu", LayerNorm()]), (5, 2), 2),
        (Residual([Residual([Dense(3), "gelu"]), LayerNorm()]), (3,), 2),
    ])


def test_backward_matches_vjp_with_dropout_inside_while_training():
    assert_backwards_match_vjp([(Residual([Dense(6), "relu", Dropout(0.5), Dense(6)]), (6,), 3)], key=KEY, train=True)


def test_is_the_skip_plus_the_block():
    layer = Residual([Dense(3), "tanh"])
    params, x, dy = point(layer, (3,))
    y, residuals = layer.forward(params, x)
    W, b = params[0]
    np.testing.assert_allclose(y, x + np.tanh(x @ W.T + b), rtol=1e-12)
    assert layer.layers == (Dense(3), ActivationLayer("tanh")) and len(residuals) == 2


def test_init_gives_one_entry_per_inner_layer():
    params, shape = Residual([Dense(3), "relu", LayerNorm()]).init(KEY, (3,), jnp.float32)
    assert shape == (3,) and len(params) == 3 and params[1] == ()


@pytest.mark.parametrize("call, error, match", [
    (lambda: Residual([]), ValueError, "Residual's layers must hold at least one layer"),
    (lambda: Residual(Dense(3)), TypeError, "Residual's layers must be a tuple or list of layers, got Dense"),
    (lambda: Residual(["softmax"]), ValueError, r"Residual's layers\[0\] must be a hidden layer, got 'softmax'"),
    (lambda: Residual([Dense(2)]).init(KEY, (3,), jnp.float32), ValueError,
     r"Residual's block must keep the input's shape \(3,\) \(y = x \+ block\(x\)\), but its layers give \(2,\)"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
