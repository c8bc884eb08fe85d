"""jbp.Sequential (jbp/model/sequential.py): the chain of layers' backward passes against
autodiff, training with dropout keys, checkpoints, and everything that takes a network."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from user_layers import BiasAveraged, MyDense, MyDropout, MyTanh

RTOL = {np.float64: 1e-10, np.float32: 1e-5}


def blobs(n=96, seed=0, dtype=np.float32):
    """Three Gaussian blobs in 4-D: a problem a small network learns in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centres = 2.0 * np.eye(3, 4)
    x = (centres[y] + 0.5 * rng.normal(size=(n, 4))).astype(dtype)
    return jnp.asarray(x), jnp.asarray(y)


def net_of(middle=MyDense(8), rate=0.2):
    return jbp.Sequential((4,), [MyDense(16), MyTanh(), MyDropout(rate), middle, MyTanh(), MyDense(3)],
                          loss="cross_entropy")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("train", [False, True])
def test_loss_and_grad_matches_autodiff(dtype, train):
    net = net_of()
    params = net.init(jax.random.key(0), dtype)
    x, y = blobs(8, dtype=dtype)
    key = jax.random.key(3)
    loss, grads = net.loss_and_grad(params, x, y, key=key, train=train)
    with jax.enable_x64(True):  # the reference: autodiff in float64 on the same inputs
        p64, x64 = jax.tree.map(lambda a: a.astype(np.float64), (params, x))
        want_loss, want = jax.value_and_grad(net.loss)(p64, x64, y, key=key, train=train)
    chex.assert_trees_all_close(grads, jax.tree.map(lambda a: a.astype(dtype), want), rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=RTOL[dtype])
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)


def test_dropout_only_in_training_mode():
    net = net_of(rate=0.5)
    params = net.init(jax.random.key(0), np.float32)
    x, y = blobs(8)
    eval_loss = net.loss(params, x, y)
    assert float(net.loss(params, x, y, key=jax.random.key(1))) == pytest.approx(float(eval_loss), rel=1e-6)
    assert abs(float(net.loss(params, x, y, key=jax.random.key(1), train=True)) - float(eval_loss)) > 1e-4
    np.testing.assert_allclose(net.predict(params, x), net.forward(params, x)[0])


def test_check_grads_names_the_planted_layer_and_leaf_and_the_corrected_layer_trains():
    x, y = blobs()
    wrong = net_of(middle=BiasAveraged(8))
    params = wrong.init(jax.random.key(0), np.float32)
    report = jbp.check_grads(wrong, params, x[:16], y[:16], train=True, worst_examples=0)
    assert not report.ok
    assert report.failed == ("params[3].b",)
    first = report.first_failure
    assert (first.layer, first.layer_type, first.leaf, first.verdict) == (3, "BiasAveraged", "params[3].b", "WRONG")
    assert "first wrong layer: layers[3] (BiasAveraged), params[3].b" in str(report)
    # every other layer's backward, fed the exact dy, is right
    assert [c.leaf for c in report.equations if c.verdict == "WRONG"] == ["params[3].b"]

    right = net_of(middle=MyDense(8))
    trained, history = jbp.fit(right, params, x, y, optimizer=optax.adam(2e-2), epochs=20,
                               batch_size=32, key=jax.random.key(1))
    assert float(history.loss[-1]) < 0.3 * float(history.loss[0])
    assert float(right.accuracy(trained, x, y)) > 0.9  # chance is 1/3


def test_dropout_resume_is_exact():
    net, (x, y) = net_of(rate=0.3), blobs(64)
    params, optimizer, key = net.init(jax.random.key(0), np.float32), optax.adam(1e-2), jax.random.key(5)
    run = lambda p, epochs, **kw: jbp.fit(net, p, x, y, optimizer=optimizer, epochs=epochs,
                                          batch_size=16, key=key, **kw)
    whole, h = run(params, 4)
    half, h1 = run(params, 2)
    resumed, h2 = run(half, 2, start_epoch=h1.epoch, opt_state=h1.opt_state)
    chex.assert_trees_all_equal(resumed, whole)
    chex.assert_trees_all_equal(jnp.concatenate([h1.loss, h2.loss]), h.loss)
    # a fresh mask per step: the two halves' second runs differ (same params, other epochs)
    again, _ = run(params, 2, start_epoch=2, opt_state=optimizer.init(params))
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(half))) > 1e-4


def test_make_train_step_takes_a_key_and_compiles_once():
    net, (x, y) = net_of(), blobs(16)
    optimizer = optax.sgd(0.1)
    step = jbp.make_train_step(net, optimizer, donate=False)
    params = net.init(jax.random.key(0), np.float32)
    opt_state = optimizer.init(params)
    counted = chex.assert_max_traces(jbp.train_step, n=1)
    jitted = jax.jit(counted, static_argnums=(0, 1))
    for i in range(3):
        p, s, loss = jitted(net, optimizer, params, opt_state, x, y, key=jax.random.key(i))
    want = step(params, opt_state, x, y, key=jax.random.key(2))
    chex.assert_trees_all_close((p, s, loss), want, rtol=1e-6)
    with pytest.raises(ValueError, match="key is for networks with stochastic layers"):
        jbp.train_step(jbp.MLP((4, 3)), optimizer, jbp.MLP((4, 3)).init(jax.random.key(0), np.float32),
                       optimizer.init(jbp.MLP((4, 3)).init(jax.random.key(0), np.float32)), x, y, key=jax.random.key(0))


def test_per_example_grads_and_custom_vjp_loss():
    net = net_of()
    params = net.init(jax.random.key(0), np.float64)
    x, y = blobs(6, dtype=np.float64)
    _, grads = net.loss_and_grad(params, x, y)
    per_example = jbp.per_example_grads(net, params, x, y)
    chex.assert_trees_all_close(jax.tree.map(lambda g: g.mean(axis=0), per_example), grads, rtol=1e-10, atol=1e-12)
    f = jbp.custom_vjp_loss(net)
    dparams, dx = jax.grad(f, argnums=(0, 1))(params, x, y)
    chex.assert_trees_all_close(dparams, grads, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(dx, jax.grad(net.loss, argnums=1)(params, x, y), rtol=1e-10, atol=1e-12)


def test_sweep_and_mesh_take_a_sequential():
    net, (x, y) = net_of(rate=0.0), blobs(32)
    params = net.init(jax.random.key(0), np.float32)
    kw = dict(epochs=2, batch_size=8, key=jax.random.key(1))
    swept, _ = jbp.sweep(net, params, x, y, optimizer=optax.sgd,
                         hyperparams={"learning_rate": jnp.array([0.1, 0.2])}, **kw)
    alone, _ = jbp.fit(net, params, x, y, optimizer=optax.sgd(0.2), **kw)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], swept), alone, rtol=1e-5, atol=1e-6)
    mesh = jax.make_mesh((1,), ("data",))
    parallel, _ = jbp.fit(net, params, x, y, optimizer=optax.sgd(0.2), mesh=mesh, **kw)
    chex.assert_trees_all_close(parallel, alone, rtol=1e-5, atol=1e-6)


def test_checkpoint_of_a_user_layer_needs_the_network(tmp_path):
    net = net_of()
    params = net.init(jax.random.key(0), np.float32)
    optimizer = optax.adam(1e-3)
    path = tmp_path / "c.npz"
    jbp.save_checkpoint(path, net=net, params=params, opt_state=optimizer.init(params), epoch=2,
                        key=jax.random.key(4))
    with pytest.raises(ValueError, match=r"not one of jbp's built-in layers.*load_checkpoint\(path, net=net\)"):
        jbp.load_checkpoint(path)
    with pytest.raises(ValueError, match="net does not match the network saved"):
        jbp.load_checkpoint(path, net=net_of(rate=0.5))
    c = jbp.load_checkpoint(path, net=net, optimizer=optimizer)
    assert c.net == net and c.epoch == 2
    chex.assert_trees_all_equal(c.params, params)
    chex.assert_trees_all_equal(c.opt_state, optimizer.init(params))


@pytest.mark.parametrize("call, error, match", [
    (lambda n, p, x, y: n.loss(p, x[:, :3], y), ValueError,
     r"x has shape \(8, 3\) but the network expects \(batch, 4\) \(input_shape=\(4,\)\)"),
    (lambda n, p, x, y: n.loss(p[:2], x, y), ValueError, "params has 2 entries but the network has 6 layers"),
    (lambda n, p, x, y: n.loss(p[::-1], x, y), ValueError, r"params\[0\]\.w has shape \(3, 8\) but layers\[0\] \(MyDense\)\.init\.w has \(16, 4\)"),
    (lambda n, p, x, y: n.loss(p, x, y + 3), ValueError, r"labels in \[3, 5\] but the network has 3 classes"),
    (lambda n, p, x, y: n.loss(list(p), x, y), TypeError, "params must be a tuple with one entry per layer"),
    (lambda n, p, x, y: n.loss(p, x, y, key=0), TypeError, "key must be a PRNG key"),
    (lambda n, p, x, y: jbp.Sequential((4,), []), ValueError, "layers is empty"),
    (lambda n, p, x, y: jbp.Sequential((4,), [object()]), TypeError, r"layers\[0\] must be a layer"),
    (lambda n, p, x, y: jbp.Sequential((4, 2), [MyDense(3)]), ValueError, "layers do not fit input_shape"),
    (lambda n, p, x, y: jbp.Sequential((4,), [MyTanh()], loss="cross_entropy", output_activation="tanh"),
     ValueError, "needs output_activation='softmax'"),
])
def test_bad_inputs_are_named(call, error, match):
    net = net_of()
    params = net.init(jax.random.key(0), np.float32)
    x, y = blobs(8)
    with pytest.raises(error, match=match):
        call(net, params, x, y)


def test_a_network_mixing_the_built_in_layers_trains_and_passes_check_grads():
    from jbp.layers import Conv2D, Dense, Dropout, Flatten, LayerNorm, MaxPool2D, Residual

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=96)
    images = np.zeros((96, 6, 6, 1), np.float32)
    for i, label in enumerate(y):  # a bright bar: row 1, row 4 or the middle column
        if label == 0:
            images[i, 1, :, 0] = 1
        elif label == 1:
            images[i, 4, :, 0] = 1
        else:
            images[i, :, 3, 0] = 1
    x = jnp.asarray(images + 0.3 * rng.normal(size=images.shape).astype(np.float32))
    y = jnp.asarray(y)
    net = jbp.Sequential((6, 6, 1), [
        Conv2D(4, (3, 3)), "relu", MaxPool2D((2, 2), (2, 2)), Flatten(), Dense(12), LayerNorm(),
        Residual((Dense(12), "tanh")), Dropout(0.2), Dense(3)], loss="cross_entropy")
    params = net.init(jax.random.key(0), np.float32)
    report = jbp.check_grads(net, params, x[:8], y[:8], train=True, worst_examples=0)
    assert report.ok, str(report)
    assert {c.layer for c in report.equations} == set(range(net.n_layers)) | {None}  # every layer checked
    trained, history = jbp.fit(net, params, x, y, optimizer=optax.adam(2e-2), epochs=15,
                               batch_size=32, key=jax.random.key(1))
    assert float(history.loss[-1]) < 0.5 * float(history.loss[0])
    assert float(net.accuracy(trained, x, y)) > 0.8  # chance is 1/3


# --- Truncated BPTT: a state carried from one window to the next. ---------------------


def char_lstm(cell=jbp.layers.LSTM, T=5):
    return jbp.Sequential((T,), [jbp.layers.Embedding(7, 3), cell(4), jbp.layers.FusedLMHead(7)],
                          loss="cross_entropy")


def char_batches(windows=3, batch=2, T=5, seed=0):
    ids = jax.random.randint(jax.random.key(seed), (windows + 1, batch, T), 0, 7)
    return ids[:-1], ids[1:]  # any targets serve


def test_a_carried_state_gives_autodiffs_gradient_and_the_state_of_the_whole_sequence():
    """Window 2 starts from window 1's state, which autodiff takes as a constant input:
    no gradient crosses the window's edge."""
    net = char_lstm()
    params = net.init(jax.random.key(0), jnp.float64)
    xs, ys = char_batches(2)
    state = net.init_state(2, jnp.float64)
    hand = jax.jit(lambda p, x, y, s: net.loss_and_grad(p, x, y, state=s))
    auto = jax.jit(jax.value_and_grad(lambda p, x, y, s: net.loss(p, x, y, state=s), has_aux=True))
    for x, y in zip(xs, ys):
        (loss, new_state), grads = hand(params, x, y, state)
        (want_loss, want_state), want = auto(params, x, y, state)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
        chex.assert_trees_all_close(grads, want, rtol=1e-10, atol=1e-14)
        chex.assert_trees_all_close(new_state, want_state, rtol=1e-12)
        state = new_state
    # the state after the windows is the recurrent layer's after the whole sequence
    whole = jnp.concatenate(list(xs), axis=1)
    h = net.layers[0].forward(params[0], whole)[0]
    layer, r = net.layers[1], net.layers[1].forward(params[1], h)[1]
    chex.assert_trees_all_close(state[1], layer.final_state(r), rtol=1e-12)
    assert state[0] is None and state[2] is None


def test_forward_with_a_state_keeps_the_next_state_in_its_cache():
    net = char_lstm()
    params = net.init(jax.random.key(0), jnp.float32)
    x, _ = char_batches(1)
    out, cache = net.forward(params, x[0], state=net.init_state(2, jnp.float32))
    _, stateless = net.forward(params, x[0])
    chex.assert_trees_all_close(out, stateless.out, rtol=1e-6)  # zeros are the default start
    assert stateless.state is None and cache.state[1].h.shape == (2, 4)


@pytest.mark.parametrize("call, error, match", [
    (lambda net, p, x, y: net.loss(p, x, y, state=net.init_state(3, jnp.float64)), ValueError,
     r"state\[1\]\.h has shape \(3, 4\)"),
    (lambda net, p, x, y: net.loss(p, x, y, state=net.init_state(2, jnp.float32)), TypeError, "dtype float32"),
    (lambda net, p, x, y: net.loss(p, x, y, state=(None,)), ValueError, "one entry per layer"),
    (lambda net, p, x, y: jbp.Sequential((5,), [jbp.layers.Dense(2)]).init_state(2), ValueError,
     "needs a network with a stateful layer"),
])
def test_a_bad_state_is_named(call, error, match):
    net = char_lstm()
    x, y = char_batches(1)
    with pytest.raises(error, match=match):
        call(net, net.init(jax.random.key(0), jnp.float64), x[0], y[0])
