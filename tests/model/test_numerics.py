"""Numerics at the extremes, and training in float64, float32 and bfloat16.

The parameters are built so that the pre-activations land where each case wants them:
saturated hidden units (|z| = 1e3 and 2e3) next to a unit whose z is exactly 0, logits
of ±1e4 and beyond, sigmoid outputs that round to exactly 0 and 1 against targets of
exactly 0 and 1. Losses and hand-derived gradients must be finite there, and equal to
``jax.grad`` of the same loss wherever that is finite.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from helpers import RTOL, problem, rel_errors

HIDDEN = [a for a in jbp.ACTIVATIONS if a != "softmax"]
X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
# Hidden layer: z = scale * (x_0, -x_1, x_0 + x_1, 0): |z| up to 2 scale, and a unit whose
# weights and bias are zero, so that its z is exactly 0 (ReLU's kink, ELU's and leaky
# ReLU's switch) for every example.
W1 = np.array([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
W2 = np.array([[1.0, -1.0, 0.5, 1.0], [-1.0, 1.0, -0.5, 0.25], [0.5, 0.5, -1.0, 1.0]])

# name: (loss, outputs, hidden scale, output scale, targets)
POINTS = {
    "hidden z = ±1e3, ±2e3 and 0": ("mse", 2, 1e3, 1.0, np.array([[0.5, -1.0], [1.0, 0.0], [0.0, 0.0]])),
    "logits ±1e4": ("cross_entropy", 3, 1.0, 1e4, np.array([0, 1, 2])),
    "p = 0 and 1 exactly, targets 0 and 1": ("binary_cross_entropy", 2, 1e3, 1e3, np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])),
}


def _point(name, hidden, dtype):
    loss, n_out, s1, s2, y = POINTS[name]
    net = jbp.MLP((2, 4, n_out), activation=hidden, loss=loss)
    params = (
        jbp.Layer(jnp.asarray(s1 * W1, dtype), jnp.zeros(4, dtype)),
        jbp.Layer(jnp.asarray(s2 * W2[:n_out], dtype), jnp.zeros(n_out, dtype)),
    )
    y = jnp.asarray(y) if loss == "cross_entropy" else jnp.asarray(y, dtype)
    return net, params, jnp.asarray(X, dtype), y


# One compilation per network and dtype: eager dispatch would compile every primitive of
# the forward, the backward and autodiff's transpose separately, which is slower.
_manual_and_autodiff = jax.jit(
    lambda net, p, x, y: (net.forward(p, x)[1], net.loss_and_grad(p, x, y), net.loss(p, x, y), jax.grad(net.loss)(p, x, y)),
    static_argnums=0,
)


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    "point, hidden",
    [("hidden z = ±1e3, ±2e3 and 0", h) for h in HIDDEN]
    + [("logits ±1e4", "tanh"), ("logits ±1e4", "relu"), ("p = 0 and 1 exactly, targets 0 and 1", "tanh")],
)
def test_extreme_points_give_finite_losses_and_the_autodiff_gradient(point, hidden, dtype):
    net, params, x, y = _point(point, hidden, dtype)
    cache, (loss, grads), autodiff_loss, want = _manual_and_autodiff(net, params, x, y)
    z1, z2, out = np.asarray(cache.zs[0]), np.asarray(cache.zs[1]), np.asarray(cache.xs[-1])
    # the construction reaches the point it is named for
    if point.startswith("hidden"):
        assert np.max(z1) == 2e3 and np.min(z1) == -1e3 and np.all(z1[:, 3] == 0)
    elif point.startswith("logits"):
        assert np.max(np.abs(z2)) >= 1e4 and np.min(out) == 0.0  # softmax underflows to 0
    else:
        assert set(np.unique(out)) == {0.0, 1.0} and set(np.unique(np.asarray(y))) == {0.0, 1.0}
    assert np.isfinite(loss) and _finite(grads)
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))  # not trivially flat
    errors = [e for e, w in zip(rel_errors(grads, want), jax.tree.leaves(want)) if np.all(np.isfinite(w))]
    assert errors and max(errors) <= RTOL[np.dtype(dtype)], f"relative errors per leaf {errors}"
    np.testing.assert_allclose(loss, autodiff_loss, rtol=RTOL[np.dtype(dtype)])


# -- fit in every floating dtype, against the seed's loop in float64.
#
# Tolerance, by dtype, from its machine epsilon eps (2^-52, 2^-23, 2^-7 for bfloat16's 8
# significant bits): a full-batch epoch is one step w <- w - lr g. Storing the new w
# rounds each entry once (relative error <= eps/2), and g, computed in the dtype with
# float32 accumulation (XLA's dots and jnp's sums of bfloat16), carries a relative error
# of a few eps/2 that lr scales down (here lr |g| < |w|): at most eps per epoch between
# them. The update map w -> w - lr g(w) is close to the identity at this small lr, so the
# errors of earlier epochs are carried, not amplified: after N epochs the parameters are
# within N eps (relative, in norm) of the exact run, and the loss, one more rounding on
# top of them, within N eps as well. Measured: 0.3-1.4 eps for every dtype below.
EPOCHS, LR = 10, 0.5
NET = jbp.MLP((3, 8, 2), activation="tanh", loss="cross_entropy")


@functools.cache
def _seed_loop():
    """Parameters that bfloat16 holds exactly (so every dtype starts at the same point),
    data, and EPOCHS steps of BP1-BP7 in float64 from them."""
    params, x, y = problem(NET, 32, np.float64)
    params, x = jax.tree.map(lambda a: a.astype(jnp.bfloat16).astype(np.float64), (params, x))
    step = jax.jit(lambda p: (NET.loss(p, x, y), jbp.gradient_descent(p, NET.loss_and_grad(p, x, y)[1], LR)))
    want, losses = params, []
    for _ in range(EPOCHS):
        value, want = step(want)
        losses.append(float(value))
    return params, x, y, want, np.asarray(losses)


def _flat(tree):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(tree)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32, jnp.bfloat16], ids=["float64", "float32", "bfloat16"])
def test_fit_in_every_dtype_follows_the_exact_seed_loop(dtype):
    params, x, y, want, losses = _seed_loop()
    cast = lambda a: a.astype(dtype)
    got, h = jbp.fit(NET, jax.tree.map(cast, params), cast(x), y, optimizer=optax.sgd(LR), epochs=EPOCHS)
    assert all(a.dtype == dtype for a in jax.tree.leaves(got)) and h.loss.dtype == dtype
    assert h.reason == "ran all epochs" and _finite(got) and _finite(h.loss)
    rtol = EPOCHS * float(jnp.finfo(dtype).eps)
    scale = np.linalg.norm(_flat(want))
    # the run moves the parameters by far more than the tolerance: a fit that lost its
    # updates to rounding could not pass
    assert np.linalg.norm(_flat(want) - _flat(params)) > 2 * rtol * scale
    assert np.linalg.norm(_flat(got) - _flat(want)) <= rtol * scale
    np.testing.assert_allclose(np.asarray(h.loss, np.float64), losses, rtol=rtol)
