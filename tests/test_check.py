"""check_grads: manual vs jax.grad, with finite differences as a second oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
import jbp.backward_pass as backward_pass
from helpers import problem
from jbp.check import FD_RTOL

NET = jbp.MLP((3, 5, 4, 2), activation="tanh", loss="cross_entropy")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_passes_on_the_correct_backward(dtype):
    params, x, y = problem(NET, 7, dtype)
    report = jbp.check_grads(NET, params, x, y)
    assert report.ok is True and report.failed == ()
    assert report.dtype == np.dtype(dtype).name
    assert [c.name for c in report.leaves] == [f"params[{l}].{w}" for l in range(3) for w in "Wb"]
    assert all(c.fd_rel_err < 1e-6 for c in report.leaves)
    text = str(report)
    assert "params[2].b" in text and text.endswith("PASSED")


def test_catches_a_planted_bug_and_names_the_leaves(plant):
    """Bias gradient averaged instead of summed over the batch (a classic mistake)."""
    plant(backward_pass, "bias_grad", lambda delta: delta.mean(axis=0))
    params, x, y = problem(NET, 7, np.float64)
    report = jbp.check_grads(NET, params, x, y)
    assert report.ok is False
    assert report.failed == ("params[0].b", "params[1].b", "params[2].b")
    assert "FAILED: params[0].b, params[1].b, params[2].b" in str(report)
    with pytest.raises(jbp.GradCheckFailure, match=r"params\[0\]\.b"):
        jbp.check_grads(NET, params, x, y, raise_on_failure=True)


def test_finite_differences_alone_catch_a_bug(plant):
    """With the autodiff comparison made blind (huge rtol), the FD oracle still fails."""
    plant(backward_pass, "weight_grad", lambda delta, x_prev: 1.01 * (delta.T @ x_prev))
    params, x, y = problem(NET, 7, np.float64)
    report = jbp.check_grads(NET, params, x, y, rtol=1.0)
    assert set(report.failed) == {"params[0].W", "params[1].W", "params[2].W"}
    assert all(c.fd_rel_err > FD_RTOL for c in report.leaves if c.name.endswith("W"))


def test_every_gradient_entry_matches_central_differences():
    """An oracle independent of JAX autodiff and of check_grads: one FD per parameter."""
    net = jbp.MLP((2, 3, 2), activation="softplus", loss="cross_entropy")
    params, x, y = problem(net, 5, np.float64)
    _, grads = net.loss_and_grad(params, x, y)
    leaves, treedef = jax.tree.flatten(params)
    h = 1e-6
    for i, (leaf, g) in enumerate(zip(leaves, jax.tree.leaves(grads))):
        for idx in np.ndindex(leaf.shape):
            bump = lambda s: jax.tree.unflatten(treedef, [a.at[idx].add(s) if j == i else a for j, a in enumerate(leaves)])
            fd = (net.loss(bump(h), x, y) - net.loss(bump(-h), x, y)) / (2 * h)
            np.testing.assert_allclose(g[idx], fd, rtol=1e-6, atol=1e-9)


def test_non_finite_inputs_are_refused_and_an_overflowing_loss_fails_clearly():
    params, x, y = problem(NET, 7, np.float64)
    with pytest.raises(ValueError, match=r"params\[2\].b must be finite, but 1 of its values are NaN or inf"):
        jbp.check_grads(NET, params[:2] + (jbp.Layer(params[2].W, params[2].b.at[0].set(np.inf)),), x, y)
    net = jbp.MLP((3, 5, 2), activation="identity", loss="mse")
    params, x, y = problem(net, 7, np.float64)
    report = jbp.check_grads(net, params, 1e200 * x, y, finite_differences=False)  # the loss overflows
    assert report.ok is False and report.failed == ("params[0].W", "params[1].W")  # dL/dW = inf
    assert str(report).endswith("(the loss is inf here: nothing to compare)")
