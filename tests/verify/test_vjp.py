"""check_vjp: any user's backward against jax.vjp; exact leaves named, no false alarms."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.model.backward_pass import input_grad
from jbp.verify.oracles import FD_RTOL

KEY = jax.random.key(0)


def forward(params, x):
    """A user's dense tanh layer; W square so that a transposed W is shape-correct."""
    z = x @ params["w"].T + params["b"]
    y = jnp.tanh(z)
    return y, (x, z, y)


def backward(params, cache, dy):
    x, z, y = cache
    delta = dy * (1 - y * y)
    return {"w": delta.T @ x, "b": delta.sum(0)}, delta @ params["w"]


# The classic mistakes, each with exactly the leaves it makes wrong.
def missing_activation_derivative(params, cache, dy):
    x, z, y = cache
    return {"w": dy.T @ x, "b": dy.sum(0)}, dy @ params["w"]


def bias_averaged(params, cache, dy):
    x, z, y = cache
    delta = dy * (1 - y * y)
    return {"w": delta.T @ x, "b": delta.mean(0)}, delta @ params["w"]


def sign_flip_in_dx(params, cache, dy):
    x, z, y = cache
    delta = dy * (1 - y * y)
    return {"w": delta.T @ x, "b": delta.sum(0)}, -(delta @ params["w"])


def dW_from_the_wrong_input(params, cache, dy):
    x, z, y = cache
    delta = dy * (1 - y * y)
    return {"w": delta.T @ y, "b": delta.sum(0)}, delta @ params["w"]  # the output, not the input


def transposed_W(params, cache, dy):
    x, z, y = cache
    delta = dy * (1 - y * y)
    return {"w": delta.T @ x, "b": delta.sum(0)}, delta @ params["w"].T


MISTAKES = [
    (missing_activation_derivative, ("['b']", "['w']", "x")),
    (bias_averaged, ("['b']",)),
    (sign_flip_in_dx, ("x",)),
    (dW_from_the_wrong_input, ("['w']",)),
    (transposed_W, ("x",)),
]


def point(dtype, n=5, batch=7, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(n, n)) / np.sqrt(n), "b": 0.1 * rng.normal(size=n)}
    x = rng.normal(size=(batch, n))
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), params), jnp.asarray(x, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_a_correct_backward_passes_with_a_readable_report(dtype):
    params, x = point(dtype)
    report = jbp.check_vjp(forward, backward, params, x, key=KEY)
    assert report.ok is True and report.failed == () and report.imprecise == () and report.unverified == ()
    assert [leaf.name for leaf in report.leaves] == ["['b']", "['w']", "x"]
    for leaf in report.leaves:
        assert leaf.rel_err <= leaf.tol and leaf.rel_err_f64 < 1e-13 and leaf.fd_rel_err < FD_RTOL
        assert leaf.cosine == pytest.approx(1, abs=1e-6) and leaf.norm_ratio == pytest.approx(1, abs=1e-5)
    # the derived tolerance follows the dtype: float32's unit roundoff is 2^29 times float64's
    assert max(leaf.tol for leaf in report.leaves) < (1e-4 if dtype == np.float32 else 1e-12)
    text = str(report)
    assert text.splitlines()[1].split()[:4] == ["leaf", "shape", "max", "abs"] and text.endswith("PASSED")
    assert report.to_markdown().count("\n| ") == 4  # header and three leaves
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["ok"] is True and [leaf["name"] for leaf in data["leaves"]] == ["['b']", "['w']", "x"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mistake, wrong", MISTAKES, ids=[m.__name__ for m, _ in MISTAKES])
def test_each_classic_mistake_is_caught_and_exactly_its_leaves_named(mistake, wrong, dtype):
    params, x = point(dtype)
    report = jbp.check_vjp(forward, mistake, params, x, key=KEY)
    assert report.ok is False
    assert report.failed == wrong
    for leaf in report.leaves:
        if leaf.name in wrong:
            assert "confirmed" in leaf.evidence and "Taylor remainder order" in leaf.evidence
        else:
            assert leaf.verdict == "ok", leaf.evidence
    assert str(report).endswith("FAILED: " + ", ".join(wrong))


def test_the_second_oracle_sees_order_one_for_a_wrong_gradient():
    params, x = point(np.float32)
    (leaf,) = [l for l in jbp.check_vjp(forward, sign_flip_in_dx, params, x, key=KEY).leaves if l.name == "x"]
    backward_order = float(leaf.evidence.split("Taylor remainder order ")[1].split()[0])
    autodiff_order = float(leaf.evidence.split("for the backward, ")[1].split()[0])
    assert abs(backward_order - 1) < 0.2 and abs(autodiff_order - 2) < 0.2


def test_raise_on_failure_raises_with_the_table():
    params, x = point(np.float32)
    with pytest.raises(jbp.GradCheckFailure, match=r"FAILED: \['b'\]"):
        jbp.check_vjp(forward, bias_averaged, params, x, key=KEY, raise_on_failure=True)


def test_a_wrongly_shaped_gradient_is_named_not_crashed_on():
    params, x = point(np.float32, n=5)
    params = {"w": params["w"][:3], "b": params["b"][:3]}  # W is (3, 5): x.T @ delta has the wrong shape

    def transposed_dW(params, cache, dy):
        (dparams, dx) = backward(params, cache, dy)
        return {"w": dparams["w"].T, "b": dparams["b"]}, dx

    report = jbp.check_vjp(forward, transposed_dW, params, x, key=KEY)
    assert report.failed == ("['w']",)
    assert "gradient has shape (5, 3) but the leaf has shape (3, 5)" in report.leaves[1].evidence


def test_a_gradient_tree_of_the_wrong_structure_is_an_error():
    params, x = point(np.float32)
    with pytest.raises(ValueError, match="structure"):
        jbp.check_vjp(forward, lambda p, c, dy: ({"w": p["w"]}, dy), params, x, key=KEY)
    with pytest.raises(TypeError, match="pair"):
        jbp.check_vjp(forward, lambda p, c, dy: p, params, x, key=KEY)
    with pytest.raises(TypeError, match="floating"):
        jbp.check_vjp(forward, backward, params, jnp.ones((7, 5), jnp.int32), key=KEY)
    with pytest.raises(ValueError, match="dy must have the structure and shapes"):
        jbp.check_vjp(forward, backward, params, x, key=KEY, dy=jnp.ones((7, 4)))


@jax.custom_vjp
def _tanh_with_a_wrong_rule(z):
    return jnp.tanh(z)


_tanh_with_a_wrong_rule.defvjp(lambda z: (jnp.tanh(z), jnp.tanh(z)), lambda y, g: (2 * g * (1 - y * y),))


def forward_with_a_wrong_autodiff_rule(params, x):
    z = x @ params["w"].T + params["b"]
    y = _tanh_with_a_wrong_rule(z)
    return y, (x, z, y)


def test_a_correct_backward_is_not_blamed_when_autodiff_is_wrong():
    """The forward's own VJP rule is off by 2x: finite differences side with the backward."""
    params, x = point(np.float32)
    report = jbp.check_vjp(forward_with_a_wrong_autodiff_rule, backward, params, x, key=KEY)
    assert report.ok is True and report.failed == ()
    assert report.unverified == ("['b']", "['w']", "x")
    assert all("side with the backward" in leaf.evidence for leaf in report.leaves)


def test_a_backward_that_copies_a_wrong_autodiff_rule_is_caught_by_finite_differences():
    """Backward and jax.vjp agree (both 2x off): only the independent oracle can see it."""

    def backward_2x(params, cache, dy):
        dparams, dx = backward(params, cache, 2 * dy)
        return dparams, dx

    params, x = point(np.float32)
    report = jbp.check_vjp(forward_with_a_wrong_autodiff_rule, backward_2x, params, x, key=KEY)
    assert report.failed == ("['b']", "['w']", "x")
    assert all("random direction" in leaf.evidence for leaf in report.leaves)


def relu_forward(params, x):
    z = x @ params["w"].T + params["b"]
    return jnp.maximum(z, 0), (x, z)


def relu_backward_with_derivative_one_at_zero(params, cache, dy):
    x, z = cache
    delta = dy * (z >= 0)  # a valid subgradient at z = 0, where jax.vjp takes 0
    return {"w": delta.T @ x, "b": delta.sum(0)}, delta @ params["w"]


def test_a_kink_is_not_called_a_bug():
    """At z exactly 0 (a zero input row, zero biases) the backward's subgradient differs
    from autodiff's; finite differences see the kink (Taylor order 1 on one side)."""
    params, x = point(np.float32)
    params = {"w": params["w"], "b": jnp.zeros_like(params["b"])}
    x = x.at[2].set(0.0)
    report = jbp.check_vjp(relu_forward, relu_backward_with_derivative_one_at_zero, params, x, key=KEY)
    assert report.ok is True
    assert "['b']" in report.unverified and "not smooth" in report.leaves[0].evidence


def softplus_forward(params, x):
    z = x @ params["w"].T
    return jnp.logaddexp(z, 0), (x, z)


def softplus_backward_naive(params, cache, dy):
    x, z = cache
    delta = dy * jnp.exp(z) / (1 + jnp.exp(z))  # right, but exp overflows float32 for z > 88
    return {"w": delta.T @ x}, delta @ params["w"]


def test_an_unstable_formula_is_flagged_imprecise_at_a_stress_point_not_failed():
    params, x = point(np.float32)
    params = {"w": params["w"]}
    calm = jbp.check_vjp(softplus_forward, softplus_backward_naive, params, x, key=KEY)
    assert calm.ok is True and calm.imprecise == ()
    stressed = jbp.check_vjp(softplus_forward, softplus_backward_naive, {"w": 100 * params["w"]}, x, key=KEY)
    assert stressed.ok is True and stressed.failed == ()
    assert stressed.imprecise == ("['w']", "x")
    assert all("float64 re-run matches" in leaf.evidence for leaf in stressed.leaves)


# --- No false alarm: thousands of random correct float32 cases. --------------------------


def mlp(activations):
    """jbp's own layers, as a user's forward/backward pair over the network's output."""
    activations = tuple(activations)

    def forward(params, x):
        return jbp.forward(params, x, activations)

    def backward(params, cache, dy):
        delta_out = jbp.ACTIVATIONS[activations[-1]].delta(cache.zs[-1], cache.xs[-1], dy)
        deltas = jbp.deltas(params, cache, delta_out, activations)
        return jbp.backward(params, cache, delta_out, activations), input_grad(deltas[0], params[0].W)

    return forward, backward


def layer_norm_forward(p, x):
    xc = x - x.mean(-1, keepdims=True)
    inv = 1 / jnp.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-3)
    xhat = xc * inv
    return xhat * p["g"] + p["b"], (xhat, inv)


def layer_norm_backward(p, cache, dy):
    xhat, inv = cache
    dxhat = dy * p["g"]
    dx = inv * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return {"g": (dy * xhat).sum(0), "b": dy.sum(0)}, dx


# (sizes, activations, batch): one compilation each, CASES random points each; every
# activation appears.
ARCHITECTURES = [
    ((3, 8, 6, 5, 4), ("tanh", "relu", "leaky_relu", "softmax"), 16),
    ((6, 4, 5, 4, 3, 2), ("sigmoid", "gelu", "elu", "softplus", "identity"), 3),
]
CASES = 700


def random_points(sizes, batch, rng):
    """CASES float32 points: Glorot weights times a random scale in [e^-1, e^1.5] per layer
    (up to saturation), biases and inputs of random scale, dy ~ N(0, 1)."""
    n = CASES
    params = tuple(
        jbp.Layer(
            W=rng.normal(size=(n, o, i)) * np.sqrt(2 / (i + o)) * np.exp(rng.uniform(-1, 1.5, (n, 1, 1))),
            b=0.5 * rng.normal(size=(n, o)) * np.exp(rng.uniform(-1, 1, (n, 1))),
        )
        for i, o in zip(sizes[:-1], sizes[1:])
    )
    x = rng.normal(size=(n, batch, sizes[0])) * np.exp(rng.uniform(-1, 1, (n, 1, 1)))
    return jax.tree.map(lambda a: np.asarray(a, np.float32), (params, x))


def test_thousands_of_random_correct_float32_cases_raise_no_false_alarm():
    rng = np.random.default_rng(2024)
    groups = []
    for sizes, activations, batch in ARCHITECTURES:
        params, x = random_points(sizes, batch, rng)
        groups.append((activations, jbp.check_vjp_many(*mlp(activations), params, x, key=jax.random.key(len(groups)))))
    g, b = (np.asarray(rng.normal(size=(CASES, 6)), np.float32) for _ in range(2))
    x = np.asarray(rng.normal(size=(CASES, 8, 6)) * np.exp(rng.uniform(-2, 2, (CASES, 1, 1))), np.float32)
    groups.append((("layer norm",), jbp.check_vjp_many(layer_norm_forward, layer_norm_backward, {"g": g, "b": b}, x, key=KEY)))
    reports = [r for _, group in groups for r in group]
    assert len(reports) == 3 * CASES
    alarms = [(i, r.failed, [l.evidence for l in r.leaves if not l.ok]) for i, r in enumerate(reports) if not r.ok]
    assert alarms == []
    assert [r.unverified for r in reports if r.unverified] == []
    # 'imprecise' is no alarm, and only a saturated softmax may earn it: its Jacobian
    # product (even shifted and re-centred, as jbp's softmax does) can round worse than
    # autodiff's form there. Everything else rounds within 16x of autodiff.
    for activations, group in groups:
        if "softmax" not in activations:
            assert [r.imprecise for r in group if r.imprecise] == [], activations


def test_many_points_find_the_one_where_a_relu_kink_bug_shows():
    """A backward wrong only on its negative side shows wherever some z < 0."""

    def wrong_below_zero(params, cache, dy):
        x, z = cache
        delta = dy * jnp.where(z > 0, 1.0, 0.5)
        return {"w": delta.T @ x, "b": delta.sum(0)}, delta @ params["w"]

    rng = np.random.default_rng(1)
    w = np.asarray(rng.normal(size=(4, 3, 2)), np.float32)
    b = np.asarray([[5.0, 5.0, 5.0]] * 3 + [[-5.0, 0.0, 5.0]], np.float32)  # only point 3 has z < 0
    x = np.asarray(rng.normal(size=(4, 6, 2)) * 0.1, np.float32)
    reports = jbp.check_vjp_many(relu_forward, wrong_below_zero, {"w": w, "b": b}, x, key=KEY)
    assert [r.ok for r in reports] == [True, True, True, False]
    assert reports[3].failed == ("['b']", "['w']", "x")
