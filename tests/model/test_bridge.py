"""custom_vjp_loss: jax.grad through the hand-derived backward pass."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jbp
from jbp.layers import dense
from helpers import RTOL, assert_grads_close, problem, to_float64

_manual = jax.jit(lambda net, params, x, y: net.loss_and_grad(params, x, y)[1], static_argnums=0)

# (sizes, hidden activation, output activation, loss, one-hot targets)
NETS = [
    ((3, 5, 5, 2), "tanh", "identity", "mse", False),
    ((3, 5, 4), "relu", "softmax", "cross_entropy", False),
    ((3, 5, 5, 4), "gelu", "softmax", "cross_entropy", True),
    ((3, 2), "sigmoid", "sigmoid", "binary_cross_entropy", False),
]
IDS = [f"{s[3]}-{s[1]}{'-onehot' * s[4]}" for s in NETS]


def _net(spec):
    sizes, hidden, out, loss, _ = spec
    return jbp.MLP(sizes, activation=hidden, output_activation=out, loss=loss)


@functools.partial(jax.jit, static_argnums=0)
def _autodiff(net, params, x, y):
    return jax.value_and_grad(net.loss, argnums=(0, 1))(*to_float64((params, x, y)))


# Every net in float64, and one in float32 (the dtype plumbing; the manual path's float32
# accuracy is test_backward_pass's job).
CASES = [(spec, np.float64) for spec in NETS] + [(NETS[2], np.float32)]


@pytest.mark.parametrize(
    "spec, dtype", CASES, ids=[f"{i}-{np.dtype(d).name}" for i, (_, d) in zip(IDS + IDS[2:3], CASES)]
)
def test_grad_wrt_params_and_inputs_matches_autodiff(spec, dtype):
    net = _net(spec)
    params, x, y = problem(net, 6, dtype, one_hot=spec[4])
    f = jbp.custom_vjp_loss(net)
    loss, (d_params, dx) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, x, y)
    want_loss, want = _autodiff(net, params, x, y)
    np.testing.assert_allclose(loss, want_loss, rtol=RTOL[np.dtype(dtype)])
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert_grads_close((d_params, dx), want, RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("spec", NETS[::2], ids=IDS[::2])
def test_check_grads_in_reverse_mode(spec):
    net = _net(spec)
    params, x, y = problem(net, 5, np.float64, one_hot=spec[4])
    f = jbp.custom_vjp_loss(net)
    check_grads(jax.jit(lambda p, x: f(p, x, y)), (params, x), order=1, modes=["rev"])


def test_the_backward_rule_is_jbps_backward_pass(plant):
    """Bugs planted in jbp's BP5, then BP3, show up in jax.grad's result."""
    net = jbp.MLP((3, 5, 2), activation="tanh", loss="cross_entropy")
    params, x, y = problem(net, 6, np.float64)
    grad = lambda: jax.jit(jax.grad(jbp.custom_vjp_loss(net), argnums=(0, 1)))(params, x, y)
    good, good_dx = grad()
    weight_grad, input_grad = dense.weight_grad, dense.input_grad
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12)

    plant(dense, "weight_grad", lambda delta, x_prev: 2 * weight_grad(delta, x_prev))
    bad, bad_dx = grad()
    for l in range(2):
        close(bad[l].W, 2 * good[l].W)
        close(bad[l].b, good[l].b)
    close(bad_dx, good_dx)

    plant(dense, "weight_grad", weight_grad)
    plant(dense, "input_grad", lambda delta, W: 3 * input_grad(delta, W))
    bad, bad_dx = grad()
    close(bad[1].W, good[1].W)  # the output layer's gradient needs no BP3
    close(bad[0].W, 3 * good[0].W)  # delta^(1) = BP4(BP3(delta^(2)))
    close(bad_dx, 9 * good_dx)  # and BP3 once more at the input


def test_chains_into_surrounding_code():
    """A learned linear map in front of the network: the chain rule runs through dL/dx."""
    net = jbp.MLP((3, 5, 2), activation="elu", loss="cross_entropy")
    params, _, y = problem(net, 6, np.float64)
    rng = np.random.default_rng(1)
    u, A = jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.normal(size=(3, 4)))
    f = jbp.custom_vjp_loss(net)
    got = jax.jit(jax.grad(lambda A: 2.0 * f(params, jnp.tanh(u @ A.T), y) ** 2))(A)
    want = jax.jit(jax.grad(lambda A: 2.0 * net.loss(params, jnp.tanh(u @ A.T), y) ** 2))(A)
    assert_grads_close(got, want, 1e-10)


def test_under_vmap_over_an_ensemble():
    net = jbp.MLP((3, 5, 2), activation="tanh", loss="mse")
    members = [problem(net, 6, np.float64, seed=seed)[0] for seed in range(3)]
    _, x, y = problem(net, 6, np.float64)
    ensemble = jax.tree.map(lambda *a: jnp.stack(a), *members)
    f = jbp.custom_vjp_loss(net)
    got = jax.jit(jax.vmap(jax.grad(f), in_axes=(0, None, None)))(ensemble, x, y)
    for k, member in enumerate(members):
        assert_grads_close(jax.tree.map(lambda a: a[k], got), _manual(net, member, x, y), 1e-10)


def test_under_scan_in_both_directions():
    """Gradient descent written with lax.scan and jax.grad(f) is the seed's loop; and
    jax.grad of a scan over mini-batches is the sum of their gradients."""
    net = jbp.MLP((3, 5, 2), activation="relu", loss="cross_entropy")
    params, x, y = problem(net, 8, np.float64)
    f = jbp.custom_vjp_loss(net)

    def sgd_step(p, _):
        return jbp.gradient_descent(p, jax.grad(f)(p, x, y), 0.3), None

    got = jax.jit(lambda p: jax.lax.scan(sgd_step, p, length=4)[0])(params)
    want = params
    for _ in range(4):
        want = jbp.gradient_descent(want, _manual(net, want, x, y), 0.3)
    assert_grads_close(got, want, 1e-12)

    xs, ys = x.reshape(2, 4, 3), y.reshape(2, 4)
    total = lambda p: jax.lax.scan(lambda c, b: (c + f(p, *b), None), 0.0, (xs, ys))[0]
    want = jax.tree.map(lambda a, b: a + b, *(_manual(net, params, xs[i], ys[i]) for i in range(2)))
    assert_grads_close(jax.jit(jax.grad(total))(params), want, 1e-12)


def test_forward_mode_and_targets_are_clear_errors():
    net = jbp.MLP((3, 5, 1), activation="tanh", loss="mse")
    params, x, y = problem(net, 4, np.float64)
    f = jbp.custom_vjp_loss(net)
    with pytest.raises(TypeError, match=r"can't apply forward-mode autodiff \(jvp\) to a custom_vjp function"):
        jax.jvp(lambda x: f(params, x, y), (x,), (x,))
    with pytest.raises(ValueError, match="differentiates the loss w.r.t. params and x, not the targets y"):
        jax.grad(f, argnums=2)(params, x, y)
    with pytest.raises(TypeError, match="net must be a jbp network \\(jbp.MLP or jbp.Sequential\\), got str"):
        jbp.custom_vjp_loss("mse")
    with pytest.raises(ValueError, match=r"x has 2 features but the network expects 3 \(sizes\[0\]\)"):
        f(params, x[:, :2], y)
