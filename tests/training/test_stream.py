"""fit_stream: memory-mapped arrays and iterators, in compiled chunks; block shuffles, exact resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from helpers import ORDER_NET, order_encoding_step

NET = jbp.MLP((3, 6, 2), activation="relu", loss="cross_entropy")
OPT = optax.adam(1e-2)


def problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def params0():
    return NET.init(jax.random.key(0), dtype=jnp.float32)


# 40 rows, 10 steps an epoch: two chunks of 5 steps (one compiled shape)
KW = dict(optimizer=OPT, batch_size=4, key=jax.random.key(3), steps_per_chunk=5, block_size=3)


def test_memory_mapped_file_trains_as_the_same_arrays_in_memory(tmp_path):
    x, y = problem()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    mapped = (np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r"))
    a, ha = jbp.fit_stream(NET, params0(), mapped, epochs=3, **KW)
    b, hb = jbp.fit_stream(NET, params0(), (x, y), epochs=3, **KW)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    np.testing.assert_array_equal(ha.loss, hb.loss)
    assert int(ha.epoch) == 3 and ha.reason == "ran all epochs" and np.all(np.isfinite(ha.loss))
    assert float(NET.loss(a, x, y)) < float(NET.loss(params0(), x, y))


def test_continuing_a_streamed_run_is_bit_identical():
    x, y = problem()
    whole, hw = jbp.fit_stream(NET, params0(), (x, y), epochs=4, **KW)
    half, h1 = jbp.fit_stream(NET, params0(), (x, y), epochs=2, **KW)
    rest, h2 = jbp.fit_stream(NET, half, (x, y), epochs=2, opt_state=h1.opt_state, start_epoch=h1.epoch, **KW)
    jax.tree.map(np.testing.assert_array_equal, rest, whole)
    np.testing.assert_array_equal(np.concatenate([h1.loss, h2.loss]), hw.loss)


def row_sum_loss(params, x, y):
    """Loss = the mean of the batch's x[:, 0], no update: the epoch's mean loss says which rows were used."""
    return jnp.mean(x[:, 0]), jax.tree.map(jnp.zeros_like, params)


@pytest.mark.parametrize("n, batch_size, block_size, steps_per_chunk", [(13, 2, 5, 2), (12, 3, 4, 4), (9, 4, 1, 1)])
def test_each_epoch_uses_distinct_rows_and_all_but_the_remainder(n, batch_size, block_size, steps_per_chunk):
    # row i holds 2^i: the sum of the rows used has one bit per distinct row
    x = np.stack([2.0 ** np.arange(n), np.zeros(n)], 1)
    params = (jbp.Layer(W=jnp.zeros((1, 2)), b=jnp.zeros(1)),)
    steps = n // batch_size
    _, h = jbp.fit_stream(ORDER_NET, params, (x, np.zeros((n, 1))), optimizer=optax.sgd(0.0), epochs=3,
                          batch_size=batch_size, block_size=block_size, steps_per_chunk=steps_per_chunk,
                          key=jax.random.key(0), loss_and_grad=row_sum_loss)
    used = [int(round(float(loss) * steps * batch_size)) for loss in h.loss]
    assert [bin(u).count("1") for u in used] == [steps * batch_size] * 3


def test_every_streamed_epoch_has_its_own_order():
    """As for fit: the same epoch index gives the same order, other epochs other orders."""
    x = np.stack([np.arange(8.0), np.zeros(8)], 1)
    zero = (jbp.Layer(W=jnp.zeros((1, 2)), b=jnp.zeros(1)),)
    kw = dict(optimizer=optax.sgd(1.0), epochs=1, batch_size=1, key=jax.random.key(0), block_size=2,
              steps_per_chunk=4, loss_and_grad=order_encoding_step)
    W = [float(jbp.fit_stream(ORDER_NET, zero, (x, np.zeros((8, 1))), start_epoch=e, **kw)[0][0].W[0, 0])
         for e in (0, 1, 2, 3, 2)]
    assert len(set(W[:4])) == 4 and W[4] == W[2], W


def test_an_iterator_of_batches_is_the_loop_of_train_steps():
    x, y = problem(24)
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 24, 4)]
    got, h = jbp.fit_stream(NET, params0(), lambda epoch: iter(batches), optimizer=OPT, epochs=2, steps_per_chunk=3)
    want, opt_state, losses = params0(), OPT.init(params0()), []
    step = jax.jit(jbp.train_step, static_argnums=(0, 1))
    for _ in range(2):
        for xb, yb in batches:
            want, opt_state, loss = step(NET, OPT, want, opt_state, xb, yb)
            losses.append(loss)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
    np.testing.assert_allclose(h.loss, np.mean(np.reshape(losses, (2, 6)), 1), rtol=1e-5)
    once, _ = jbp.fit_stream(NET, params0(), iter(batches), optimizer=OPT, steps_per_chunk=3)
    jax.tree.map(np.testing.assert_array_equal, once,
                 jbp.fit_stream(NET, params0(), batches, optimizer=OPT, steps_per_chunk=3)[0])


def test_validation_and_patience_while_streaming():
    x, y = problem(40)
    rng = np.random.default_rng(1)
    xv = rng.normal(size=(12, 3)).astype(np.float32)
    yv = rng.integers(0, 2, 12).astype(np.int32)
    params, h = jbp.fit_stream(NET, params0(), (x, y), epochs=40, validation=(xv, yv), patience=2, **KW)
    stop, best = int(h.epoch), int(h.best_epoch)
    assert h.reason.startswith("early stopping") and stop - 1 - best == 2
    np.testing.assert_allclose(h.val_loss[best], NET.loss(params, xv, yv), rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, params, h.best.params)


@pytest.mark.parametrize(
    "data, kwargs, error, message",
    [
        ((np.zeros((8, 3), np.float32), np.zeros(7, np.int32)), {}, ValueError, "x has 8 examples but y has 7"),
        ((np.zeros((8, 3), np.float32), np.zeros(8, np.int32)), {"key": None}, ValueError, "key is required"),
        ((np.zeros((8, 3), np.float32), np.zeros(8, np.int32)), {"batch_size": None}, ValueError, "batch_size is required"),
        ((np.zeros((8, 4), np.float32), np.zeros(8, np.int32)), {}, ValueError, "x has 4 features but the network expects 3"),
        ((np.zeros((8, 3), np.float32), np.full(8, 5, np.int32)), {}, ValueError, r"y holds labels in \[5, 5\]"),
        ([(np.zeros((4, 3)), np.zeros(4, int))], {"epochs": 2}, ValueError, "runs one epoch, but epochs=2"),
        (iter([(np.zeros((4, 3)), np.zeros(4, int)), (np.zeros((3, 3)), np.zeros(3, int))]), {"epochs": 1},
         ValueError, "batch 1 has 3 inputs and 3 targets; expected 4"),
        ("data.npy", {}, TypeError, "data must be a pair of arrays"),
    ],
)
def test_bad_streams_are_refused(data, kwargs, error, message):
    kw = {**KW, "epochs": 1, **kwargs}
    with pytest.raises(error, match=message):
        jbp.fit_stream(NET, params0(), data, **kw)


DROPOUT_NET = jbp.Sequential((3,), [jbp.layers.Dense(8), "relu", jbp.layers.Dropout(0.5), jbp.layers.Dense(2)],
                             loss="cross_entropy")


def test_a_network_with_dropout_streams_with_a_fresh_key_per_step():
    """Step i of epoch e draws its masks from step_key(key, e, i), as fit does: the stream
    is the loop of train_steps with those keys, and a resumed run is exact."""
    x, y = problem(16)
    params = DROPOUT_NET.init(jax.random.key(0), jnp.float32)
    key = jax.random.key(4)
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 16, 4)]
    kw = dict(optimizer=OPT, key=key, steps_per_chunk=3)
    got, _ = jbp.fit_stream(DROPOUT_NET, params, lambda epoch: batches, epochs=2, **kw)
    want, state = params, OPT.init(params)
    for epoch in range(2):
        for i, (xb, yb) in enumerate(batches):
            k = jbp.training.stochastic.step_key(key, epoch, i)
            want, state, _ = jbp.train_step(DROPOUT_NET, OPT, want, state, xb, yb, key=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
    other, _ = jbp.fit_stream(DROPOUT_NET, params, lambda epoch: batches, epochs=2, **{**kw, "key": jax.random.key(5)})
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(got))) > 1e-4
    whole, hw = jbp.fit_stream(DROPOUT_NET, params, (x, y), epochs=2, batch_size=4, **kw)
    half, h1 = jbp.fit_stream(DROPOUT_NET, params, (x, y), epochs=1, batch_size=4, **kw)
    rest, _ = jbp.fit_stream(DROPOUT_NET, half, (x, y), epochs=1, batch_size=4, opt_state=h1.opt_state,
                             start_epoch=h1.epoch, **kw)
    jax.tree.map(np.testing.assert_array_equal, rest, whole)


def test_monitor_streams_fits_layer_stats():
    """Full batch, one step an epoch: the streamed epoch is fit's, statistics included."""
    x, y = problem()
    got_params, got = jbp.fit_stream(NET, params0(), lambda epoch: [(x, y)], optimizer=OPT, epochs=2,
                                     steps_per_chunk=1, monitor=True)
    want_params, want = jbp.fit(NET, params0(), x, y, optimizer=OPT, epochs=2, monitor=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got_params, want_params)
    assert set(got.layer_stats) == set(jbp.training.monitor.LAYER_STATS)
    for name, value in want.layer_stats.items():
        np.testing.assert_allclose(got.layer_stats[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
