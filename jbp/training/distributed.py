"""Data-parallel training across processes: ``jbp.fit(..., mesh=mesh)`` on a mesh whose
devices belong to several processes (one per host, after ``jax.distributed.initialize``).

Every process runs the same program on the same arguments (multi-controller JAX). The
batches are those of the single-process :func:`jbp.fit`: each process computes the
epoch's shuffle, ``jax.random.permutation(jax.random.fold_in(key, epoch), n)``, itself
(it is the same everywhere), cuts it into the same global batches, and reads from ``x``
and ``y`` only the rows of its own contiguous slice of every global batch: the slice
that its devices hold in the mesh's ``"data"`` axis. ``jax.make_array_from_process_local_data``
joins the slices into the epoch's global batches, ``(steps, batch_size, ...)`` split
over ``"data"``, and the compiled epoch runs :class:`jbp.training.parallel.DataParallel`'s
step on them: each device computes the hand-derived gradients (BP1-BP6) of its slice,
``lax.pmean`` averages them over all devices of all processes, and every device applies
the same update to parameters that stay replicated. A device never holds more of the
data than its slice of one epoch's batches.

Before anything else runs, :func:`check_same` compares a description of the call across
processes (shapes, dtypes, network, checksums of the optimizer state and parameters):
a process whose data or network differs is a clear ``ValueError`` in every process,
instead of a collective that waits forever or averages mismatched gradients.

The loop over epochs runs in Python, one compiled call per epoch (the batches of the
next epoch are built while the current one runs); the stop rules (``tol``, divergence)
are :func:`jbp.fit`'s.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jbp.model.base import Network
from jbp.layers.params import Params
from jbp.training import parallel, stochastic
from jbp.model import rules
from jbp.training.update import step as one_step

Array = jax.Array


class ProcessLost(RuntimeError):
    """A collective across processes failed: another process died or cannot be reached."""


def spans_processes(mesh: Mesh) -> bool:
    """True if some of ``mesh``'s devices belong to another process."""
    me = jax.process_index()
    return any(d.process_index != me for d in mesh.devices.flat)


def check_same(what: str, description: dict) -> None:
    """Checks that every process passes the same ``description`` (a JSON-able dict).

    Two small all-gathers of fixed shape (the length of each process's JSON, then the
    JSON bytes) run first, so they cannot deadlock on a mismatch; the comparison then
    names each entry that differs and the processes it differs in.

    Raises:
      ValueError: some process's description differs from process 0's (raised in
        every process, with the same message).
    """
    text = json.dumps(description, sort_keys=True, default=str).encode()
    lengths = multihost_utils.process_allgather(np.array([len(text)], np.int64)).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: len(text)] = np.frombuffer(text, np.uint8)
    gathered = multihost_utils.process_allgather(padded).reshape(len(lengths), -1)
    seen = [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths)]
    differences = [
        f"{key} is {seen[0].get(key)} in process 0 but {other.get(key)} in process {p}"
        for p, other in enumerate(seen[1:], start=1)
        for key in sorted(set(seen[0]) | set(other))
        if seen[0].get(key) != other.get(key)
    ]
    if differences:
        raise ValueError(
            f"{what} differs across the {len(seen)} processes, which must all pass the same "
            f"arguments: {'; '.join(differences)}"
        )


def _checksum(tree) -> str:
    h = hashlib.sha256()
    for a in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:16]


def _describe(net, epochs, batch_size, params, x, y, key, tol, opt_state, start_epoch) -> dict:
    kind = lambda a: f"{np.dtype(a.dtype)}{list(np.shape(a))}"
    return {
        "network": repr(net),
        # an optax optimizer is a pair of closures: its state stands for it
        "optimizer state": f"{jax.tree.structure(opt_state)} {[kind(a) for a in jax.tree.leaves(opt_state)]} "
                           f"checksum {_checksum(opt_state)}",
        "epochs": epochs,
        "batch_size": batch_size,
        "start_epoch": int(start_epoch),
        "tol": float(tol),
        "x": kind(x),
        "y": kind(y),
        "params": _checksum(params),
        "key": None if key is None else _checksum(jax.random.key_data(key)),
        "devices": jax.device_count(),
    }


def local_rows(mesh: Mesh, batch_size: int) -> slice:
    """The contiguous rows of every global batch that this process's devices hold.

    Raises:
      ValueError: ``mesh`` interleaves this process's devices with other processes'
        along ``"data"`` (make it with ``jax.make_mesh``, which orders them by process).
    """
    sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
    spans = sorted({(i[0].start or 0, batch_size if i[0].stop is None else i[0].stop)
                    for i in sharding.addressable_devices_indices_map((batch_size,)).values()})
    lo, hi = spans[0][0], spans[-1][1]
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        raise ValueError(
            f"mesh places process {jax.process_index()}'s devices at rows {spans} of a batch, "
            f"not one contiguous slice; make it with jax.make_mesh((jax.device_count(),), "
            f"('{parallel.DATA_AXIS}',)), which orders devices by process"
        )
    return slice(lo, hi)


def batch_indices(key: Optional[Array], epoch: int, n: int, batch_size: int, rows: slice) -> np.ndarray:
    """The examples of ``rows`` of every batch of ``epoch``: ``(steps, rows)`` indices into ``x``.

    The order is :func:`jbp.fit`'s: ``jax.random.permutation(jax.random.fold_in(key,
    epoch), n)`` cut into ``n // batch_size`` batches (the rest left out), or the
    examples in order when ``batch_size == n`` (full batch, no shuffle).
    """
    steps = n // batch_size
    if batch_size == n:
        order = np.arange(n)
    else:
        order = np.asarray(_permutation(jax.random.fold_in(key, epoch), n))
    return order[: steps * batch_size].reshape(steps, batch_size)[:, rows]


@partial(jax.jit, static_argnums=1)
def _permutation(key, n):
    return jax.random.permutation(key, n)  # one compiled call, not a dozen eager ones


class Epochs(NamedTuple):
    """What :func:`fit_epochs` did, for :func:`jbp.fit` to report as its ``History``."""

    params: Params
    opt_state: Any
    loss: Array
    epochs_done: int
    reached_tol: bool
    diverged: bool


def fit_epochs(
    net: Network,
    optimizer,
    epochs: int,
    batch_size: int,
    loss_and_grad: Optional[Callable],
    mesh: Mesh,
    params: Params,
    x: Array,
    y: Array,
    key: Optional[Array],
    tol: Array,
    opt_state: Any,
    start_epoch: int,
    rule,
    feedback: tuple,
) -> Epochs:
    """:func:`jbp.fit`'s loop on a mesh that spans processes (arguments checked by ``fit``).

    Returns the parameters and optimizer state replicated on ``mesh``; ``loss`` has
    ``epochs`` entries, NaN for those not run, as ``History.loss``. Under a learning
    ``rule`` other than backprop each device takes the rule's update on its slice, with
    the ``feedback`` weights replicated.
    """
    try:
        return _fit_epochs(net, optimizer, epochs, batch_size, loss_and_grad, mesh, params, x, y, key, tol,
                           opt_state, start_epoch, rule, feedback)
    except jax.errors.JaxRuntimeError as e:  # from any collective: the check, a placement, a step
        raise ProcessLost(
            f"training across {jax.process_count()} processes stopped: a collective failed, so "
            f"another process has died or cannot be reached ({str(e).splitlines()[0]})"
        ) from None


def _fit_epochs(net, optimizer, epochs, batch_size, loss_and_grad, mesh, params, x, y, key, tol, opt_state,
                start_epoch, rule, feedback) -> Epochs:
    check_same("fit", {**_describe(net, epochs, batch_size, params, x, y, key, tol, opt_state, start_epoch),
                       "rule": rules.rule_name(rule), "feedback": _checksum(feedback)})
    n = x.shape[0]
    steps = n // batch_size
    rows = local_rows(mesh, batch_size)
    batches = NamedSharding(mesh, P(None, parallel.DATA_AXIS))
    x_host, y_host = np.asarray(x), np.asarray(y)
    tol = np.asarray(tol, x_host.dtype)
    step = parallel.DataParallel(net, mesh, loss_and_grad, rule)

    def epoch_batches(epoch):
        mine = batch_indices(key, epoch, n, batch_size, rows)
        return tuple(
            jax.make_array_from_process_local_data(batches, a[mine], (steps, batch_size, *a.shape[1:]))
            for a in (x_host, y_host)
        )

    # from host copies: an array committed to one device of this process (a replicated
    # result's local part) cannot be placed across processes directly
    params, opt_state, feedback = parallel.replicate(mesh, jax.tree.map(_host, (params, opt_state, feedback)))
    losses = np.full((epochs,), np.nan, x_host.dtype)
    done, reached_tol, diverged = 0, False, False
    xs, ys = epoch_batches(start_epoch)
    while done < epochs:
        new_params, new_opt_state, loss, ok = _epoch(net, optimizer, step, rule, params, opt_state, feedback, xs,
                                                     ys, key, jnp.int32(start_epoch + done))
        if done + 1 < epochs:  # build the next epoch's batches while this one runs
            xs, ys = epoch_batches(start_epoch + done + 1)
        losses[done] = np.asarray(loss)
        if not bool(ok):
            diverged = True
            break
        params, opt_state, done = new_params, new_opt_state, done + 1
        if losses[done - 1] <= tol:
            reached_tol = True
            break
    return Epochs(params, opt_state, jnp.asarray(losses), done, reached_tol, diverged)


def _host(a):
    return np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _epoch(net, optimizer, loss_and_grad, rule, params, opt_state, feedback, xs, ys, key, epoch):
    """One epoch over the global batches ``xs[i], ys[i]``: ``(params, opt_state, mean
    loss, whether the loss and the new parameters are finite)``."""

    def step(carry, batch):
        params, opt_state = carry
        x, y, i = batch
        # a fresh key per step for stochastic layers, from (key, epoch, step), as in fit
        k = None if key is None else stochastic.step_key(key, epoch, i)
        params, opt_state, loss, _ = one_step(net, optimizer, rule, params, opt_state, feedback, x, y, k,
                                              loss_and_grad=loss_and_grad)
        return (params, opt_state), loss

    steps = jnp.arange(xs.shape[0])
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xs, ys, steps))
    loss = jnp.mean(losses)
    return params, opt_state, loss, jnp.isfinite(loss) & _all_finite(params)
