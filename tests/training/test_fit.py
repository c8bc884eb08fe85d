"""fit: the seed's iterative loop, compiled."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp.training.fit import DIVERGED, RAN_ALL_EPOCHS, REACHED_TOL
from helpers import ORDER_NET, XOR_X, XOR_Y, order_encoding_step, problem

XOR = jbp.MLP(sizes=(2, 8, 1), activation="tanh", output_activation="sigmoid", loss="mse")


def test_solves_xor_with_plain_sgd():
    params = XOR.init(jax.random.key(0), dtype=jnp.float32)
    params, history = jbp.fit(
        XOR, params, XOR_X, XOR_Y, optimizer=optax.sgd(0.5), epochs=5000, batch_size=4,
        key=jax.random.key(1), tol=1e-3,
    )
    assert history.reason == "reached tol"
    np.testing.assert_array_equal(np.round(XOR.predict(params, XOR_X)), XOR_Y)
    assert float(XOR.loss(params, XOR_X, XOR_Y)) < 1e-3


def test_tol_stops_early_and_history_says_where():
    params = XOR.init(jax.random.key(0), dtype=jnp.float32)
    _, h = jbp.fit(XOR, params, XOR_X, XOR_Y, optimizer=optax.sgd(0.5), epochs=3000, tol=0.05)
    stop = int(h.epoch)
    assert 0 < stop < 3000 and int(h.stop_reason) == REACHED_TOL
    assert h.loss[stop - 1] <= 0.05 and np.all(h.loss[: stop - 1] > 0.05)
    assert np.all(np.isnan(h.loss[stop:]))


def test_runs_all_epochs_without_tol():
    params = XOR.init(jax.random.key(0), dtype=jnp.float32)
    _, h = jbp.fit(XOR, params, XOR_X, XOR_Y, optimizer=optax.sgd(0.5), epochs=7)
    assert int(h.epoch) == 7 and int(h.stop_reason) == RAN_ALL_EPOCHS and h.reason == "ran all epochs"
    assert np.all(np.isfinite(h.loss)) and h.loss.shape == (7,)


def test_full_batch_fit_is_the_seed_loop():
    """fit with optax.sgd and batch_size=None is BP1-BP7 repeated, as a Python loop does it."""
    net = jbp.MLP((3, 5, 2), activation="sigmoid", loss="cross_entropy")
    params, x, y = problem(net, 9, np.float64)
    got, h = jbp.fit(net, params, x, y, optimizer=optax.sgd(0.2), epochs=6)
    want, losses = params, []
    for _ in range(6):
        loss, grads = net.loss_and_grad(want, x, y)
        want = jbp.gradient_descent(want, grads, 0.2)
        losses.append(loss)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, want)
    np.testing.assert_allclose(h.loss, losses, rtol=1e-12)


def test_minibatches_cover_each_epoch_in_a_shuffled_order():
    """Online SGD (batch_size=1) over 5 examples: 5 steps an epoch, each example once."""
    net = jbp.MLP((2, 1), activation="tanh", loss="mse")
    x = jnp.asarray(np.arange(10.0).reshape(5, 2))
    y = jnp.zeros((5, 1))
    params = (jbp.Layer(W=jnp.zeros((1, 2)), b=jnp.zeros(1)),)
    # lr=0 keeps params fixed: the epoch's mean loss is then the mean over all examples
    _, h = jbp.fit(net, params, x, y, optimizer=optax.sgd(0.0), epochs=3, batch_size=1, key=jax.random.key(0))
    np.testing.assert_allclose(h.loss, [float(net.loss(params, x, y))] * 3, rtol=1e-12)


def test_continuing_a_run_is_bit_identical():
    net = jbp.MLP((3, 6, 2), activation="relu", loss="cross_entropy")
    params, x, y = problem(net, 20, np.float32)
    kwargs = dict(optimizer=optax.adam(1e-2), batch_size=4, key=jax.random.key(7))
    whole, h_whole = jbp.fit(net, params, x, y, epochs=10, **kwargs)
    half, h1 = jbp.fit(net, params, x, y, epochs=5, **kwargs)
    rest, h2 = jbp.fit(net, half, x, y, epochs=5, opt_state=h1.opt_state, start_epoch=h1.epoch, **kwargs)
    jax.tree.map(np.testing.assert_array_equal, rest, whole)
    np.testing.assert_array_equal(np.concatenate([h1.loss, h2.loss]), h_whole.loss)
    assert int(h2.epoch) == 10


def test_compiles_once_for_many_calls(compiles):
    net = jbp.MLP((3, 4, 2), loss="cross_entropy")
    opt = optax.sgd(0.1)
    for seed in range(3):
        params, x, y = problem(net, 8, np.float32, seed=seed)
        jbp.fit(net, params, x, y, optimizer=opt, epochs=4, batch_size=2, key=jax.random.key(seed), tol=0.01 * seed)
    assert compiles["jit(_fit)"] == 1


def test_composes_with_vmap_over_keys():
    net = jbp.MLP((3, 4, 2), loss="cross_entropy")
    _, x, y = problem(net, 8, np.float32)
    opt = optax.sgd(0.1)

    def train(key):
        params = net.init(key, dtype=jnp.float32)
        return jbp.fit(net, params, x, y, optimizer=opt, epochs=5, batch_size=4, key=key)[0]

    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(train))(keys)
    for i, key in enumerate(keys):
        single = train(key)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), batched, single)


def test_divergence_stops_and_returns_the_last_finite_params():
    net = jbp.MLP((3, 8, 1), activation="relu", loss="mse")
    params, x, y = problem(net, 16, np.float32)
    new, h = jbp.fit(net, params, x, 1e3 * y, optimizer=optax.sgd(10.0), epochs=50)
    assert int(h.stop_reason) == DIVERGED and h.diverged
    stop = int(h.epoch)
    assert stop < 50 and not np.isfinite(h.loss[stop]) and np.all(np.isfinite(h.loss[:stop]))
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(new))
    # the params returned are those after epoch stop - 1: one more plain step from them diverges
    again, h2 = jbp.fit(net, new, x, 1e3 * y, optimizer=optax.sgd(10.0), epochs=1)
    assert h2.diverged
    jax.tree.map(np.testing.assert_array_equal, again, new)


def test_training_with_autodiff_gradients_follows_the_same_path():
    """loss_and_grad=jax.value_and_grad(net.loss) trains the same network with autodiff."""
    net = jbp.MLP((3, 6, 2), activation="tanh", loss="cross_entropy")
    params, x, y = problem(net, 12, np.float64)
    kw = dict(optimizer=optax.adam(1e-2), epochs=5, batch_size=4, key=jax.random.key(3))
    manual, hm = jbp.fit(net, params, x, y, **kw)
    autodiff, ha = jbp.fit(net, params, x, y, loss_and_grad=jax.value_and_grad(net.loss), **kw)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), manual, autodiff)
    np.testing.assert_allclose(hm.loss, ha.loss, rtol=1e-10)


# Runs here and in a fresh process: run(seed) trains from jax.random.key(seed) and
# returns a digest of the parameters' bytes.
_SAME_SEED = """
import hashlib, jax, jax.numpy as jnp, numpy as np, optax, jbp
jax.config.update("jax_enable_x64", True)
NET, OPT = jbp.MLP((3, 6, 2), activation="relu", loss="cross_entropy"), optax.adam(1e-2)
rng = np.random.default_rng(0)
X, Y = jnp.asarray(rng.normal(size=(20, 3)), jnp.float32), jnp.asarray(rng.integers(0, 2, 20))

def run(seed):
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    params = NET.init(init_key, dtype=jnp.float32)
    params, _ = jbp.fit(NET, params, X, Y, optimizer=OPT, epochs=5, batch_size=4, key=shuffle_key)
    return hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(params))).hexdigest()
"""


def test_same_seed_gives_bit_identical_parameters_in_process_and_across_processes():
    """On CPU the same seed gives the same bits: init, shuffles and XLA's CPU kernels are
    deterministic. A fresh process, compiling anew, agrees with this one."""
    namespace = {}
    exec(_SAME_SEED, namespace)
    with jax.default_device(jax.devices("cpu")[0]):  # the promise is for CPU (see README)
        digest = namespace["run"](0)
        assert namespace["run"](0) == digest and namespace["run"](1) != digest
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(pathlib.Path(jbp.__file__).parents[1])}
    other = subprocess.run([sys.executable, "-c", _SAME_SEED + "print(run(0))"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == digest


def test_every_epoch_has_its_own_shuffle_order():
    """Each epoch's order comes from fold_in(key, epoch): the same epoch index gives the
    same order, other epochs other orders (a fit that reused one order fails here)."""
    x = np.stack([np.arange(8.0), np.zeros(8)], 1)
    zero = (jbp.Layer(W=jnp.zeros((1, 2)), b=jnp.zeros(1)),)
    kw = dict(optimizer=optax.sgd(1.0), epochs=1, batch_size=1, key=jax.random.key(0),
              loss_and_grad=order_encoding_step)
    W = [float(jbp.fit(ORDER_NET, zero, x, np.zeros((8, 1)), start_epoch=e, **kw)[0][0].W[0, 0]) for e in range(4)]
    assert len(set(W)) == 4, W
    again = jbp.fit(ORDER_NET, zero, x, np.zeros((8, 1)), start_epoch=2, **kw)[0]
    assert float(again[0].W[0, 0]) == W[2]


def _streams_problem():
    """A character LSTM, hidden 4, windows of 5, and a text laid out as 2 streams."""
    from jbp.datasets import text
    from jbp.layers import LSTM, Embedding, FusedLMHead

    net = jbp.Sequential((5,), [Embedding(7, 3), LSTM(4), FusedLMHead(7)], loss="cross_entropy")
    ids = np.asarray(jax.random.randint(jax.random.key(3), (41,), 0, 7))
    x, y = text.streams(ids, 2, 5)  # 4 windows per stream: 4 steps per epoch
    return net, net.init(jax.random.key(0), jnp.float64), x, y


def test_fit_with_a_state_is_the_loop_of_train_steps_carrying_it():
    net, params, x, y = _streams_problem()
    opt = optax.adam(1e-2)
    state0 = net.init_state(2, jnp.float64)
    fitted, h = jbp.fit(net, params, x, y, optimizer=opt, epochs=2, batch_size=2, state=state0)
    step = jbp.make_train_step(net, opt, donate=False)
    p, opt_state, state, losses = params, opt.init(params), state0, []
    for _ in range(2):
        for k in range(4):  # in order, rows 2k, 2k + 1: window k of each stream
            p, opt_state, loss, state = step(p, opt_state, x[2 * k:2 * k + 2], y[2 * k:2 * k + 2], state=state)
            losses.append(loss)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), fitted, p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), h.state, state)
    np.testing.assert_allclose(h.loss, np.reshape(losses, (2, 4)).mean(axis=1), rtol=1e-10)


def test_a_fit_with_a_state_resumed_from_its_history_is_bit_identical():
    net, params, x, y = _streams_problem()
    kwargs = dict(optimizer=optax.adam(1e-2), batch_size=2)
    whole, h_whole = jbp.fit(net, params, x, y, epochs=3, state=net.init_state(2, jnp.float64), **kwargs)
    half, h1 = jbp.fit(net, params, x, y, epochs=1, state=net.init_state(2, jnp.float64), **kwargs)
    rest, h2 = jbp.fit(net, half, x, y, epochs=2, opt_state=h1.opt_state, start_epoch=h1.epoch, state=h1.state,
                       **kwargs)
    jax.tree.map(np.testing.assert_array_equal, rest, whole)
    jax.tree.map(np.testing.assert_array_equal, h2.state, h_whole.state)
    np.testing.assert_array_equal(np.concatenate([h1.loss, h2.loss]), h_whole.loss)


def test_a_state_is_refused_with_what_cannot_carry_it():
    net, params, x, y = _streams_problem()
    state = net.init_state(2, jnp.float64)
    with pytest.raises(ValueError, match="state cannot be combined with an optimizer that reads the backward"):
        jbp.fit(net, params, x, y, optimizer=jbp.kfac(0.1), epochs=1, batch_size=2, state=state)
    with pytest.raises(ValueError, match=r"state\[1\]\.h has shape \(2, 4\)"):
        jbp.fit(net, params, x, y, optimizer=optax.sgd(0.1), epochs=1, batch_size=4, key=jax.random.key(0),
                state=state)
