"""BP7 and the training step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from helpers import problem
from jbp.training import update


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
    with jax.disable_jit():  # op by op, as train_step runs here: the same roundings, the same bits
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


def _copy(tree):
    return jax.tree.map(jnp.array, tree)


def test_make_train_step_is_train_step_compiled_once(compiles):
    net = jbp.MLP((3, 4, 2), loss="cross_entropy")
    params, x, y = problem(net, 5, np.float64)
    opt = optax.adam(1e-2)
    step = jbp.make_train_step(net, opt)
    got, got_losses = (_copy(params), opt.init(params)), []
    for _ in range(5):
        *got, loss = step(*got, x, y)
        got_losses.append(loss)
    assert compiles["jit(train_step)"] == 1
    want = (params, opt.init(params))
    for got_loss in got_losses:
        *want, want_loss = jbp.train_step(net, opt, *want, x, y)
        np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, want)


@pytest.mark.parametrize("sizes, donate, params_donated", [
    ((3, 4, 2), True, True),
    ((3, 4, 2), False, False),
    ((3, 4, 2), None, True),  # 2 x 4 weights to copy: cheaper than allocating the outputs
    ((3, 4, 2048), None, False),  # 64 KiB of W^(1) to copy
])
def test_make_train_step_donates_only_when_asked(sizes, donate, params_donated):
    net = jbp.MLP(sizes, loss="cross_entropy")
    params, x, y = problem(net, 5, np.float64)
    opt = optax.adam(0.1)
    params = _copy(params)
    opt_state = opt.init(_copy(params))
    new, _, _ = jbp.make_train_step(net, opt, donate=donate)(params, opt_state, x, y)
    assert all(a.is_deleted() == params_donated for a in jax.tree.leaves(params))
    assert all(a.is_deleted() == (donate is not False) for a in jax.tree.leaves(opt_state))
    assert not any(a.is_deleted() for a in jax.tree.leaves(new))


def test_in_place_pays_for_small_copies_and_large_arrays():
    assert update.in_place_pays(jbp.MLP((64, 128, 10)))  # 10 x 128 weights to copy
    assert not update.in_place_pays(jbp.MLP((784, 512, 512, 10)))  # 512 x 512 and 10 x 512
    assert update.in_place_pays(jbp.MLP((4096, 2048, 10)))  # W^(0): 8M entries, 32 MiB in float32


def test_make_train_step_checks_its_arguments():
    net = jbp.MLP((3, 4, 2))
    with pytest.raises(TypeError, match="net must be a jbp network \\(jbp.MLP or jbp.Sequential\\), got tuple"):
        jbp.make_train_step((3, 4, 2), optax.sgd(0.1))
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        jbp.make_train_step(net, 0.1)


def test_make_train_step_carries_a_state_and_refuses_it_for_a_network_without_one():
    from jbp.layers import GRU, Embedding, FusedLMHead

    net = jbp.Sequential((5,), [Embedding(7, 3), GRU(4), FusedLMHead(7)], loss="cross_entropy")
    params = net.init(jax.random.key(0), jnp.float32)
    opt = optax.sgd(0.1)
    x = jax.random.randint(jax.random.key(1), (2, 5), 0, 7)
    step = jbp.make_train_step(net, opt, donate=False)
    state = net.init_state(2, jnp.float32)
    new, _, loss, next_state = step(params, opt.init(params), x, x, state=state)
    (want_loss, want_state), grads = net.loss_and_grad(params, x, x, state=state)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(next_state[1], want_state[1], rtol=1e-5, atol=1e-7)
    jax.tree.map(lambda n, p, g: np.testing.assert_allclose(n, p - 0.1 * g, rtol=1e-5, atol=1e-7), new, params, grads)
    mlp = jbp.MLP((3, 4, 2), loss="cross_entropy")
    p, xm, ym = problem(mlp, 4, np.float32)
    with pytest.raises(ValueError, match="state needs a network with a stateful layer"):
        jbp.train_step(mlp, opt, p, opt.init(p), xm, ym, state=(None,))
