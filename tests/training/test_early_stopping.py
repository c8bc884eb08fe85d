"""Validation and early stopping in fit: the curves, the stop, the best parameters, exact resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp.training.fit import EARLY_STOPPED, RAN_ALL_EPOCHS

NET = jbp.MLP((3, 8, 2), activation="tanh", loss="cross_entropy")
OPT = optax.adam(5e-2)


def data(seed=0):
    """Training labels follow x[:, 0]; validation labels are partly noise, so the
    validation loss falls first and then rises as the network fits the training set."""
    rng = np.random.default_rng(seed)
    x, xv = rng.normal(size=(48, 3)), rng.normal(size=(24, 3))
    y = (x[:, 0] > 0).astype(np.int32)
    yv = np.where(rng.uniform(size=24) < 0.4, rng.integers(0, 2, 24), xv[:, 0] > 0).astype(np.int32)
    return x, y, (xv, yv)


def run(epochs, params=None, **kw):
    x, y, val = data()
    params = NET.init(jax.random.key(0), dtype=jnp.float64) if params is None else params
    return jbp.fit(NET, params, x, y, optimizer=OPT, epochs=epochs, batch_size=8, key=jax.random.key(1),
                   validation=val, **kw)


def one_epoch_at_a_time(epochs):
    """The parameters after each epoch, and the validation history, from one-epoch calls."""
    params, opt_state, after, val_losses, val_accuracies = None, None, [], [], []
    for epoch in range(epochs):
        params, h = run(1, params, opt_state=opt_state, start_epoch=epoch)
        opt_state = h.opt_state
        after.append(params)
        val_losses.append(float(h.val_loss[0]))
        val_accuracies.append(float(h.val_accuracy[0]))
    return after, val_losses, val_accuracies


def test_history_holds_each_epochs_validation_loss_and_accuracy():
    _, _, (xv, yv) = data()
    after, val_losses, val_accuracies = one_epoch_at_a_time(3)
    for params, val_loss, val_accuracy in zip(after, val_losses, val_accuracies):
        np.testing.assert_allclose(val_loss, NET.loss(params, xv, yv), rtol=1e-12)
        np.testing.assert_allclose(val_accuracy, NET.accuracy(params, xv, yv), rtol=1e-12)
    assert len(set(val_losses)) == 3


def test_patience_stops_and_returns_the_best_epochs_parameters():
    params, h = run(40, patience=4)
    stop, best = int(h.epoch), int(h.best_epoch)
    assert int(h.stop_reason) == EARLY_STOPPED and h.reason.startswith("early stopping")
    assert stop < 40 and stop - 1 - best == 4  # four epochs after the best one, none lower
    assert np.all(h.val_loss[best + 1: stop] >= h.val_loss[best]) and np.all(np.isnan(h.val_loss[stop:]))
    assert float(h.val_loss[best]) == float(np.min(h.val_loss[:stop]))
    # the parameters returned are those after epoch `best` of the same run: bit for bit
    # those of the run stopped there (its last epoch is its best), and those after `best + 1`
    # epochs without early stopping (another program: equal up to float64 rounding, while
    # the parameters of the neighbouring epochs differ from them by more than 0.1)
    want, h_best = run(best + 1, patience=4)
    np.testing.assert_array_equal(h_best.val_loss, h.val_loss[: best + 1])
    jax.tree.map(np.testing.assert_array_equal, params, want)
    jax.tree.map(np.testing.assert_array_equal, h.best.params, want)
    plain, _ = run(best + 1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), params, plain)


def test_continuing_in_chunks_stops_exactly_where_the_whole_run_does():
    whole, hw = run(40, patience=4)
    params, opt_state, best, epoch, losses, val_losses = None, None, None, 0, [], []
    while True:
        params, h = run(3, params, opt_state=opt_state, start_epoch=epoch, patience=4, best=best)
        done = int(h.epoch) - epoch
        losses += list(h.loss[:done])
        val_losses += list(h.val_loss[:done])
        params, opt_state, best, epoch = params, h.opt_state, h.best, int(h.epoch)
        if int(h.stop_reason) != RAN_ALL_EPOCHS:
            break
    assert epoch == int(hw.epoch) and int(h.best_epoch) == int(hw.best_epoch)
    jax.tree.map(np.testing.assert_array_equal, params, whole)
    np.testing.assert_array_equal(losses, hw.loss[:epoch])
    np.testing.assert_array_equal(val_losses, hw.val_loss[:epoch])


def test_regression_has_no_accuracy_and_fit_without_validation_is_unchanged():
    net = jbp.MLP((3, 4, 1), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    _, h = jbp.fit(net, params, x, y, optimizer=OPT, epochs=3, validation=(x[:4], y[:4]))
    assert np.all(np.isnan(h.val_accuracy)) and np.all(np.isfinite(h.val_loss))
    _, plain = jbp.fit(net, params, x, y, optimizer=OPT, epochs=3)
    assert plain.val_loss is None and plain.val_accuracy is None and plain.best_epoch is None and plain.best is None


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"patience": 3}, ValueError, "patience needs validation=\\(x_val, y_val\\)"),
        ({"validation": (np.zeros((4, 5)), np.zeros(4, int))}, ValueError, "x has 5 features but the network expects 3"),
        ({"validation": np.zeros((4, 3))}, TypeError, "validation must be a pair \\(x_val, y_val\\)"),
        ({"validation": (np.zeros((4, 3)), np.zeros(4, int)), "patience": 0}, ValueError, "patience must be >= 1, got 0"),
        ({"validation": (np.full((4, 3), np.nan), np.zeros(4, int))}, ValueError, "validation x must be finite"),
        ({"validation": (np.zeros((4, 3)), np.zeros(4, int)), "best": (1, 2, 3)}, TypeError, "best must be the jbp.Best"),
    ],
)
def test_bad_validation_arguments(kwargs, error, message):
    x, y, _ = data()
    params = NET.init(jax.random.key(0), dtype=jnp.float64)
    with pytest.raises(error, match=message):
        jbp.fit(NET, params, x, y, optimizer=OPT, epochs=2, **kwargs)
