"""Conv1D and Conv2D: the backward (BP3 transposed convolution, BP5 correlation, BP6
sum) against jax.vjp, over strides, paddings, odd and even kernels, remainders."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import Conv1D, Conv2D
from layer_cases import assert_backwards_match_vjp, point, shapes

# (layer, input_shape, batch): strides > 1 with SAME and VALID, odd and even kernels,
# lengths that are not a multiple of the stride, kernel as long as the input.
CASES = [
    (Conv1D(2, 3), (7, 3), 2),
    (Conv1D(3, 2, stride=2), (7, 2), 2),
    (Conv1D(2, 4, stride=3, padding="VALID"), (11, 2), 1),
    (Conv1D(2, 3, stride=2, padding="VALID"), (8, 1), 3),
    (Conv1D(1, 5, stride=2), (6, 2), 2),
    (Conv1D(2, 6, padding="VALID"), (6, 2), 2),
    (Conv2D(2, 3), (5, 6, 2), 2),
    (Conv2D(3, (2, 3), strides=(2, 1)), (7, 5, 1), 2),
    (Conv2D(2, (3, 2), strides=(3, 2), padding="VALID"), (8, 7, 2), 2),
    (Conv2D(2, 4, strides=2), (5, 5, 2), 1),
    (Conv2D(1, (1, 3), strides=(2, 3), padding="VALID"), (6, 7, 3), 2),
]


def test_backward_matches_vjp():
    assert_backwards_match_vjp(CASES)


def test_forward_is_the_seeds_dense_layer_with_shared_weights():
    """z[b, o, f] = Σ_{t, c} W[f, c, t] x̃[b, o s + t, c] + b[f], written out as loops."""
    layer = Conv1D(2, 3, stride=2, padding="VALID")
    params, x, _ = point(layer, (8, 3), batch=2)
    z, _ = layer.forward(params, x)
    W, b = params
    want = np.array([[[sum(W[f, c, t] * x[n, o * 2 + t, c] for t in range(3) for c in range(3)) + b[f]
                       for f in range(2)] for o in range(3)] for n in range(2)])
    chex.assert_trees_all_close(z, want, rtol=1e-12)


@pytest.mark.parametrize("layer, input_shape, output_shape", [
    (Conv1D(4, 3, stride=2), (7, 3), (4, 4)),
    (Conv1D(4, 3, stride=2, padding="VALID"), (7, 3), (3, 4)),
    (Conv2D(5, (3, 2), strides=(2, 3), padding="SAME"), (8, 7, 1), (4, 3, 5)),
    (Conv2D(5, 3, padding="VALID"), (8, 7, 2), (6, 5, 5)),
])
def test_init_gives_params_and_output_shape(layer, input_shape, output_shape):
    params, shape = shapes(layer, input_shape, jnp.float32)
    assert shape == output_shape
    assert isinstance(params, jbp.Layer)
    assert params.W.shape == (layer.features, input_shape[-1], *layer.kernel_size) and params.b.shape == (layer.features,)
    y = jax.eval_shape(lambda p, x: layer.forward(p, x)[0], params, jax.ShapeDtypeStruct((2, *input_shape), jnp.float32))
    assert y.shape == (2, *output_shape)


@pytest.mark.parametrize("call, error, match", [
    (lambda: Conv2D(2, 3, padding="same"), ValueError, "unknown Conv2D's padding 'same'; expected one of SAME, VALID"),
    (lambda: Conv2D(2, (3, 3, 3)), ValueError, r"Conv2D's kernel_size must have 2 entries, one per spatial axis, got \(3, 3, 3\)"),
    (lambda: Conv1D(2, 3, stride=0), ValueError, "Conv1D's stride must be >= 1, got 0"),
    (lambda: Conv2D(0, 3), ValueError, "Conv2D's features must be >= 1, got 0"),
    (lambda: Conv2D(2, 3).init(jax.random.key(0), (8, 8), jnp.float32), ValueError,
     r"Conv2D.init's input_shape must be \(height, width, channels\) \(3 entries, no batch axis\), got \(8, 8\)"),
    (lambda: Conv1D(2, 5, padding="VALID").init(jax.random.key(0), (4, 1), jnp.float32), ValueError,
     r"Conv1D's kernel_size \(5,\) is larger than the input's spatial shape \(4,\) with padding='VALID'"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
