"""check_grads: manual vs jax.grad leaf by leaf, equation by equation, row by row."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import dense
from helpers import problem
from jbp.verify.grads import FD_RTOL, STRESS, Equations, _loss_and_grad, stress_point

# ReLU's kink, tanh's saturation, softmax's logits: the stress points mean something.
NET = jbp.MLP((3, 5, 4, 2), activation=("relu", "tanh"), loss="cross_entropy")


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


def test_finite_differences_alone_catch_a_bug():
    """With the autodiff comparison made blind (huge rtol), the FD oracle still fails."""
    params, x, y = problem(NET, 7, np.float64)
    scaled_dW = Equations(weight_grad=lambda delta, x_prev: 1.01 * (delta.T @ x_prev))
    report = jbp.check_grads(NET, params, x, y, rtol=1.0, equations=scaled_dW, worst_examples=0)
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


def test_report_has_equations_worst_examples_and_serialises():
    params, x, y = problem(NET, 7, np.float32)
    report = jbp.check_grads(NET, params, x, y)
    assert [(e.layer, e.equation) for e in report.equations] == [
        (3, "output delta"), (3, "BP5"), (3, "BP6"),
        (2, "BP3"), (2, "BP4"), (2, "BP5"), (2, "BP6"),
        (1, "BP3"), (1, "BP4"), (1, "BP5"), (1, "BP6"),
    ]
    assert all(e.verdict == "ok" and e.rel_err <= e.tol for e in report.equations)
    assert report.first_failure is None
    assert len(report.worst_examples) == 5 and all(r.rel_err < 1e-5 for r in report.worst_examples)
    assert [r.rel_err for r in report.worst_examples] == sorted((r.rel_err for r in report.worst_examples), reverse=True)
    text = str(report)
    assert "BP4 delta" in text and "worst examples" in text and text.endswith("PASSED")
    assert report.to_markdown().startswith("**gradient check") and "| params[2].b |" in report.to_markdown()
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["ok"] is True and len(data["equations"]) == 11 and data["first_failure"] is None


def test_a_planted_equation_is_localised_without_patching_jbp():
    """equations= swaps one part: the hidden layers' BP4 loses f'(z)."""
    params, x, y = problem(NET, 7, np.float32)
    no_fprime = Equations(delta=lambda act, z, a, dL_dx: dL_dx)
    report = jbp.check_grads(NET, params, x, y, equations=no_fprime, worst_examples=0)
    assert report.ok is False
    assert report.failed == ("params[0].W", "params[0].b", "params[1].W", "params[1].b")
    assert [(e.layer, e.equation) for e in report.failed_equations] == [(2, "BP4"), (1, "BP4")]
    assert str(report.first_failure) == "layer 2, BP4: delta^(2) = dL/dx^(2) * f'(z^(2))"
    assert "first wrong equation: layer 2, BP4" in str(report)


def test_equations_default_to_jbp_own_backward_exactly():
    """The backward assembled from Equations() parts is jbp.backward, bit for bit."""
    params, x, y = problem(NET, 7, np.float64)
    same = Equations(bias_grad=dense.bias_grad)  # a non-default Equations: assembled
    assembled = jax.jit(_loss_and_grad, static_argnums=(0, 1))(NET, same, params, x, y)[1]
    manual = jax.jit(NET.loss_and_grad)(params, x, y)[1]
    for a, m in zip(jax.tree.leaves(assembled), jax.tree.leaves(manual)):
        np.testing.assert_array_equal(a, m)


def test_worst_examples_point_at_the_rows_where_a_bug_shows():
    """A BP4 that is wrong only where |z| > 3: only row 4, scaled up, has such units."""
    params, x, y = problem(NET, 7, np.float32)
    x = x.at[4].multiply(20.0)
    wrong_above_3 = Equations(delta=lambda act, z, a, dL_dx: dL_dx * (act.df(z, a) + (jnp.abs(z) > 3)))
    report = jbp.check_grads(NET, params, x, y, equations=wrong_above_3, worst_examples=3)
    assert report.worst_examples[0].row == 4 and report.worst_examples[0].rel_err > 0.1
    assert all(r.rel_err < 1e-5 for r in report.worst_examples[1:])


@pytest.mark.parametrize("stress", STRESS)
def test_no_false_alarm_at_stress_points(stress):
    params, x, y = problem(NET, 7, np.float32)
    report = jbp.check_grads(NET, params, x, y, stress=stress)
    assert report.ok is True and report.failed == () and report.stress == stress
    assert all(e.verdict != "WRONG" for e in report.equations)


def test_stress_points_are_adversarial():
    net = NET
    params, x, _ = problem(net, 7, np.float32)
    _, cache = jbp.forward(stress_point(net, params, x, "saturate"), x, net.activations)
    # tanh units saturated in float32: their exact tanh rounds to ±1 (XLA's own tanh may
    # round differently, by an ulp or two, with its compiler's settings)
    assert np.mean(np.abs(np.tanh(np.asarray(cache.zs[1], np.float64)).astype(np.float32)) == 1.0) > 0.2
    _, cache = jbp.forward(stress_point(net, params, x, "kinks"), x, net.activations)
    assert np.all(np.min(np.abs(np.asarray(cache.zs[0])), axis=0) < 1e-5)  # every ReLU unit at its kink
    _, cache = jbp.forward(stress_point(net, params, x, "logits"), x, net.activations)
    assert np.sqrt(np.mean(np.asarray(cache.zs[-1]) ** 2)) == pytest.approx(1e3, rel=1e-3)
    with pytest.raises(ValueError, match="unknown stress"):
        jbp.check_grads(net, params, x, jnp.zeros(7, jnp.int32), stress="huge")


def test_catches_a_planted_bug_and_names_the_leaves(plant):
    """Bias gradient averaged instead of summed in jbp's own module: the default check
    reads the real code. (Last in this file: planting clears the compilation caches.)"""
    plant(dense, "bias_grad", lambda delta: delta.mean(axis=0))
    params, x, y = problem(NET, 7, np.float64)
    report = jbp.check_grads(NET, params, x, y)
    assert report.ok is False
    assert report.failed == ("params[0].b", "params[1].b", "params[2].b")
    assert [(e.layer, e.equation) for e in report.failed_equations] == [(3, "BP6"), (2, "BP6"), (1, "BP6")]
    assert "FAILED: params[0].b, params[1].b, params[2].b; first wrong equation: layer 3, BP6" in str(report)
    with pytest.raises(jbp.GradCheckFailure, match=r"params\[0\]\.b"):
        jbp.check_grads(NET, params, x, y, raise_on_failure=True)


def test_non_finite_inputs_are_refused_and_an_overflowing_loss_fails_clearly():
    params, x, y = problem(NET, 7, np.float64)
    with pytest.raises(ValueError, match=r"params\[2\].b must be finite, but 1 of its values are NaN or inf"):
        jbp.check_grads(NET, params[:2] + (jbp.Layer(params[2].W, params[2].b.at[0].set(np.inf)),), x, y)
    net = jbp.MLP((3, 5, 2), activation="identity", loss="mse")
    params, x, y = problem(net, 7, np.float64)
    with np.errstate(invalid="ignore"):
        report = jbp.check_grads(net, params, 1e200 * x, y, finite_differences=False)  # the loss overflows
    assert report.ok is False and report.unverified == ("params[0].W", "params[1].W")  # dL/dW = inf
    assert str(report).endswith("FAILED: the loss is inf here: nothing to compare")
