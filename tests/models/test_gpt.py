"""jbp.models.gpt: a Sequential of token ids that fit and check_grads take, and that
check_grads localises a wrong attention backward in."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp.layers import attention as attention_module
from jbp.models import generate, gpt

VOCAB, T = 11, 8


def _data(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, (batch, T)), rng.integers(0, VOCAB, (batch, T))


def test_tokens_in_distributions_out_and_the_fused_loss_is_the_cross_entropy_of_the_output():
    net = gpt(VOCAB, T, blocks=1, heads=2, features=16)
    params = net.init(jax.random.key(0), jnp.float64)
    x, y = _data()
    y[1, 3:] = -1  # padding: left out of the mean
    p = jax.jit(net.predict)(params, x)
    assert p.shape == (3, T, VOCAB) and net.input_vocab == VOCAB and net.fused_head is net.layers[-1]
    valid = y != -1
    want = -np.sum(np.log(np.take_along_axis(np.asarray(p), np.where(valid, y, 0)[..., None], -1)[..., 0]) * valid)
    assert abs(float(jax.jit(net.loss)(params, x, y)) - want / valid.sum()) <= 1e-12 * want
    hits = (np.argmax(p, -1) == y) & valid
    assert abs(float(jax.jit(net.accuracy)(params, x, y)) - hits.sum() / valid.sum()) <= 1e-12


def test_check_grads_passes():
    net = gpt(VOCAB, T, blocks=1, heads=2, features=16, block=4)  # attention keeps the log-sum-exp
    params = net.init(jax.random.key(1))
    report = jbp.check_grads(net, params, *_data(2), worst_examples=0)
    assert report.ok and report.first_failure is None, str(report)


def test_a_wrong_dK_is_named_as_that_layer_and_leaf(plant):
    right = attention_module.attention_backward

    def wrong_dK(*args):
        dQ, dK, dV = right(*args)
        return dQ, -dK, dV  # the sign of dK = dSᵀ Q / √d flipped

    plant(attention_module, "attention_backward", wrong_dK)
    net = gpt(VOCAB, T, blocks=1, heads=2, features=16, keep="probs")
    params = net.init(jax.random.key(1))
    report = jbp.check_grads(net, params, *_data(2), worst_examples=0)
    assert not report.ok and "params[2][1].key" in report.failed
    first = report.first_failure
    assert (first.layer, first.leaf) == (2, "params[2][1].key"), str(report)


def test_fit_learns_a_cycle_token_by_token():
    net = gpt(VOCAB, T, blocks=1, heads=2, features=16)
    cycle = np.arange(40) % 5
    x = np.stack([cycle[i:i + T] for i in range(5)])
    y = np.stack([cycle[i + 1:i + T + 1] for i in range(5)])
    params, history = jbp.fit(net, net.init(jax.random.key(0)), x, y, optimizer=optax.adam(3e-2), epochs=60)
    assert np.all(np.isfinite(history.loss)) and history.loss[-1] < 0.1 * history.loss[0]
    assert float(net.accuracy(params, x, y)) == 1.0
    # sampling continues the cycle, past the context (the window slides)
    ids = generate(net, params, [2, 3], tokens=12, key=jax.random.key(0), temperature=0.05)
    np.testing.assert_array_equal(ids, (np.arange(14) + 2) % 5)


def test_dropout_is_drawn_per_step_and_off_in_evaluation():
    net = gpt(VOCAB, T, blocks=1, heads=2, features=16, dropout=0.5)
    params = net.init(jax.random.key(0))
    x, y = _data()
    loss = jax.jit(net.loss, static_argnames="train")
    train = [loss(params, x, y, key=jax.random.key(k), train=True) for k in (0, 1)]
    assert float(abs(train[0] - train[1])) > 1e-4
    chex.assert_trees_all_close(loss(params, x, y), loss(params, x, y), rtol=0)


@pytest.mark.parametrize("x, y, error, match", [
    (np.zeros((2, T)), np.zeros((2, T), int), TypeError, r"x must be integer token ids \(batch, 8\) in \[0, 11\)"),
    (np.full((2, T), 11), np.zeros((2, T), int), ValueError, r"x holds token ids in \[11, 11\] but the network's vocabulary has 11"),
    (np.zeros((2, T + 1), int), np.zeros((2, T), int), ValueError, r"x has shape \(2, 9\) but the network expects token ids \(batch, 8\)"),
    (np.zeros((2, T), int), np.zeros((2,), int), ValueError, r"y must be integer labels \(2, 8\) \(batch, T\)"),
    (np.zeros((2, T), int), np.full((2, T), -2), ValueError, r"y holds labels in \[-2, -2\] .* or be -1 for padding"),
])
def test_bad_tokens_are_named(x, y, error, match):
    net = gpt(VOCAB, T, blocks=0, heads=1, features=4)
    with pytest.raises(error, match=match):
        net.loss(net.init(jax.random.key(0)), x, y)


def test_the_fused_head_gives_the_loss_and_gradient_of_a_plain_dense_last_layer():
    from jbp.layers import Dense

    fused = gpt(VOCAB, T, blocks=0, heads=1, features=8)
    plain = jbp.Sequential((T,), [*fused.layers[:-1], Dense(VOCAB)], loss="cross_entropy")
    assert plain.fused_head is None and fused.fused_head is not None
    params = fused.init(jax.random.key(3), jnp.float64)
    x, y = _data(4, seed=2)
    y[2, :5] = -1
    (loss, grads), (want_loss, want_grads) = (jax.jit(n.loss_and_grad)(params, x, y) for n in (fused, plain))
    chex.assert_trees_all_close((loss, grads), (want_loss, want_grads), rtol=1e-10, atol=1e-14)


def test_generate_is_deterministic_in_its_key_and_refuses_bad_prompts():
    net = gpt(VOCAB, T, blocks=0, heads=1, features=4)
    params = net.init(jax.random.key(0))
    a, b = (generate(net, params, [1], tokens=5, key=jax.random.key(k)) for k in (7, 7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6,) and a[0] == 1 and a.min() >= 0 and a.max() < VOCAB
    with pytest.raises(ValueError, match=r"prompt holds ids in \[11, 11\] but the vocabulary has 11"):
        generate(net, params, [11], tokens=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="prompt must be a non-empty 1-D array of integer ids"):
        generate(net, params, [], tokens=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        generate(net, params, [1], tokens=1, key=jax.random.key(0), temperature=0.0)


@pytest.mark.parametrize("tied", [False, True])
def test_a_checkpoint_rebuilds_the_network_and_its_parameters(tmp_path, tied):
    net = gpt(VOCAB, T, blocks=1, heads=2, features=8, dropout=0.1, tied=tied)
    params = net.init(jax.random.key(0))
    jbp.save_checkpoint(tmp_path / "c.npz", net=net, params=params, epoch=2, extra={"vocab": "abc"})
    saved = jbp.load_checkpoint(tmp_path / "c.npz")
    assert saved.net == net and saved.extra == {"vocab": "abc"}
    chex.assert_trees_all_equal(saved.params, params)
