"""Training mode for networks with stochastic layers (dropout): one fresh key per step.

A network whose ``takes_key`` is true (:class:`jbp.Sequential`) trains with
``train=True`` and a PRNG key per step. :func:`step_key` derives that key from
:func:`jbp.fit`'s ``key`` as a pure function of ``(key, epoch, step)``, so a run that is
stopped and resumed (``start_epoch``, ``opt_state``) draws exactly the masks of an
uninterrupted one. The keys come from their own stream: the shuffles use
``fold_in(key, epoch)``, the steps ``fold_in(fold_in(fold_in(key, STREAM), epoch), step)``
with ``STREAM`` above every epoch index, so the two never coincide.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax

Array = jax.Array

#: ``fold_in`` data of the per-step keys' stream; epochs are int32, so no epoch is it.
STREAM = 2**32 - 1


def step_key(key: Array, epoch: Array, step: Array) -> Array:
    """The key of step ``step`` of epoch ``epoch`` (both absolute indices)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, STREAM), epoch), step)


def training(net, key: Optional[Array]) -> dict:
    """The keyword arguments of a training step's loss and backward pass:
    ``{"key": key, "train": True}`` for a network that takes them, ``{}`` for one that does not."""
    return {"key": key, "train": True} if getattr(net, "takes_key", False) else {}


def loss_and_grad(net, loss_and_grad_fn: Optional[Callable], params, x, y, key: Optional[Array]):
    """One step's ``(loss, grads)``: ``net.loss_and_grad`` (or ``loss_and_grad_fn``), in
    training mode with ``key`` for a network that takes one, as before for one that does not."""
    fn = loss_and_grad_fn or net.loss_and_grad
    return fn(params, x, y, **training(net, key))
