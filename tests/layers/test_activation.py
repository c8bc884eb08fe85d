"""Activation layers: BP2 and BP4 from jbp.model.activations, keeping one residual."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import ActivationLayer, Dense, as_layer
from layer_cases import assert_backwards_match_vjp, point


def test_backward_matches_vjp():
    """Every activation, on (positions, features): softmax over the last axis only."""
    assert_backwards_match_vjp([(ActivationLayer(name), (2, 3), 4) for name in jbp.ACTIVATIONS])


@pytest.mark.parametrize("name, residual_is_output", [("relu", True), ("tanh", True), ("softmax", True), ("gelu", False)])
def test_keeps_only_what_the_derivative_reads(name, residual_is_output):
    layer = ActivationLayer(name)
    _, x, _ = point(layer, (4,))
    y, residual = layer.forward((), x)
    np.testing.assert_array_equal(residual, y if residual_is_output else x)


def test_as_layer_turns_names_into_layers_and_passes_layers_through():
    assert as_layer("relu") == ActivationLayer("relu")
    dense = Dense(3)
    assert as_layer(dense) is dense


@pytest.mark.parametrize("spec", ["softmax", ActivationLayer("softmax")])
def test_softmax_is_refused_as_a_hidden_layer(spec):
    with pytest.raises(ValueError, match=r"layers\[1\] must be a hidden layer, got .*softmax.*: softmax is only for the output layer"):
        as_layer(spec, "layers[1]")


@pytest.mark.parametrize("call, error, match", [
    (lambda: as_layer("swish", "layers[0]"), ValueError, "unknown layers\\[0\\] 'swish'; expected one of identity, sigmoid"),
    (lambda: as_layer(jnp.tanh, "layers[0]"), TypeError, "layers\\[0\\] must be a layer \\(an object with init, forward and backward"),
    (lambda: as_layer(Dense, "layers[0]"), TypeError, "got a class, Dense, not an instance"),
    (lambda: ActivationLayer("swish"), ValueError, "unknown ActivationLayer's name 'swish'"),
    (lambda: ActivationLayer("softmax").init(jax.random.key(0), (1,), jnp.float32), ValueError, "softmax needs at least 2 features"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
