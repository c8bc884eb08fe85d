"""Many trainings in one compiled call: jax.vmap of fit (ensembles) and sweep (hyperparameters)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp.training.fit import DIVERGED, RAN_ALL_EPOCHS, REACHED_TOL
from helpers import problem

# A linear regression that gradient descent solves: how fast depends on the learning rate.
LINEAR = jbp.MLP((3, 1), loss="mse")


def _regression(n=8):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, 3)))
    y = x @ jnp.asarray([[1.0], [-2.0], [0.5]]) + 0.3
    params = (jbp.Layer(W=jnp.zeros((1, 3)), b=jnp.zeros(1)),)
    return params, x, y


def _assert_member(batched, k, single, rtol=1e-12):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[k], b, rtol=rtol, atol=1e-300), batched, single)


def test_vmapped_fit_is_k_separate_fits_each_stopping_on_its_own():
    """An ensemble over initialisations with tol: members stop at different epochs, and
    those that stopped stay frozen while the while_loop runs on for the others."""
    net = jbp.MLP((3, 4, 1), activation="tanh", loss="mse")
    _, x, y = problem(net, 8, np.float64)
    kwargs = dict(optimizer=optax.sgd(0.3), epochs=40, batch_size=4, tol=0.2)

    def train(key):
        return jbp.fit(net, net.init(key), x, y, key=key, **kwargs)

    keys = jax.random.split(jax.random.key(0), 3)
    params, history = jax.jit(jax.vmap(train))(keys)
    stops = [int(e) for e in history.epoch]
    assert len(set(stops)) > 1, f"members should stop at different epochs, got {stops}"
    for k, key in enumerate(keys):
        single_params, single_history = jax.jit(train)(key)
        assert int(history.epoch[k]) == int(single_history.epoch)
        _assert_member(params, k, single_params)
        _assert_member(history.loss, k, single_history.loss)


def test_sweep_is_one_fit_per_learning_rate():
    """Learning rates that reach tol, run out of epochs, and diverge, side by side."""
    params, x, y = _regression()
    lrs = jnp.asarray([1.0, 0.01, 1e5])
    kwargs = dict(epochs=30, batch_size=4, key=jax.random.key(1), tol=1e-4)
    got, history = jbp.sweep(LINEAR, params, x, y, optimizer=optax.sgd,
                             hyperparams={"learning_rate": lrs}, **kwargs)
    assert [int(r) for r in history.stop_reason] == [REACHED_TOL, RAN_ALL_EPOCHS, DIVERGED]
    assert history.loss.shape == (3, 30) and got[0].W.shape == (3, 1, 3)
    # the plain optimizer, optax.sgd(lr), one compilation for all three
    reference = jax.jit(lambda lr: jbp.fit(LINEAR, params, x, y, optimizer=optax.sgd(lr), **kwargs))
    for k, lr in enumerate(lrs):
        want, want_history = reference(lr)
        assert int(history.epoch[k]) == int(want_history.epoch)
        _assert_member(got, k, want)
        _assert_member(history.loss, k, want_history.loss)


def test_sweep_several_hyperparameters_together():
    net = jbp.MLP((3, 5, 2), activation="relu", loss="cross_entropy")
    params, x, y = problem(net, 12, np.float64)
    adam = functools.partial(optax.adam, eps=1e-6)
    hyperparams = {"learning_rate": [0.01, 0.05], "b1": [0.5, 0.9]}
    got, history = jbp.sweep(net, params, x, y, optimizer=adam, hyperparams=hyperparams, epochs=5)
    reference = jax.jit(lambda lr, b1: jbp.fit(net, params, x, y, optimizer=adam(lr, b1=b1), epochs=5))
    for k in range(2):
        want, want_history = reference(hyperparams["learning_rate"][k], hyperparams["b1"][k])
        _assert_member(got, k, want)
        _assert_member(history.loss, k, want_history.loss)


def test_sweep_compiles_once_for_new_values(compiles):
    params, x, y = _regression()
    for lrs in ([0.1, 0.2], [0.3, 0.4]):
        jbp.sweep(LINEAR, params, x, y, optimizer=optax.sgd, hyperparams={"learning_rate": lrs}, epochs=3)
    assert compiles["jit(_sweep)"] == 1


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(optimizer=optax.sgd(0.1)), TypeError,
         "optimizer must be an optax optimizer factory such as optax.adam"),
        (dict(hyperparams={}), TypeError, "hyperparams must be a non-empty dict"),
        (dict(hyperparams={"lr": [0.1]}), ValueError,
         "hyperparams has 'lr' but sgd takes no such argument; it takes learning_rate"),
        (dict(hyperparams={"learning_rate": 0.1}), ValueError,
         r"hyperparams\['learning_rate'\] must be a 1-D array of values, one per member, got shape \(\)"),
        (dict(optimizer=optax.adam, hyperparams={"learning_rate": [0.1, 0.2], "b1": [0.9]}), ValueError,
         r"hyperparams must all have the same number of values, got \{'b1': 1, 'learning_rate': 2\}"),
    ],
)
def test_bad_sweeps_are_clear_errors(kwargs, error, message):
    params, x, y = _regression()
    kwargs = {"optimizer": optax.sgd, "hyperparams": {"learning_rate": [0.1]}, "epochs": 2, **kwargs}
    with pytest.raises(error, match=message):
        jbp.sweep(LINEAR, params, x, y, **kwargs)
