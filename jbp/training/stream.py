"""Training on data bigger than memory: :func:`fit_stream`.

The data stays where it is (a memory-mapped ``.npy``, ``np.load(path, mmap_mode="r")``,
or any iterator of batches) and reaches the device a chunk at a time: ``steps_per_chunk``
mini-batches, on which one compiled ``lax.scan`` takes that many steps of
:func:`jbp.train_step`. JAX dispatches the chunk and returns at once, so while the device
trains on chunk ``c`` the host reads chunk ``c + 1`` from the file and puts it on the
device; it then waits for chunk ``c - 1`` only, so at most two chunks are in memory. The
pages of a memory-mapped file are released from the process once read
(``madvise(MADV_DONTNEED)``; the OS may keep them cached), so the resident memory stays
near two chunks however large the file.

**Shuffling by blocks** (arrays): the rows are cut into blocks of ``block_size``
contiguous rows (default: ``batch_size``). Each epoch visits the blocks in the order of a
permutation drawn from ``jax.random.fold_in(key, epoch)``, reading each block as one
contiguous slice of the file; the rows of each chunk (``steps_per_chunk`` blocks' worth)
are then shuffled among themselves on the device, with ``fold_in(fold_in(key, epoch),
chunk + 1)``. So a mini-batch mixes rows of many blocks from all over the file, an
example's batch-mates come from the ``steps_per_chunk * batch_size`` rows of its chunk
(the shuffle window), and every epoch's order depends only on ``(key, epoch)``:
continuing with ``start_epoch``, ``opt_state`` (and ``best``) is exact. As in
:func:`jbp.fit`, the ``n % batch_size`` rows at the end of an epoch's order sit it out.

An **iterator** is used as it comes (shuffle it yourself): pass a function ``epoch ->
iterable of (x_batch, y_batch)`` for several epochs (deterministic in ``epoch`` for an
exact resume), or an iterable for one epoch.
"""

from __future__ import annotations

import itertools
import math
import mmap
from functools import partial
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jbp import _validate
from jbp.model import base
from jbp.layers.params import Params
from jbp.training import early_stopping, monitor as monitoring, stochastic
from jbp.training.fit import DIVERGED, EARLY_STOPPED, RAN_ALL_EPOCHS, REACHED_TOL, History
from jbp.training.update import step as one_step


def fit_stream(
    net,
    params: Params,
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int = 1,
    batch_size: Optional[int] = None,
    key: Optional[jax.Array] = None,
    steps_per_chunk: int = 64,
    block_size: Optional[int] = None,
    tol: Optional[float] = None,
    opt_state: Any = None,
    start_epoch: int = 0,
    validation: Optional[tuple] = None,
    patience: Optional[int] = None,
    best: Optional[early_stopping.Best] = None,
    loss_and_grad: Optional[Callable] = None,
    rule=None,
    feedback: Optional[tuple] = None,
    monitor: bool = False,
) -> tuple[Params, History]:
    """Trains ``net`` on data read a chunk at a time (see the module for the order).

    Args:
      net, params, optimizer, tol, opt_state, start_epoch, loss_and_grad: as for
        :func:`jbp.fit`.
      data: ``(x, y)`` arrays with examples on the first axis, typically memory-mapped
        (``np.load(path, mmap_mode="r")``); or a function ``epoch -> iterable of
        (x_batch, y_batch)``; or an iterable of batches (then ``epochs`` must be 1).
        Floating chunks are cast to the parameters' dtype.
      epochs: the most epochs to run in this call.
      batch_size: examples per step; for an iterator, that of its first batch by default.
      key: PRNG key of the shuffles (arrays: required) and of the stochastic layers'
        masks (dropout): step ``i`` of epoch ``e`` draws from
        :func:`jbp.training.stochastic.step_key` ``(key, e, i)``, as in :func:`jbp.fit`, so a
        resumed run stays exact.
      steps_per_chunk: mini-batches per compiled chunk (K of the ``lax.scan``).
      block_size: rows read as one contiguous slice (arrays); default ``batch_size``.
      validation, patience, best: as for :func:`jbp.fit`, evaluated after every epoch.
      rule, feedback: a learning rule and its state, as for :func:`jbp.fit`.
      monitor: per-layer statistics in ``history.layer_stats``, as for :func:`jbp.fit`
        (see :mod:`jbp.training.monitor`): every chunk's last step takes the norms and
        angles, and the epoch keeps its last chunk's, those of the epoch's last step.

    Each step is :func:`jbp.training.update.step`, the one training step of
    :func:`jbp.fit`. DP-SGD (Poisson samples of the whole data set) is :func:`jbp.fit`'s
    only.

    Returns:
      ``(params, history)`` as :func:`jbp.fit` returns them.
    """
    base.network(net)
    _validate.optimizer(optimizer)
    dtype = base.params(net, params)
    base.finite_params(params)
    epochs = _validate.integer("epochs", epochs, low=1, high=_validate.MAX_EPOCH)
    start_epoch = _validate.integer("start_epoch", start_epoch, low=0, high=_validate.MAX_EPOCH - epochs)
    steps_per_chunk = _validate.positive_int("steps_per_chunk", steps_per_chunk)
    _validate.function("loss_and_grad", loss_and_grad, "(params, x, y) -> (loss, grads)")
    if tol is not None:
        _validate.real("tol", tol)
    if opt_state is None:
        opt_state = optimizer.init(params)
    else:
        _validate.opt_state(optimizer, params, opt_state)
    validation, patience, best = early_stopping.check_args(net, params, validation, patience, best, start_epoch)
    rule, feedback, monitor = monitoring.fit_args(net, params, rule, feedback, monitor, loss_and_grad, None)
    if key is not None:
        _validate.prng_key("key", key)
    source = _source(data, epochs, batch_size, key, block_size, steps_per_chunk)

    losses = np.full(epochs, np.nan)
    val_losses, val_accuracies = np.full(epochs, np.nan), np.full(epochs, np.nan)
    layer_stats = monitoring.empty_history(net, params, epochs) if monitor else None
    reason, i = RAN_ALL_EPOCHS, 0
    while i < epochs and reason == RAN_ALL_EPOCHS:
        epoch = start_epoch + i
        watch = monitoring.start(net, params) if monitor else None
        new_params, new_opt_state, loss, watch = _run_epoch(
            net, optimizer, loss_and_grad, rule, feedback, key, epoch, params, opt_state, watch, source(epoch),
            net_dtype=dtype)
        losses[i] = loss
        if not (np.isfinite(loss) and bool(_all_finite(new_params))):
            reason = DIVERGED
            break
        if monitor:
            layer_stats = monitoring.record(layer_stats, i, _finish(net, watch, params, new_params))
        params, opt_state = new_params, new_opt_state
        if tol is not None and loss <= tol:
            reason = REACHED_TOL
        if validation is not None:
            best, vl, va, stop = _end_of_epoch(net, patience, params, best, jnp.int32(epoch), *validation)
            val_losses[i], val_accuracies[i] = float(vl), float(va)
            if reason == RAN_ALL_EPOCHS and bool(stop):
                reason = EARLY_STOPPED
        i += 1
    as_array = lambda a: jnp.asarray(a, dtype)
    history = History(as_array(losses), jnp.int32(start_epoch + i), jnp.int32(reason), opt_state,
                      layer_stats=layer_stats)
    if validation is None:
        return params, history
    if reason == EARLY_STOPPED:
        params = best.params
    return params, history._replace(val_loss=as_array(val_losses), val_accuracy=as_array(val_accuracies),
                                    best_epoch=best.epoch, best=best)


def _run_epoch(net, optimizer, loss_and_grad, rule, feedback, key, epoch, params, opt_state, watch, chunks,
               net_dtype):
    """Runs one epoch's chunks; the next chunk is read while the current one trains.
    Returns ``(params, opt_state, loss, watch)``."""
    chunk_losses, pending, first = [], None, 0
    chunks = iter(chunks)
    ready = next(chunks, None)
    while ready is not None:
        x, y, shuffle_key = ready
        x, y = _on_device(net, params, x, y, net_dtype)
        params, opt_state, watch, l = _chunk(net, optimizer, loss_and_grad, rule, params, opt_state, watch, feedback,
                                             x, y, shuffle_key, key, jnp.int32(epoch), jnp.int32(first))
        first += x.shape[0]
        ready = next(chunks, None)  # host work, while the device runs the chunk just dispatched
        if pending is not None:
            jax.block_until_ready(pending)  # at most this chunk and the next one wait on the device
        pending = l
        chunk_losses.append(l)
    if not chunk_losses:
        raise ValueError("data yielded no batches for an epoch; expected at least one (x_batch, y_batch)")
    return params, opt_state, float(jnp.mean(jnp.concatenate(chunk_losses))), watch


def _on_device(net, params, x, y, dtype):
    """A chunk ``(K, B, ...)`` checked as ``fit`` checks its data, floating parts cast to
    ``dtype``, and put on the device (asynchronously)."""
    cast = lambda a: a.astype(dtype) if np.issubdtype(a.dtype, np.floating) and a.dtype != dtype else a
    x, y = cast(np.asarray(x)), cast(np.asarray(y))
    K, B = x.shape[:2]
    flat_x, flat_y = base.inputs_and_targets(
        net, params, x.reshape(K * B, *x.shape[2:]), y.reshape(K * B, *y.shape[2:]))
    _validate.finite("x", flat_x)
    _validate.finite("y", flat_y)
    return flat_x.reshape(x.shape), flat_y.reshape(y.shape)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _chunk(net, optimizer, loss_and_grad, rule, params, opt_state, watch, feedback, x, y, shuffle_key, key, epoch,
           first):
    """K steps on a chunk ``x`` ``(K, B, ...)``, ``y`` ``(K, B, ...)``, its rows first shuffled
    among themselves if ``shuffle_key`` is given; the chunk's steps are the epoch's
    ``first, first + 1, ...``. With a monitor's ``watch`` (else ``None``) the last step
    takes the norms and angles (:func:`jbp.training.monitor.epoch_steps`)."""
    K, B = x.shape[:2]
    if shuffle_key is not None:
        order = jax.random.permutation(shuffle_key, K * B)
        x, y = (a.reshape(K * B, *a.shape[2:])[order].reshape(a.shape) for a in (x, y))

    def step(carry, batch, epoch, i, last=False):
        params, opt_state, watch = carry
        k = None if key is None else stochastic.step_key(key, epoch, first + i)
        params, opt_state, loss, watch = one_step(net, optimizer, rule, params, opt_state, feedback, *batch, k,
                                                  loss_and_grad=loss_and_grad, watch=watch, last=last)
        return (params, opt_state, watch), loss

    if watch is None:
        (params, opt_state, watch), losses = jax.lax.scan(
            lambda carry, batch_i: step(carry, batch_i[0], epoch, batch_i[1]),
            (params, opt_state, watch), ((x, y), jnp.arange(K)))
    else:
        (params, opt_state, watch), losses = monitoring.epoch_steps(
            step, (params, opt_state, watch), (x[:-1], y[:-1]), (x[-1], y[-1]), epoch)
    return params, opt_state, watch, losses


_finish = jax.jit(monitoring.finish, static_argnums=0)


@jax.jit
def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


@partial(jax.jit, static_argnums=(0, 1))
def _end_of_epoch(net, patience, params, best, epoch, x_val, y_val):
    loss, accuracy = early_stopping.evaluate(net, params, x_val, y_val)
    best = early_stopping.update(best, params, loss, epoch)
    return best, loss, accuracy, early_stopping.out_of_patience(best, epoch, patience)


def _source(data, epochs, batch_size, key, block_size, steps_per_chunk) -> Callable:
    """``epoch -> iterator of (x, y, shuffle_key)`` chunks, checked."""
    if isinstance(data, tuple) and len(data) == 2 and all(hasattr(a, "shape") for a in data):
        return _array_source(*data, batch_size, key, block_size, steps_per_chunk)
    if isinstance(data, (str, bytes, dict)) or not (callable(data) or hasattr(data, "__iter__")):
        raise TypeError(
            "data must be a pair of arrays (x, y), a function epoch -> iterable of (x_batch, y_batch), "
            f"or such an iterable; got {_validate.describe(data)}"
        )
    if not callable(data):
        if epochs != 1:
            raise ValueError(f"data is an iterable of batches, which runs one epoch, but epochs={epochs}; "
                             "pass a function epoch -> iterable for several")
        once = data
        data = lambda epoch: once
    if batch_size is not None:
        batch_size = _validate.positive_int("batch_size", batch_size)
    return lambda epoch: _iterator_chunks(iter(data(epoch)), batch_size, steps_per_chunk)


def _iterator_chunks(batches, batch_size, steps_per_chunk):
    index = 0
    while True:
        group = list(itertools.islice(batches, steps_per_chunk))
        if not group:
            return
        xs, ys = [], []
        for batch in group:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError(f"batch {index} must be a pair (x_batch, y_batch), got {_validate.describe(batch)}")
            x, y = map(np.asarray, batch)
            batch_size = batch_size or len(x)
            if len(x) != batch_size or len(y) != batch_size:
                raise ValueError(f"batch {index} has {len(x)} inputs and {len(y)} targets; expected "
                                 f"{batch_size} of each (batch_size, or the first batch's size)")
            xs.append(x)
            ys.append(y)
            index += 1
        yield np.stack(xs), np.stack(ys), None


def _release(a) -> None:
    """Drops the pages of a memory-mapped array from this process's resident memory once a
    chunk is copied out (they stay in the OS page cache): without it every page read stays
    mapped, and the resident size grows to the file's size over an epoch."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None)
    if a is not None and hasattr(mmap, "MADV_DONTNEED"):
        a.madvise(mmap.MADV_DONTNEED)


def _array_source(x, y, batch_size, key, block_size, steps_per_chunk) -> Callable:
    n = len(x)
    if len(y) != n:
        raise ValueError(f"data's x has {n} examples but y has {len(y)}; they must match")
    if batch_size is None:
        raise ValueError("batch_size is required to stream arrays (examples per step)")
    batch_size = _validate.positive_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data (x has {n} rows)")
    if key is None:
        raise ValueError("key is required to shuffle streamed arrays; pass key=jax.random.key(seed)")
    _validate.prng_key("key", key)
    block_size = batch_size if block_size is None else _validate.positive_int("block_size", block_size)
    n_blocks = math.ceil(n / block_size)
    steps = n // batch_size
    rows_per_chunk = steps_per_chunk * batch_size

    def chunks(epoch):
        epoch_key = jax.random.fold_in(key, epoch)
        blocks = np.asarray(jax.random.permutation(epoch_key, n_blocks))
        starts = blocks * block_size
        ends = np.minimum(starts + block_size, n)
        offsets = np.concatenate([[0], np.cumsum(ends - starts)])  # where each block starts in the epoch's order
        for c, a in enumerate(range(0, steps * batch_size, rows_per_chunk)):
            b = min(a + rows_per_chunk, steps * batch_size)
            first, last = np.searchsorted(offsets, a, "right") - 1, np.searchsorted(offsets, b, "left")
            pieces = [(starts[j] + max(a - offsets[j], 0), starts[j] + min(b, offsets[j + 1]) - offsets[j])
                      for j in range(first, last)]
            xs = np.concatenate([x[s:e] for s, e in pieces])
            ys = np.concatenate([y[s:e] for s, e in pieces])
            _release(x)
            _release(y)
            k = (b - a) // batch_size
            yield (xs.reshape(k, batch_size, *xs.shape[1:]), ys.reshape(k, batch_size, *ys.shape[1:]),
                   jax.random.fold_in(epoch_key, c + 1))

    return chunks
