"""MLP: a frozen, hashable description; its methods; configuration errors."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from helpers import problem


def test_contract_example_runs():
    net = jbp.MLP(sizes=(2, 8, 1), activation="tanh", output_activation="sigmoid", loss="mse")
    params = net.init(jax.random.key(0), dtype=jnp.float32)
    x = jnp.ones((4, 2), jnp.float32)
    y = jnp.zeros((4, 1), jnp.float32)
    assert net.predict(params, x).shape == (4, 1)
    loss = net.loss(params, x, y)
    assert loss.shape == () and loss.dtype == jnp.float32
    loss2, grads = net.loss_and_grad(params, x, y)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_init_shapes_follow_the_seed_w_ji():
    net = jbp.MLP((3, 5, 2))
    params = net.init(jax.random.key(0), dtype=jnp.float32)
    assert [(l.W.shape, l.b.shape) for l in params] == [((5, 3), (5,)), ((2, 5), (2,))]
    assert all(l.W.dtype == jnp.float32 for l in params)
    assert all(np.all(l.b == 0) for l in params)


def test_init_dtype_follows_x64():
    with jax.enable_x64(False):
        assert jbp.MLP((2, 3)).init(jax.random.key(0))[0].W.dtype == jnp.float32
    with jax.enable_x64(True):
        assert jbp.MLP((2, 3)).init(jax.random.key(0))[0].W.dtype == jnp.float64


def test_init_is_deterministic_in_the_key():
    net = jbp.MLP((4, 6, 3))
    a, b = net.init(jax.random.key(3)), net.init(jax.random.key(3))
    c = net.init(jax.random.key(4))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a[0].W, c[0].W)


def test_is_frozen_hashable_and_static_under_jit():
    net = jbp.MLP((2, 3, 1), activation="relu")
    assert hash(net) == hash(jbp.MLP((2, 3, 1), activation="relu"))
    assert net == jbp.MLP([2, 3, 1], activation=("relu",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.sizes = (1, 1)
    f = jax.jit(lambda n, p, x: n.predict(p, x), static_argnums=0)
    params = net.init(jax.random.key(0))
    assert f(net, params, jnp.ones((2, 2))).shape == (2, 1)


def test_loss_name_and_method_share_the_name():
    net = jbp.MLP((2, 2), loss="cross_entropy")
    assert net.loss_name == "cross_entropy" and net.output_activation == "softmax"
    assert callable(net.loss) and callable(net.init)
    assert jbp.MLP((2, 1), loss="binary_cross_entropy").output_activation == "sigmoid"
    assert jbp.MLP((2, 1)).output_activation == "identity"


def test_activations_one_per_layer():
    net = jbp.MLP((2, 3, 4, 1), activation=("relu", "elu"), output_activation="sigmoid")
    assert net.activations == ("relu", "elu", "sigmoid")


def test_predict_is_forward_output():
    net = jbp.MLP((3, 4, 2), loss="cross_entropy")
    params, x, _ = problem(net, 5, np.float64)
    out, cache = net.forward(params, x)
    np.testing.assert_allclose(net.predict(params, x), out)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(cache.xs[-1], out)  # the cache's last x is the output


def test_accuracy():
    net = jbp.MLP((2, 2), activation="tanh", loss="cross_entropy")
    params = (jbp.Layer(W=jnp.eye(2), b=jnp.zeros(2)),)
    x = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    assert float(net.accuracy(params, x, jnp.asarray([0, 1, 1]))) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="accuracy needs a classification loss"):
        jbp.MLP((2, 1)).accuracy(jbp.MLP((2, 1)).init(jax.random.key(0)), x, jnp.zeros((3, 1)))


def test_init_draws_the_seeds_weights_bit_for_bit(optimized):
    """The reference is the seed's draw written out: layer l's W from the l-th of
    ``split(key, L)`` by the init scheme, b zero (the figures measured with it hold)."""
    from jbp.model.initializers import init_weight

    sizes = (5, 7, 4, 3)
    for init, dtype in itertools.product(["glorot_uniform", "he_normal", "lecun_normal"], [np.float32, np.float64]):
        with jax.enable_x64(dtype == np.float64):
            params = jbp.MLP(sizes, init=init).init(jax.random.key(11), dtype)
            keys = jax.random.split(jax.random.key(11), len(sizes) - 1)
            for layer, k, n_in, n_out in zip(params, keys, sizes[:-1], sizes[1:]):
                np.testing.assert_array_equal(layer.W, init_weight(init, k, n_in, n_out, dtype), err_msg=f"{init} {dtype}")
                np.testing.assert_array_equal(layer.b, np.zeros(n_out, dtype))
                assert layer.W.dtype == dtype
