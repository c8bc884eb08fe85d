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
from jbp.model import base
from jbp.training import distributed, early_stopping, parallel, privacy as dp, stochastic
from jbp.model.base import Network
from jbp.model import rules
from jbp.model.rules import Rule
from jbp.training import monitor as monitoring
from jbp.layers.params import Params
from jbp.training.update import state_args, step as one_step

Array = jax.Array

#: ``History.stop_reason`` codes.
RAN_ALL_EPOCHS, REACHED_TOL, DIVERGED, EARLY_STOPPED = 0, 1, 2, 3
STOP_REASONS = ("ran all epochs", "reached tol", "diverged: the training loss became non-finite",
                "early stopping: the validation loss stopped improving")


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
      privacy: with ``fit(..., privacy=...)``, the :class:`jbp.privacy.PrivacySpent`
        of the run's steps (see :meth:`epsilon`); else ``None``.
      val_loss, val_accuracy: ``(epochs,)`` like ``loss``: each epoch's validation loss
        and accuracy (NaN for regression), after its last step; ``None`` without
        ``validation``.
      best_epoch: absolute index of the epoch with the lowest validation loss so far
        (``start_epoch - 1`` if none improved on the start); ``None`` without validation.
      best: :class:`jbp.Best`, what early stopping carries: pass it as ``best`` to
        continue a run exactly; ``best.params`` are the best epoch's parameters.
      layer_stats: with ``monitor=True``, a dict of per-layer statistics, each
        ``(epochs, layers)``, indexed like ``loss`` (see :mod:`jbp.training.monitor` for
        the keys and what they mean); ``None`` otherwise.
      state: with ``fit(..., state=...)``, the carried state after the last step (before
        the failing epoch, on divergence): pass it as ``state`` to continue exactly;
        else ``None``.
    """

    loss: Array
    epoch: Array
    stop_reason: Array
    opt_state: Any
    val_loss: Any = None
    val_accuracy: Any = None
    best_epoch: Any = None
    best: Any = None
    privacy: Optional[dp.PrivacySpent] = None
    layer_stats: Optional[dict] = None
    state: Any = None

    def epsilon(self, delta: Optional[float] = None) -> float:
        """DP-SGD's ``ε`` at ``delta`` (default the ``DPSGD``'s) after all epochs so far."""
        if self.privacy is None:
            raise ValueError("epsilon needs a history of fit(..., privacy=jbp.DPSGD(...)); this run was not private")
        return self.privacy.epsilon(delta)

    @property
    def reason(self) -> str:
        """``stop_reason`` in words (needs concrete values, not inside ``jit``)."""
        return STOP_REASONS[int(self.stop_reason)]

    @property
    def diverged(self) -> bool:
        return int(self.stop_reason) == DIVERGED


def _loss_dtype(params, x):
    """The dtype of losses: the parameters' (inputs may be integer token ids), or the
    inputs' for a network without parameters."""
    leaves = jax.tree.leaves(params)
    return leaves[0].dtype if leaves else x.dtype


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
    validation: Optional[tuple] = None,
    patience: Optional[int] = None,
    best: Optional[early_stopping.Best] = None,
    privacy: Optional[dp.DPSGD] = None,
    rule: Optional[Rule] = None,
    feedback: Optional[tuple] = None,
    monitor: bool = False,
    state: Optional[tuple] = None,
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
        single-device one up to rounding, also under a ``rule`` (each device takes the
        rule's update on its slice; ``monitor=True`` is refused). A mesh over the devices
        of several processes (after ``jax.distributed.initialize``) trains on the same
        batches, each process feeding only its slice of each; see
        :mod:`jbp.training.distributed`.
      privacy: a :class:`jbp.DPSGD` to train with DP-SGD: each step is then a Poisson
        sample of expected size ``batch_size``, clipped per example, with Gaussian noise
        (see :mod:`jbp.training.privacy`); ``history.epsilon()`` is the privacy spent.
        Needs ``key``; refuses ``tol``, ``loss_and_grad`` and ``mesh``. A
        :class:`jbp.Sequential` trains in training mode (dropout), a key per step.
      validation: ``(x_val, y_val)``, evaluated after every epoch (``history.val_loss``,
        ``history.val_accuracy``, ``history.best_epoch``); see
        :mod:`jbp.training.early_stopping`.
      patience: with ``validation``, stop once this many epochs in a row have not lowered
        the validation loss, and return the best epoch's parameters
        (``history.reason`` says so). Without it all epochs run and the last parameters
        are returned (the best are in ``history.best.params``).
      best: ``history.best`` of the previous call, to continue a run with validation
        exactly (with ``start_epoch`` and ``opt_state``).
      rule: a learning rule of :mod:`jbp.rules` (default backprop): each step's update
        direction is the rule's in place of the gradient. Static, like ``optimizer``.
      feedback: the rule's fixed feedback weights, ``rule.init(net, params)`` (drawn
        from the rule's key when not given); pass the saved ones to continue a run.
      monitor: record per-layer statistics in ``history.layer_stats`` (see
        :mod:`jbp.training.monitor`), inside the compiled loop.
      state: truncated backpropagation through time with a carried state, as a stateful
        Keras model trains: ``net.init_state(batch_size)`` (or ``history.state`` to
        continue). Then the rows are not shuffled: ``x`` holds ``batch_size`` parallel
        streams cut into consecutive windows, row ``k * batch_size + i`` being window
        ``k`` of stream ``i`` (:func:`jbp.datasets.text.streams` lays a text out so),
        step ``k`` takes rows ``k * batch_size`` to ``(k + 1) * batch_size``, and the
        state after each step is the next step's initial state, across epochs too; no
        gradient crosses a window's edge. Needs ``batch_size``; refuses ``mesh``,
        ``privacy``, ``monitor`` and a learning rule other than backprop.

    Returns:
      ``(params, history)``, see :class:`History`. The parameters are always finite:
      on divergence they are those from before the failing epoch.

    Raises:
      TypeError, ValueError: a bad argument, named in the message (see README, "What
        jbp checks for you"): among others NaN or inf in ``params``, ``x`` or ``y``, and
        an ``opt_state`` that does not fit ``optimizer.init(params)``; on a mesh that
        spans processes, arguments that differ between processes.
      ProcessLost: on a mesh that spans processes, another process died.
    """
    x, y, epochs, batch_size = fit_args(
        net, params, x, y, optimizer, epochs, batch_size, key, tol, opt_state, start_epoch,
        loss_and_grad, shuffle=state is None,
    )
    if privacy is not None:
        dp.fit_args(privacy, net, params, x, y, batch_size, key, tol, loss_and_grad, mesh)
    validation, patience, best = early_stopping.check_args(net, params, validation, patience, best, start_epoch)
    rule, feedback, monitor = monitoring.fit_args(net, params, rule, feedback, monitor, loss_and_grad, mesh)
    if privacy is not None and (monitor or not rules.is_backprop(rule)):
        raise ValueError(f"privacy cannot be combined with {'monitor=True' if monitor else f'rule {rules.rule_name(rule)!r}'}; "
                         "DP-SGD clips backprop's per-example gradients")
    if state is not None:
        clash = ("mesh" if mesh is not None else "privacy" if privacy is not None else "monitor=True" if monitor
                 else None if rules.is_backprop(rule) else f"rule {rules.rule_name(rule)!r}")
        if clash:
            raise ValueError(f"state (truncated BPTT) cannot be combined with {clash}; it trains one stream of "
                             "windows per row of the batch, with backprop")
        state = state_args(net, optimizer, params, x[:batch_size], state)
    if opt_state is None:
        opt_state = optimizer.init(params)
    tol = jnp.asarray(-jnp.inf if tol is None else tol, dtype=_loss_dtype(params, x))
    if mesh is not None:
        parallel.check_mesh(mesh, batch_size)
        if distributed.spans_processes(mesh):  # several processes: each feeds its slices
            if validation is not None:
                raise ValueError("validation is not supported with a mesh that spans processes; "
                                 "evaluate the returned parameters instead")
            r = distributed.fit_epochs(net, optimizer, epochs, batch_size, loss_and_grad, mesh, params,
                                       x, y, key, tol, opt_state, start_epoch, rule, feedback)
            reason = DIVERGED if r.diverged else REACHED_TOL if r.reached_tol else RAN_ALL_EPOCHS
            return r.params, History(r.loss, jnp.int32(start_epoch + r.epochs_done), jnp.int32(reason), r.opt_state)
        loss_and_grad = parallel.DataParallel(net, mesh, loss_and_grad, rule)
        params, x, y, key, opt_state, validation, best, feedback = parallel.replicate(
            mesh, (params, x, y, key, opt_state, validation, best, feedback))
    return _fit(net, optimizer, epochs, batch_size, loss_and_grad, patience, rule, monitor, params, x, y, key,
                tol, opt_state, jnp.asarray(start_epoch, jnp.int32), validation, best, feedback, state, privacy=privacy)


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6, 7), static_argnames=("privacy",))
def _fit(net, optimizer, epochs, batch_size, loss_and_grad, patience, rule, monitor, params, x, y, key, tol,
         opt_state, start_epoch, validation, best, feedback, state, privacy=None):
    n = x.shape[0]
    steps = n // batch_size

    def step(carry, batch, epoch, i, last=False):
        params, opt_state, watch, state = carry
        # a fresh key per step for stochastic layers, from (key, epoch, step) alone
        k = None if key is None else stochastic.step_key(key, epoch, i)
        params, opt_state, loss, watch = one_step(net, optimizer, rule, params, opt_state, feedback, *batch, k,
                                                  loss_and_grad=loss_and_grad, watch=watch, last=last, state=state)
        if state is not None:  # truncated BPTT: the state after this window starts the next
            loss, state = loss
        return (params, opt_state, watch, state), loss

    def run_epoch(start_params, opt_state, epoch, state):
        if privacy is not None:  # DP-SGD: Poisson samples, clipped, noisy
            return dp.private_epoch(net, optimizer, privacy, batch_size, start_params, opt_state, x, y,
                                    jax.random.fold_in(key, epoch)) + (None, None)
        sums = monitoring.start(net, start_params) if monitor else None
        carry = (start_params, opt_state, sums, state)
        if batch_size == n:  # full batch: the order does not matter, skip the shuffle
            (params, opt_state, sums, state), loss = step(carry, (x, y), epoch, 0, last=True)
        else:
            if state is None:
                # Permute once, then scan over the batches as slices (faster than gathering
                # x[idx] in every step; the same batches in the same order).
                order = jax.random.permutation(jax.random.fold_in(key, epoch), n)[: steps * batch_size]
            else:  # carried state: the streams' consecutive windows, in order
                order = slice(0, steps * batch_size)
            batched = lambda idx: jax.tree.map(lambda a: a[idx].reshape(-1, batch_size, *a.shape[1:]), (x, y))
            if monitor:  # the same scan, its last step apart: it takes the norms and angles (no state)
                last = (steps - 1) * batch_size
                (params, opt_state, sums, state), losses = monitoring.epoch_steps(
                    step, carry, batched(order[:last]), jax.tree.map(lambda a: a[order[last:]], (x, y)), epoch)
            else:
                (params, opt_state, sums, state), losses = jax.lax.scan(
                    lambda carry, batch_i: step(carry, batch_i[0], epoch, batch_i[1]), carry,
                    (batched(order), jnp.arange(steps)),
                )
            loss = jnp.mean(losses)
        stats = monitoring.finish(net, sums, start_params, params) if monitor else None
        return params, opt_state, loss, stats, state

    def running(carry):
        i, _, _, _, reason, _, _, _ = carry
        return (i < epochs) & (reason == RAN_ALL_EPOCHS)

    def body(carry):
        i, params, opt_state, losses, _, val, layer_stats, state = carry
        new_params, new_opt_state, loss, stats, new_state = run_epoch(params, opt_state, start_epoch + i, state)
        ok = jnp.isfinite(loss) & _all_finite(new_params)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        reason = jnp.where(ok, jnp.where(loss <= tol, REACHED_TOL, RAN_ALL_EPOCHS), DIVERGED)
        if validation is not None:
            val, stop = _validate_epoch(net, patience, validation, val, new_params, start_epoch + i, i, ok)
            reason = jnp.where(ok & (reason == RAN_ALL_EPOCHS) & stop, EARLY_STOPPED, reason)
        return (
            i + ok.astype(i.dtype),
            keep(new_params, params),
            keep(new_opt_state, opt_state),
            losses.at[i].set(loss.astype(losses.dtype)),
            reason.astype(jnp.int32),
            val,
            monitoring.record(layer_stats, i, stats),
            keep(new_state, state),
        )

    losses = jnp.full((epochs,), jnp.nan, _loss_dtype(params, x))
    val = None if validation is None else (best, losses, losses)
    layer_stats = monitoring.empty_history(net, params, epochs) if monitor else None
    init = (jnp.int32(0), params, opt_state, losses, jnp.int32(RAN_ALL_EPOCHS), val, layer_stats, state)
    i, params, opt_state, losses, reason, val, layer_stats, state = jax.lax.while_loop(running, body, init)
    # A diverged epoch touched the data too: it counts for privacy.
    spent = None if privacy is None else dp.spent(privacy, n, batch_size, start_epoch + i + (reason == DIVERGED))
    if validation is None:
        return params, History(losses, start_epoch + i, reason, opt_state, privacy=spent, layer_stats=layer_stats,
                               state=state)
    best, val_losses, val_accuracies = val
    # Early stopping returns the best epoch's parameters.
    params = jax.tree.map(lambda b, p: jnp.where(reason == EARLY_STOPPED, b, p), best.params, params)
    return params, History(losses, start_epoch + i, reason, opt_state, val_losses, val_accuracies,
                           best.epoch, best, spent, layer_stats, state)


def _validate_epoch(net, patience, validation, val, params, epoch, i, ok):
    """Evaluates the epoch's parameters on the validation data; updates the best (unless
    the epoch diverged) and says whether patience ran out."""
    best, val_losses, val_accuracies = val
    loss, accuracy = early_stopping.evaluate(net, params, *validation)
    new_best = early_stopping.update(best, params, loss, epoch)
    best = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_best, best)
    val = (best, val_losses.at[i].set(loss.astype(val_losses.dtype)),
           val_accuracies.at[i].set(accuracy.astype(val_accuracies.dtype)))
    return val, early_stopping.out_of_patience(best, epoch, patience)


# --- Argument checks at the boundary. ---------------------------------------------


def fit_args(net, params_, x, y, optimizer_, epochs, batch_size, key, tol, opt_state_,
             start_epoch, loss_and_grad, shuffle: bool = True) -> tuple:
    """All of :func:`jbp.fit`'s checks; returns ``(x, y, epochs, batch_size)``."""
    base.network(net)
    _validate.optimizer(optimizer_)
    x, y = base.inputs_and_targets(net, params_, x, y)
    base.finite_params(params_)
    _validate.finite("x", x)
    _validate.finite("y", y)
    epochs = _validate.integer("epochs", epochs, low=1, high=_validate.MAX_EPOCH)
    n = x.shape[0]
    batch_size = n if batch_size is None else _validate.positive_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data (x has {n} rows)")
    if key is None and batch_size < n and shuffle:
        raise ValueError(
            "key is required to shuffle mini-batches (batch_size < number of examples); "
            "pass key=jax.random.key(seed)"
        )
    if key is not None:
        _validate.prng_key("key", key)
    _validate.integer("start_epoch", start_epoch, low=0, high=_validate.MAX_EPOCH - epochs,
            why=f" so that start_epoch + epochs ({epochs}) fits the int32 epoch counter")
    if tol is not None:
        _validate.real("tol", tol)
    _validate.function("loss_and_grad", loss_and_grad, "(params, x, y) -> (loss, grads)")
    if opt_state_ is not None:
        _validate.opt_state(optimizer_, params_, opt_state_)
    return x, y, epochs, batch_size
