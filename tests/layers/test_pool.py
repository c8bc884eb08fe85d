"""Max and average pooling: the delta routed to each window's winner, or spread evenly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jbp.layers import AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D
from layer_cases import assert_backwards_match_vjp

# Windows side by side (the default stride), overlapping (stride < window) and spaced,
# lengths with a remainder past the last window.
CASES = [
    (MaxPool1D(2), (7, 3), 2),
    (MaxPool1D(3, stride=2), (8, 2), 2),
    (MaxPool2D(2), (5, 4, 2), 2),
    (MaxPool2D((2, 3), strides=(1, 2)), (5, 7, 1), 2),
    (AvgPool1D(3, stride=2), (8, 2), 2),
    (AvgPool1D(2, stride=3), (7, 1), 2),
    (AvgPool2D(2), (5, 5, 2), 2),
    (AvgPool2D((3, 2), strides=(2, 1)), (6, 5, 2), 1),
]


def test_backward_matches_vjp():
    assert_backwards_match_vjp(CASES)


def test_max_pool_routes_the_delta_to_the_winner_and_one_winner_takes_a_tie():
    x = jnp.asarray([[[1.0], [3.0], [2.0], [2.0], [0.0]]])  # windows [1, 3], [2, 2]; 0 is left over
    layer = MaxPool1D(2)
    y, residuals = layer.forward((), x)
    np.testing.assert_array_equal(y[0, :, 0], [3.0, 2.0])
    _, dx = layer.backward((), residuals, jnp.asarray([[[10.0], [20.0]]]))
    np.testing.assert_array_equal(dx[0, :, 0], [0.0, 10.0, 20.0, 0.0, 0.0])  # the tie: the first wins


@pytest.mark.parametrize("layer, shape", [(MaxPool1D(2), (1, 6, 2)), (MaxPool2D(2, strides=1), (2, 4, 4, 3))])
def test_max_pool_equals_autodiff_of_its_forward_where_windows_tie(layer, shape):
    """Windows of zeros (as after a ReLU) tie; the delta still goes where autodiff sends it."""
    x = np.zeros(shape)
    x[(0,) * (len(shape) - 1)] = 1.0  # one window with a clear winner, the rest all ties
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        y, residuals = layer.forward((), x)
        dy = jnp.asarray(np.random.default_rng(0).normal(size=y.shape))
        _, dx = layer.backward((), residuals, dy)
        _, vjp = jax.vjp(lambda x: layer.forward((), x)[0], x)
        np.testing.assert_allclose(dx, vjp(dy)[0], rtol=1e-12, atol=1e-12)


def test_average_pool_spreads_the_delta_and_overlaps_add_up():
    layer = AvgPool1D(2, stride=1)
    y, residuals = layer.forward((), jnp.zeros((1, 3, 1)))
    _, dx = layer.backward((), residuals, jnp.asarray([[[2.0], [4.0]]]))
    np.testing.assert_array_equal(dx[0, :, 0], [1.0, 3.0, 2.0])


@pytest.mark.parametrize("layer, input_shape, output_shape", [
    (MaxPool1D(2), (7, 3), (3, 3)),
    (AvgPool2D((2, 3), strides=1), (4, 5, 2), (3, 3, 2)),
])
def test_init_gives_the_output_shape(layer, input_shape, output_shape):
    assert layer.init(jax.random.key(0), input_shape, jnp.float32) == ((), output_shape)


@pytest.mark.parametrize("call, error, match", [
    (lambda: MaxPool2D(0), ValueError, "MaxPool2D's window must be >= 1, got 0"),
    (lambda: AvgPool1D(2, stride=2.0), TypeError, "AvgPool1D's stride must be an int, got float 2.0"),
    (lambda: MaxPool2D((2, 2), strides=(1, 1, 1)), ValueError, "MaxPool2D's strides must have 2 entries"),
    (lambda: MaxPool1D(4).init(jax.random.key(0), (3, 1), jnp.float32), ValueError,
     r"MaxPool1D's window \(4,\) is larger than the input's spatial shape \(3,\)"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
