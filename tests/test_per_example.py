"""per_example_grads: every example's own gradient, from the hand-derived backward pass."""

import functools

import jax
import numpy as np
import pytest

import jbp
from helpers import RTOL, assert_grads_close, assert_same_dtypes, problem, to_float64

# (sizes, hidden activation, output activation, loss, one-hot targets)
NETS = [
    ((3, 5, 5, 2), "relu", "sigmoid", "mse", False),
    ((3, 5, 4), "gelu", "softmax", "cross_entropy", False),
    ((3, 5, 5, 4), "elu", "softmax", "cross_entropy", True),
    ((3, 2), "softplus", "sigmoid", "binary_cross_entropy", False),
]
_per_example = jax.jit(jbp.per_example_grads, static_argnums=0)
_grad = jax.jit(lambda net, params, x, y: net.loss_and_grad(params, x, y)[1], static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _autodiff_per_example(net, params, x, y):
    """jax.grad of the loss of each example alone (a batch of one), in float64."""
    params, x, y = to_float64((params, x, y))
    return jax.vmap(jax.grad(net.loss), in_axes=(None, 0, 0))(params, x[:, None], y[:, None])


# Every net in float64, and one in float32 (the dtype plumbing; the manual path's float32
# accuracy is test_backward_pass's job).
CASES = [(spec, np.float64) for spec in NETS] + [(NETS[2], np.float32)]


@pytest.mark.parametrize(
    "spec, dtype", CASES,
    ids=[f"{s[3]}-{s[1]}-{len(s[0]) - 1}layers{'-onehot' * s[4]}-{np.dtype(d).name}" for s, d in CASES],
)
def test_each_row_is_that_examples_gradient(spec, dtype):
    sizes, hidden, out, loss, one_hot = spec
    net = jbp.MLP(sizes, activation=hidden, output_activation=out, loss=loss)
    params, x, y = problem(net, 7, dtype, one_hot=one_hot)
    got = _per_example(net, params, x, y)
    assert_same_dtypes(got, params)
    for g, p in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        assert g.shape == (7,) + p.shape
    assert_grads_close(got, _autodiff_per_example(net, params, x, y), RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("spec", NETS, ids=lambda s: s[3] + "-onehot" * s[4])
def test_their_mean_is_the_batch_gradient(spec):
    sizes, hidden, out, loss, one_hot = spec
    net = jbp.MLP(sizes, activation=hidden, output_activation=out, loss=loss)
    params, x, y = problem(net, 7, np.float64, one_hot=one_hot)
    mean = jax.tree.map(lambda g: g.mean(axis=0), _per_example(net, params, x, y))
    assert_grads_close(mean, _grad(net, params, x, y), 1e-12)


def test_a_batch_of_one_is_loss_and_grad():
    net = jbp.MLP((3, 5, 2), loss="cross_entropy")
    params, x, y = problem(net, 1, np.float64)
    one = jax.tree.map(lambda g: g[0], _per_example(net, params, x, y))
    assert_grads_close(one, _grad(net, params, x, y), 1e-14)


def test_bad_inputs_are_clear_errors():
    net = jbp.MLP((3, 5, 2), loss="cross_entropy")
    params, x, y = problem(net, 4, np.float64)
    with pytest.raises(ValueError, match=r"x has 2 features but the network expects 3 \(sizes\[0\]\)"):
        jbp.per_example_grads(net, params, x[:, :2], y)
    with pytest.raises(TypeError, match="net must be a jbp network \\(jbp.MLP or jbp.Sequential\\), got tuple"):
        jbp.per_example_grads(net.sizes, params, x, y)
