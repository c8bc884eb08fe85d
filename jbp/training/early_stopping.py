"""Validation and early stopping for :func:`jbp.fit` (and :func:`jbp.fit_stream`).

After every epoch the validation loss (and accuracy, for classifiers) is evaluated inside
the compiled loop. :class:`Best` remembers the parameters of the epoch with the lowest
validation loss so far; ``patience=N`` stops training once ``N`` epochs have passed
without a strictly lower validation loss, and then returns those parameters.

Everything that decides the stop is in :class:`Best` (its ``epoch`` also gives the epochs
since the last improvement), so a run continued with ``best=history.best`` (and
``start_epoch``, ``opt_state``) stops at the same epoch, with the same parameters, as an
uninterrupted one.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.model import base

Array = jax.Array


class Best(NamedTuple):
    """The best epoch so far, by validation loss.

    Attributes:
      params: its parameters.
      val_loss: its validation loss (``inf`` before any epoch).
      epoch: its absolute index; ``start_epoch - 1`` (the parameters given) before any
        epoch has improved on ``inf``.
    """

    params: Any
    val_loss: Array
    epoch: Array


def init_best(params, start_epoch, dtype) -> Best:
    """The state before the first epoch: the given parameters, at loss ``inf``."""
    return Best(params, jnp.asarray(jnp.inf, dtype), jnp.asarray(start_epoch, jnp.int32) - 1)


def evaluate(net, params, x_val, y_val) -> tuple[Array, Array]:
    """Validation loss and accuracy (NaN for a regression network), traceable."""
    loss = net.loss(params, x_val, y_val)
    if net.loss_name == "mse":
        return loss, jnp.asarray(jnp.nan, loss.dtype)
    return loss, net.accuracy(params, x_val, y_val).astype(loss.dtype)


def update(best: Best, params, val_loss: Array, epoch: Array) -> Best:
    """``best`` after an epoch: replaced by this epoch's parameters if its loss is lower."""
    improved = val_loss < best.val_loss  # NaN never improves
    pick = lambda new, old: jnp.where(improved, new, old)
    return Best(
        jax.tree.map(pick, params, best.params),
        pick(val_loss.astype(best.val_loss.dtype), best.val_loss),
        pick(jnp.asarray(epoch, jnp.int32), best.epoch),
    )


def out_of_patience(best: Best, epoch: Array, patience: Optional[int]) -> Array:
    """True once ``patience`` epochs up to ``epoch`` (absolute index) have not improved."""
    if patience is None:
        return jnp.asarray(False)
    return epoch - best.epoch >= patience


def check_args(net, params, validation, patience, best, start_epoch) -> tuple:
    """Checks ``validation``, ``patience`` and ``best``; returns them ready for the loop
    (``validation`` as ``(x_val, y_val)`` in the params' dtype, ``best`` initialised)."""
    if validation is None:
        if patience is not None:
            raise ValueError("patience needs validation=(x_val, y_val): early stopping watches the validation loss")
        if best is not None:
            raise ValueError("best continues early stopping and needs validation=(x_val, y_val)")
        return None, None, None
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise TypeError(f"validation must be a pair (x_val, y_val), got {_validate.describe(validation)}")
    x_val, y_val = base.inputs_and_targets(net, params, *validation)
    _validate.finite("validation x", x_val)
    _validate.finite("validation y", y_val)
    if patience is not None:
        patience = _validate.positive_int("patience", patience)
    dtype = jax.tree.leaves(params)[0].dtype
    if best is None:
        best = init_best(params, start_epoch, dtype)
    else:
        if not isinstance(best, Best):
            raise TypeError(f"best must be the jbp.Best of a previous history (history.best), got "
                            f"{type(best).__name__}")
        _validate.same_tree("best.params", best.params, "params", params)
        best = Best(best.params, jnp.asarray(best.val_loss, dtype), jnp.asarray(best.epoch, jnp.int32))
    return (x_val, y_val), patience, best
