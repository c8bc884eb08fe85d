"""BP7 and the training step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp
from helpers import problem


def test_gradient_descent_is_bp7():
    params = (jbp.Layer(W=jnp.asarray([[1.0, 2.0]]), b=jnp.asarray([0.5])),)
    grads = (jbp.Layer(W=jnp.asarray([[0.1, -0.2]]), b=jnp.asarray([1.0])),)
    new = jbp.gradient_descent(params, grads, 0.5)
    np.testing.assert_allclose(new[0].W, [[0.95, 2.1]], rtol=1e-15)
    np.testing.assert_allclose(new[0].b, [0.0], atol=1e-15)


def test_gradient_descent_keeps_the_params_dtype():
    """A float32 learning rate (an optax schedule's, say) must not upcast bfloat16 params."""
    params = (jbp.Layer(W=jnp.asarray([[1.0, 2.0]], jnp.bfloat16), b=jnp.asarray([0.5], jnp.bfloat16)),)
    grads = (jbp.Layer(W=jnp.asarray([[0.1, -0.2]], jnp.bfloat16), b=jnp.asarray([1.0], jnp.bfloat16)),)
    new = jbp.gradient_descent(params, grads, jnp.float32(0.1))
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(new))
    want = jax.tree.map(lambda w, dw: w - jnp.bfloat16(0.1) * dw, params, grads)
    jax.tree.map(np.testing.assert_array_equal, new, want)


def test_train_step_with_optax_sgd_is_exactly_bp7():
    net = jbp.MLP((3, 4, 2), loss="cross_entropy")
    params, x, y = problem(net, 5, np.float64)
    sgd = optax.sgd(0.3)
    new, _, loss = jbp.train_step(net, sgd, params, sgd.init(params), x, y)
    want_loss, grads = net.loss_and_grad(params, x, y)
    jax.tree.map(np.testing.assert_array_equal, new, jbp.gradient_descent(params, grads, 0.3))
    np.testing.assert_array_equal(loss, want_loss)


def test_train_step_compiles_once(compiles):
    net = jbp.MLP((3, 4, 2), loss="cross_entropy")
    params, x, y = problem(net, 5, np.float64)
    opt = optax.adam(1e-2)
    step = jax.jit(jbp.train_step, static_argnums=(0, 1))
    state = opt.init(params)
    for _ in range(20):
        params, state, loss = step(net, opt, params, state, x, y)
    assert compiles["jit(train_step)"] == 1
    assert np.isfinite(loss)
