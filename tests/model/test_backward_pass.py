"""The hand-derived backward pass (BP3-BP6) against jax.grad, across the whole table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jbp
from jbp.model.forward_pass import dense
from helpers import RTOL, assert_grads_close, assert_same_dtypes, autodiff_grads, problem

HIDDEN = [a for a in jbp.ACTIVATIONS if a != "softmax"]
# (loss, output activation, one-hot targets): every loss head jbp supports.
HEADS = [
    ("mse", "identity", False),
    ("mse", "sigmoid", False),
    ("mse", "tanh", False),
    ("mse", "softmax", False),
    ("cross_entropy", "softmax", False),
    ("cross_entropy", "softmax", True),
    ("binary_cross_entropy", "sigmoid", False),
]
# Depth d: 3 inputs, d - 1 hidden layers of 5, 2 outputs. One hidden width keeps the
# number of distinct shapes, hence of eager-mode compilations, small; random widths are
# the property test's job.
DTYPES = [np.float64, np.float32]


def _net(hidden, head, depth):
    loss, out, _ = head
    return jbp.MLP((3,) + (5,) * (depth - 1) + (2,), activation=hidden, output_activation=out, loss=loss)


def _check(net, batch, dtype, one_hot=False, seed=0):
    params, x, y = problem(net, batch, dtype, seed=seed, one_hot=one_hot)
    _, manual = jax.jit(net.loss_and_grad)(params, x, y)  # eager: test_jit_and_eager_agree
    assert_same_dtypes(manual, params)
    assert_grads_close(manual, autodiff_grads(net, params, x, y), RTOL[np.dtype(dtype)])


# Every hidden activation and every head once, at every depth from one layer to four,
# with batches of 1 and 7: each row exercises a different activation, head, depth and
# batch, so that a bug in any one of them fails a row. (The activations' own
# derivatives are checked pointwise in test_activations.py; the loop is the same one.)
CASES = [(HIDDEN[i], HEADS[i % len(HEADS)], 1 + i % 4, (1, 7)[i % 2]) for i in range(len(HIDDEN))]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "hidden, head, depth, batch",
    CASES,
    ids=[f"{c[0]}-{c[1][0]}-{c[1][1]}{'-onehot' * c[1][2]}-depth{c[2]}-batch{c[3]}" for c in CASES],
)
def test_matches_autodiff(hidden, head, depth, batch, dtype):
    _check(_net(hidden, head, depth), batch, dtype, one_hot=head[2])


@pytest.mark.parametrize("output", [a for a in jbp.ACTIVATIONS])
def test_every_output_activation_with_mse(output):
    net = jbp.MLP((3, 4, 2), activation="tanh", output_activation=output, loss="mse")
    _check(net, 5, np.float64)


def test_one_activation_per_hidden_layer():
    net = jbp.MLP((3, 4, 5, 4, 6, 3), activation=("relu", "gelu", "elu", "softplus"), loss="cross_entropy")
    assert net.hidden_activations == ("relu", "gelu", "elu", "softplus")
    _check(net, 9, np.float64)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=2, max_size=5),
    hidden=st.sampled_from(HIDDEN),
    head=st.sampled_from(HEADS),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_random_architectures_match_autodiff(sizes, hidden, head, batch, seed):
    if head[1] == "softmax" and sizes[-1] < 2:
        sizes[-1] = 2
    net = jbp.MLP(sizes, activation=hidden, output_activation=head[1], loss=head[0])
    _check(net, batch, np.float64, one_hot=head[2], seed=seed)


def test_grads_keep_structure_shapes_and_dtypes():
    net = jbp.MLP((4, 3, 2), loss="cross_entropy")
    for dtype in DTYPES:
        params, x, y = problem(net, 5, dtype)
        _, grads = jax.jit(net.loss_and_grad)(params, x, y)
        assert jax.tree.structure(grads) == jax.tree.structure(params)
        for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
            assert (g.shape, g.dtype) == (p.shape, p.dtype)


def test_deltas_are_dL_dz_of_every_layer():
    """deltas() returns dL/dz^(l): compare with jax.grad w.r.t. an offset added to each z."""
    net = jbp.MLP((3, 5, 4, 2), activation="gelu", loss="cross_entropy")
    params, x, y = problem(net, 6, np.float64)

    @jax.jit
    def manual_deltas(params, x, y):
        _, cache = jbp.forward(params, x, net.activations)
        return jbp.deltas(params, cache, net.output_delta(cache, y), net.activations), cache.zs

    manual, zs = manual_deltas(params, x, y)

    def loss_with_offsets(offsets):
        h = x
        for layer, name, offset in zip(params, net.activations, offsets):
            z = dense(layer, h) + offset
            h = jbp.ACTIVATIONS[name].f(z)
        loss = jbp.LOSSES[net.loss_name]
        return loss.value(z, h, y)

    offsets = tuple(jnp.zeros_like(z) for z in zs)
    assert_grads_close(manual, jax.jit(jax.grad(loss_with_offsets))(offsets), 1e-10)


def test_backward_is_the_per_example_sum():
    """BP5/BP6 sum per-example products: the batch gradient is the mean of per-example ones."""
    net = jbp.MLP((3, 4, 2), activation="sigmoid", loss="mse")
    params, x, y = problem(net, 5, np.float64)
    loss_and_grad = jax.jit(net.loss_and_grad)
    _, full = loss_and_grad(params, x, y)
    singles = [loss_and_grad(params, x[i : i + 1], y[i : i + 1])[1] for i in range(5)]
    mean = jax.tree.map(lambda *g: sum(g) / len(g), *singles)
    assert_grads_close(full, mean, 1e-12)


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_jit_and_eager_agree(transform):
    net = jbp.MLP((3, 6, 4), activation="relu", loss="cross_entropy")
    params, x, y = problem(net, 8, np.float64)
    eager = net.loss_and_grad(params, x, y)
    got = transform(net.loss_and_grad)(params, x, y)
    assert_grads_close(got, eager, 1e-13)
