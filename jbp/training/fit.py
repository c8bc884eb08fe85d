"""The seed's iterative loop: :func:`fit` repeats forward, backward and update.

The whole loop runs compiled: a ``lax.while_loop`` over epochs (it stops early at
``tol`` or on divergence) around a ``lax.scan`` over the epoch's mini-batches. There is
no Python per step, it compiles once per (network, optimizer, epochs, batch size,
shapes), and it is a pure function of its arguments, so it composes with ``jax.jit``
and ``jax.vmap``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.model.base import Network
from jbp.model.rules import Rule
from jbp.training import monitor as monitoring
from jbp.training import parallel, stochastic
from jbp.model.params import Params
from jbp.training.update import train_step

Array = jax.Array

#: ``History.stop_reason`` codes.
RAN_ALL_EPOCHS, REACHED_TOL, DIVERGED = 0, 1, 2
STOP_REASONS = ("ran all epochs", "reached tol", "diverged: the training loss became non-finite")


class History(NamedTuple):
    """What :func:`fit` did.

    Attributes:
      loss: ``(epochs,)``; ``loss[i]`` is the mean of the mini-batch losses of epoch
        ``start_epoch + i`` (each taken before that step's update). NaN for epochs not
        run. On divergence, the entry of the failing epoch holds its non-finite loss.
      epoch: the absolute index of the next epoch to run: pass it as ``start_epoch``,
        with ``opt_state``, to continue exactly where this run stopped.
      stop_reason: ``RAN_ALL_EPOCHS`` (0), ``REACHED_TOL`` (1) or ``DIVERGED`` (2);
        :attr:`reason` says it in words.
      opt_state: the optimizer state at the end (before the failing epoch, on divergence).
      layer_stats: with ``monitor=True``, a dict of per-layer statistics, each
        ``(epochs, layers)``, indexed like ``loss`` (see :mod:`jbp.training.monitor` for
        the keys and what they mean); ``None`` otherwise.
    """

    loss: Array
    epoch: Array
    stop_reason: Array
    opt_state: Any
    layer_stats: Optional[dict] = None

    @property
    def reason(self) -> str:
        """``stop_reason`` in words (needs concrete values, not inside ``jit``)."""
        return STOP_REASONS[int(self.stop_reason)]

    @property
    def diverged(self) -> bool:
        return int(self.stop_reason) == DIVERGED


def fit(
    net: Network,
    params: Params,
    x: Array,
    y: Array,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: Optional[int] = None,
    key: Optional[Array] = None,
    tol: Optional[float] = None,
    opt_state: Any = None,
    start_epoch: int = 0,
    loss_and_grad: Optional[Callable] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    rule: Optional[Rule] = None,
    feedback: Optional[tuple] = None,
    monitor: bool = False,
) -> tuple[Params, History]:
    """Trains ``net`` by backpropagation: the seed's loop, compiled end to end.

    Each epoch shuffles the examples with ``jax.random.fold_in(key, epoch)`` (so every
    epoch's order depends only on ``key`` and its index), cuts them into
    ``n // batch_size`` mini-batches (the remainder of a shuffle is left out of that
    epoch) and takes one :func:`jbp.train_step` per mini-batch. Training stops after
    ``epochs`` epochs, or at the end of the first epoch whose mean loss is ``<= tol``,
    or at the first epoch whose loss or parameters become non-finite: then the
    parameters from before that epoch are returned and ``history`` says so.

    Args:
      net: the network (:class:`jbp.MLP` or :class:`jbp.Sequential`).
      params: initial parameters (``net.init``).
      x: inputs ``(n, sizes[0])`` (``(n, *input_shape)`` for a Sequential).
      y: targets for ``net``'s loss.
      optimizer: any optax optimizer; ``optax.sgd(lr)`` is exactly the seed's BP7.
      epochs: the most epochs to run in this call.
      batch_size: examples per step; ``None`` (or ``n``) is full-batch gradient
        descent, 1 is online SGD.
      key: PRNG key for the shuffles; needed unless full-batch. A network with
        stochastic layers (:class:`jbp.Sequential` with dropout) trains with
        ``train=True`` and a fresh key per step derived from it and ``(epoch, step)``
        (:func:`jbp.training.stochastic.step_key`), so a resumed run stays exact.
      tol: stop once an epoch's mean training loss is ``<= tol``.
      opt_state: optimizer state to continue from (default ``optimizer.init(params)``).
      start_epoch: index of the first epoch, to continue a run (``history.epoch``).
      loss_and_grad: ``(params, x, y) -> (loss, grads)`` in place of the hand-derived
        ``net.loss_and_grad`` (see :func:`jbp.train_step`); a static argument, so keep
        one function object to avoid recompiling.
      mesh: a device mesh with an axis ``"data"`` to train data parallel: each batch is
        split over that axis (``batch_size`` must be a multiple of its size) and the
        parameters stay replicated; see :mod:`jbp.training.parallel`. The result equals the
        single-device one up to rounding.
      rule: a learning rule of :mod:`jbp.rules` (default backprop): each step's update
        direction is the rule's in place of the gradient. Static, like ``optimizer``.
      feedback: the rule's fixed feedback weights, ``rule.init(net, params)`` (drawn
        from the rule's key when not given); pass the saved ones to continue a run.
      monitor: record per-layer statistics in ``history.layer_stats`` (see
        :mod:`jbp.training.monitor`), inside the compiled loop.

    Returns:
      ``(params, history)``, see :class:`History`. The parameters are always finite:
      on divergence they are those from before the failing epoch.

    Raises:
      TypeError, ValueError: a bad argument, named in the message (see README, "What
        jbp checks for you"): among others NaN or inf in ``params``, ``x`` or ``y``, and
        an ``opt_state`` that does not fit ``optimizer.init(params)``.
    """
    x, y, epochs, batch_size = _validate.fit_args(
        net, params, x, y, optimizer, epochs, batch_size, key, tol, opt_state, start_epoch,
        loss_and_grad,
    )
    rule, feedback, monitor = monitoring.fit_args(net, params, rule, feedback, monitor, loss_and_grad, mesh)
    if opt_state is None:
        opt_state = optimizer.init(params)
    tol = jnp.asarray(-jnp.inf if tol is None else tol, dtype=x.dtype)
    if mesh is not None:
        parallel.check_mesh(mesh, batch_size)
        loss_and_grad = parallel.DataParallel(net, mesh, loss_and_grad)
        params, x, y, key, opt_state = parallel.replicate(mesh, (params, x, y, key, opt_state))
    return _fit(net, optimizer, epochs, batch_size, loss_and_grad, rule, monitor, params, x, y, key,
                tol, opt_state, jnp.asarray(start_epoch, jnp.int32), feedback)


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _fit(net, optimizer, epochs, batch_size, loss_and_grad, rule, monitor, params, x, y, key, tol,
         opt_state, start_epoch, feedback):
    n = x.shape[0]
    steps = n // batch_size

    def step(carry, batch, epoch, i):
        params, opt_state, sums = carry
        # a fresh key per step for stochastic layers, from (key, epoch, step) alone
        k = stochastic.step_key(key, epoch, i) if net.takes_key and key is not None else None
        if monitor:  # the same step, adding its per-layer statistics to the epoch's sums
            params, opt_state, loss, sums = monitoring.train_step(
                net, optimizer, rule, params, opt_state, feedback, *batch, sums)
        else:
            params, opt_state, loss = train_step(net, optimizer, params, opt_state, *batch, loss_and_grad,
                                                 key=k, rule=rule, feedback=feedback)
        return (params, opt_state, sums), loss

    def run_epoch(start_params, opt_state, epoch):
        sums = monitoring.start(start_params) if monitor else None
        if batch_size == n:  # full batch: the order does not matter, skip the shuffle
            (params, opt_state, sums), loss = step((start_params, opt_state, sums), (x, y), epoch, 0)
        else:
            order = jax.random.permutation(jax.random.fold_in(key, epoch), n)
            batches = order[: steps * batch_size].reshape(steps, batch_size)
            (params, opt_state, sums), losses = jax.lax.scan(
                lambda carry, idx_i: step(carry, (x[idx_i[0]], y[idx_i[0]]), epoch, idx_i[1]),
                (start_params, opt_state, sums), (batches, jnp.arange(steps)),
            )
            loss = jnp.mean(losses)
        stats = monitoring.finish(net, sums, start_params, params, steps) if monitor else None
        return params, opt_state, loss, stats

    def running(carry):
        i, _, _, _, reason, _ = carry
        return (i < epochs) & (reason == RAN_ALL_EPOCHS)

    def body(carry):
        i, params, opt_state, losses, _, layer_stats = carry
        new_params, new_opt_state, loss, stats = run_epoch(params, opt_state, start_epoch + i)
        ok = jnp.isfinite(loss) & _all_finite(new_params)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        reason = jnp.where(ok, jnp.where(loss <= tol, REACHED_TOL, RAN_ALL_EPOCHS), DIVERGED)
        reason = reason.astype(jnp.int32)
        return (
            i + ok.astype(i.dtype),
            keep(new_params, params),
            keep(new_opt_state, opt_state),
            losses.at[i].set(loss.astype(losses.dtype)),
            reason,
            monitoring.record(layer_stats, i, stats),
        )

    losses = jnp.full((epochs,), jnp.nan, x.dtype)
    layer_stats = monitoring.empty_history(params, epochs) if monitor else None
    init = (jnp.int32(0), params, opt_state, losses, jnp.int32(RAN_ALL_EPOCHS), layer_stats)
    i, params, opt_state, losses, reason, layer_stats = jax.lax.while_loop(running, body, init)
    return params, History(losses, start_epoch + i, reason, opt_state, layer_stats)
