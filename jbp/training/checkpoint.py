"""Checkpoints: a safe file format, written atomically.

A checkpoint is an ``.npz`` archive read with ``allow_pickle=False``: arrays, plus one
JSON string (``meta``) with the network description, the epoch and the dtypes. Loading
never executes code. :func:`save_checkpoint` writes a temporary file in the same folder,
flushes it to disk and renames it over the old one (``os.replace`` is atomic), so a crash
in the middle of a save leaves the previous checkpoint intact.

What is saved is what an exact resume needs: parameters, optimizer state, the next epoch,
the PRNG key of the shuffles (see :func:`jbp.fit`), a learning rule's fixed feedback
weights (:mod:`jbp.rules`) and a recurrent network's carried state (truncated BPTT), plus any JSON-serialisable ``extra`` (the CLI keeps its
configuration and the loss history there).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.model import base
from jbp.model.base import Network
from jbp.training import description
from jbp.layers.params import Layer, Params

FORMAT = "jbp-checkpoint"
VERSION = 1


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes:
      net: the network the parameters belong to (:class:`jbp.MLP` or :class:`jbp.Sequential`).
      params: the parameters, a tuple with one entry per layer.
      opt_state: the optimizer state in the structure of ``optimizer.init(params)`` when
        ``optimizer`` was given to :func:`load_checkpoint`, else the list of its arrays.
      epoch: the next epoch to run (``start_epoch`` of :func:`jbp.fit`).
      key: the PRNG key saved, or ``None``.
      extra: the JSON-serialisable dict saved with it.
      feedback: the learning rule's feedback weights saved, a tuple of arrays (``()``
        if none; pass it to :func:`jbp.fit` as ``feedback``).
      state: the carried state saved, in the structure of ``net.init_state(batch)``
        (pass it as ``state`` to :func:`jbp.fit` or :func:`jbp.train_step`), or ``None``.
    """

    net: Network
    params: Params
    opt_state: Any
    epoch: int
    key: Optional[jax.Array]
    extra: dict
    feedback: tuple = ()
    state: Any = None


def _encode(name: str, a) -> tuple[np.ndarray, dict]:
    """An array as a NumPy array that npz stores without pickle, and how to decode it."""
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(a)), {"key_impl": str(jax.random.key_impl(a))}
    a = np.asarray(a)
    if a.dtype.kind not in "biufcV":  # npz would pickle objects, which loading refuses
        raise TypeError(f"{name} must be an array of numbers, got {_validate.describe(a)}")
    if a.dtype.kind == "V":  # bfloat16 and other ml_dtypes: store the raw bits
        return a.view(f"u{a.dtype.itemsize}"), {"dtype": a.dtype.name}
    return a, {}


def _decode(a: np.ndarray, how: dict):
    if "key_impl" in how:
        return jax.random.wrap_key_data(jnp.asarray(a), impl=how["key_impl"])
    if "dtype" in how:
        return jnp.asarray(a.view(jnp.dtype(how["dtype"])))
    return jnp.asarray(a)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    net: Network,
    params: Params,
    opt_state: Any = None,
    epoch: int = 0,
    key: Optional[jax.Array] = None,
    extra: Optional[dict] = None,
    feedback: tuple = (),
    state: Any = None,
) -> None:
    """Writes a checkpoint atomically (temporary file, fsync, rename).

    Args:
      path: the file to write (conventionally ``*.npz``); its folder must exist.
      net: the network description.
      params: its parameters.
      opt_state: the optimizer state (any pytree of arrays), or ``None``.
      epoch: the next epoch to run.
      key: a PRNG key to keep (the shuffle key of :func:`jbp.fit`), or ``None``.
      extra: JSON-serialisable metadata.
      feedback: a learning rule's feedback weights, ``rule.init(net, params)`` (a tuple
        of arrays), to resume a run of that rule exactly.
      state: the state carried from window to window (``net.init_state(batch)``'s
        structure, truncated BPTT), to resume such a run exactly; ``None`` if none.
    """
    checkpoint_args(net, params, epoch, key, extra)
    if not isinstance(feedback, (tuple, list)):
        raise TypeError(f"feedback must be a tuple of arrays (rule.init(net, params)), got {_validate.describe(feedback)}")
    arrays, decode = {}, {}

    def put(name, a):
        arrays[name], decode[name] = _encode(name, a)

    # the leaves in order, named by the network; the structure comes from the network
    for name, a in zip(net.leaf_names(params), jax.tree.leaves(params), strict=True):
        put(name, a)
    opt_leaves = jax.tree.leaves(opt_state)
    for i, a in enumerate(opt_leaves):
        put(f"opt_state/{i}", a)
    if key is not None:
        put("key", key)
    for i, B in enumerate(feedback):
        put(f"feedback/{i}", B)
    state_leaves = [] if state is None else _state_leaves(net, params, state)
    for i, a in enumerate(state_leaves):
        put(f"state/{i}", a)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "net": description.describe(net),
        "epoch": int(epoch),
        "n_opt_state": len(opt_leaves),
        "has_opt_state": opt_state is not None,
        "decode": decode,
        "extra": extra or {},
        "n_feedback": len(feedback),
        "n_state": len(state_leaves),
    }
    try:
        arrays["meta"] = np.array(json.dumps(meta))
    except TypeError as e:
        raise TypeError(f"extra must be JSON-serialisable: {e}") from None

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path {os.fspath(path)!r}: its folder {folder} does not exist")
    fd, tmp = _create_temporary(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create_temporary(folder: str) -> tuple[int, str]:
    """A new, empty file in ``folder`` (descriptor and path), created with mode 0666 less
    the umask, as ``open()`` creates files: ``tempfile.mkstemp`` would make it 0600, and
    the checkpoint keeps the temporary file's mode after the rename."""
    while True:
        tmp = os.path.join(folder, f".checkpoint-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits taken
            continue


def _not_a_checkpoint(path, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)} is not a readable jbp checkpoint: {why}")


def restore_opt_state(optimizer, params: Params, leaves: list, *, where: str = "") -> Any:
    """The optimizer state's arrays (``Checkpoint.opt_state`` loaded without an optimizer)
    put back into the structure of ``optimizer.init(params)``.

    Raises:
      ValueError: the arrays do not fit that structure (another optimizer's state).
    """
    template, treedef = jax.tree.flatten(optimizer.init(params))
    kinds = lambda leaves: [f"{np.dtype(a.dtype)}{list(np.shape(a))}" for a in leaves]
    if kinds(template) != kinds(leaves):
        raise ValueError(
            f"the optimizer state{where} does not fit the optimizer given: "
            f"it has arrays {kinds(leaves)}, optimizer.init gives "
            f"{kinds(template)} (was it saved with another optimizer?)"
        )
    return jax.tree.unflatten(treedef, leaves)


def load_checkpoint(path: str | os.PathLike, *, optimizer=None, net=None) -> Checkpoint:
    """Reads a checkpoint written by :func:`save_checkpoint` (never unpickles).

    Args:
      path: the checkpoint file.
      optimizer: the optax optimizer the state belongs to; when given, ``opt_state``
        comes back in the structure of ``optimizer.init(params)``.
      net: the network saved, for a :class:`jbp.Sequential` with layers of your own
        (only jbp's built-in layers are rebuilt from the file's description); it must
        have the description saved. Default: rebuilt from the file.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is truncated, corrupted, or not a jbp checkpoint (of this
        version), its arrays do not fit its network, or its optimizer state does not
        fit ``optimizer``.
    """
    if optimizer is not None:
        _validate.optimizer(optimizer)
    if net is not None:
        base.network(net)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise _not_a_checkpoint(path, "it has no 'meta' entry (a foreign .npz file?)")
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise _not_a_checkpoint(path, f"its format is not {FORMAT!r}")
            if meta.get("version") != VERSION:
                raise _not_a_checkpoint(
                    path, f"version {meta.get('version')!r}, this jbp reads version {VERSION}"
                )
            arrays = {name: z[name] for name in z.files if name != "meta"}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except ValueError as e:
        if "is not a readable jbp checkpoint" in str(e):
            raise
        raise _not_a_checkpoint(path, f"truncated or corrupted ({e})") from None
    except Exception as e:  # zipfile, npy and JSON parsers fail in many ways on bad bytes
        raise _not_a_checkpoint(path, f"truncated or corrupted ({type(e).__name__}: {e})") from None

    try:
        decode = meta["decode"]
        get = lambda name: _decode(arrays[name], decode.get(name, {}))
        net = description.rebuild(meta["net"], net)
        structure = jax.tree.structure(net.param_shapes(np.float32))
        leaves = [get(name) for name in net.leaf_names(jax.tree.unflatten(structure, range(structure.num_leaves)))]
        params = jax.tree.unflatten(structure, leaves)
        opt_leaves = [get(f"opt_state/{i}") for i in range(meta["n_opt_state"])]
        feedback = tuple(get(f"feedback/{i}") for i in range(meta.get("n_feedback", 0)))
        state = _restore_state(net, [get(f"state/{i}") for i in range(meta.get("n_state", 0))])
        base.params(net, params)  # the arrays must fit the network saved with them
        key = _validate.prng_key("key", get("key")) if "key" in arrays else None
        epoch = _validate.integer("epoch", meta["epoch"], low=0)
        has_opt_state = _validate.flag("has_opt_state", meta["has_opt_state"])
        extra = meta["extra"]
        if not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    except description.NotRebuilt as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None
    except Exception as e:  # whatever the JSON holds, it is data: say what does not fit
        raise _not_a_checkpoint(path, f"inconsistent contents ({type(e).__name__}: {e})") from None

    opt_state = opt_leaves if has_opt_state else None
    if optimizer is not None and has_opt_state:
        opt_state = restore_opt_state(optimizer, params, opt_leaves, where=f" in {os.fspath(path)}")
    return Checkpoint(net, params, opt_state, epoch, key, extra, feedback, state)


def _state_leaves(net, params: Params, state) -> list:
    """The leaves of a carried ``state``, checked against ``net.init_state``."""
    leaves = jax.tree.leaves(state)
    if not callable(getattr(net, "check_state", None)) or not net.stateful or not leaves:
        raise ValueError(f"state must be the carried state of a network with a stateful layer "
                         f"(net.init_state(batch)), got {_validate.describe(state)} for {type(net).__name__}")
    net.check_state(state, leaves[0].shape[0], jax.tree.leaves(params)[0].dtype)
    return leaves


def _restore_state(net, leaves: list):
    """The saved state's leaves in the structure of ``net.init_state`` (``None`` if none)."""
    if not leaves:
        return None
    template = net.init_state(leaves[0].shape[0], leaves[0].dtype)
    return net.check_state(jax.tree.unflatten(jax.tree.structure(template), leaves), leaves[0].shape[0],
                           leaves[0].dtype)


# --- Argument checks at the boundary. ---------------------------------------------


def checkpoint_args(net, params_, epoch, key, extra) -> None:
    """:func:`jbp.save_checkpoint`'s checks of everything but the optimizer state."""
    base.network(net)
    base.params(net, params_)
    _validate.integer("epoch", epoch, low=0)
    if key is not None:
        _validate.prng_key("key", key)
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict (JSON-serialisable), got {_validate.describe(extra)}")
