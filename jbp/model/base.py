"""What every network is: the base class of :class:`jbp.MLP` and :class:`jbp.Sequential`.

A network is a frozen, hashable description (static under ``jax.jit``, holding no
arrays) whose pure methods take the parameters pytree explicitly:

- ``init(key, dtype=None) -> params``
- ``forward(params, x) -> (output, cache)``, ``predict(params, x) -> output``
- ``loss(params, x, y) -> scalar``, ``accuracy(params, x, y) -> scalar``
- ``output_delta(cache, y) -> dL/dz^(L)``
- ``loss_and_grad(params, x, y) -> (loss, grads)``: the hand-derived gradient.

``forward``, ``loss`` and ``loss_and_grad`` also take ``key=`` and ``train=`` (stochastic
layers such as dropout); training passes ``train=True`` and a fresh key per step.

Beside it, the checks of a network's arguments at the boundary (parameters, inputs,
targets), which every network's public methods and jbp's functions run.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.model.losses import IGNORE


class Network:
    """Base class of jbp's networks (see the module docstring for the contract)."""

    __slots__ = ()


#: ``net.init_unchecked(key, dtype)`` as one compiled program for all the layers' draws
#: (not one small program per eager operation): a run starts faster, and the values are
#: those of the operations run one by one. Networks' checked ``init`` calls it.
init_compiled = jax.jit(lambda net, key, dtype: net.init_unchecked(key, dtype), static_argnums=(0, 2))


# --- Argument checks at the boundary. ---------------------------------------------


def network(value: Any):
    """Checks a network: a :class:`jbp.MLP`, a :class:`jbp.Sequential` (any
    :class:`jbp.model.base.Network`)."""
    if not isinstance(value, Network):
        raise TypeError(
            f"net must be a jbp network (jbp.MLP or jbp.Sequential), got {type(value).__name__}"
        )
    return value


def params(net, value: Any) -> np.dtype:
    """Checks that ``value`` has the network's structure and shapes; returns its dtype
    (the network's ``check_params``)."""
    return net.check_params(value)


def finite_params(value) -> None:
    """Checks that concrete parameters hold no NaN or inf (after :func:`params`)."""
    for path, a in jax.tree_util.tree_flatten_with_path(value)[0]:
        _validate.finite(f"params{jax.tree_util.keystr(path)}", a)


def inputs(net, params_, x):
    """Checks params and ``x`` ``(batch, *input_shape)``; returns ``x`` in the params' dtype."""
    dtype = params(net, params_)
    x = _validate.array("x", x)
    if net.input_vocab is not None:
        return _token_inputs(x, ("batch", *net.input_shape), net.input_vocab)
    net.check_input_shape(x)
    if x.shape[0] == 0:
        raise ValueError("x is empty: it has 0 rows")
    return _validate.same_float("x", x, dtype)


def _token_inputs(x, want: tuple, vocab: int):
    """Integer token ids ``(batch, T)`` in ``[0, vocab)`` for a network whose first
    layer takes ids (``layers[0].input_vocab``); returned as a JAX integer array."""
    shape = f"({', '.join(map(str, want))})"
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"x must be integer token ids {shape} in [0, {vocab}), got {_validate.describe(x)}")
    if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]):
        raise ValueError(f"x has shape {tuple(x.shape)} but the network expects token ids {shape}")
    if x.shape[0] == 0:
        raise ValueError("x is empty: it has 0 rows")
    _ids_within(x, 0, vocab, lambda lo, hi: (
        f"x holds token ids in [{lo}, {hi}] but the network's vocabulary has {vocab} "
        f"(layers[0].input_vocab); ids must lie in [0, {vocab - 1}]"))
    return jnp.asarray(x)


def _ids_within(a, low: int, high: int, message) -> None:
    """Checks that concrete integer ids lie in ``[low, high)``; else ``ValueError(message(lo, hi))``
    with the ids' own range. Traced ids pass (checked on the host, outside jit)."""
    if _validate.is_concrete(a):
        v = np.asarray(a)  # on the host: jnp ops would be staged under jit
        lo, hi = int(v.min()), int(v.max())
        if lo < low or hi >= high:
            raise ValueError(message(lo, hi))


def inputs_and_targets(net, params_, x, y):
    """Checks params, ``x`` and the targets ``y`` for the network's loss.

    Returns ``(x, y)`` as arrays, floating targets in the params' dtype.
    """
    x = inputs(net, params_, x)
    return x, targets(net, y, x.shape[0], x.dtype)


def targets(net, y, batch: int, dtype, like: tuple = ("x", "params")):
    """Checks targets ``y`` for ``batch`` outputs of the network's loss, in ``dtype``;
    ``like`` names where the batch and the dtype come from."""
    y = _validate.array("y", y)
    n_out = net.output_shape[-1]
    if len(net.output_shape) > 1:
        return _sequence_labels(y, batch, net.output_shape, like[0])
    if y.ndim == 0 or y.shape[0] != batch:
        raise ValueError(
            f"y has shape {tuple(y.shape)} but {like[0]} has {batch} rows; "
            "y needs one row per example"
        )
    if net.loss_name == "cross_entropy":
        return _class_targets(y, n_out, dtype, like[1])
    if y.shape != (batch, n_out):
        hint = " (use y.reshape(-1, 1))" if y.shape == (batch,) and n_out == 1 else ""
        raise ValueError(
            f"y has shape {tuple(y.shape)} but the network's output is ({batch}, {n_out})"
            f" (batch, {net.output_name}){hint}"
        )
    y = _validate.same_float("y", y, dtype, like[1])
    if net.loss_name == "binary_cross_entropy":
        _unit_interval("y for binary_cross_entropy", y)
    return y


def _unit_interval(what: str, y) -> None:
    """Checks that concrete targets are finite and lie in [0, 1]."""
    if _validate.is_concrete(y):
        _validate.finite("y", y)
        v = np.asarray(y, np.float64)  # on the host: jnp ops would be staged under jit
        lo, hi = float(v.min()), float(v.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"{what} must lie in [0, 1], got values in [{lo}, {hi}]")


def _sequence_labels(y, batch: int, output_shape: tuple, like: str):
    """Integer labels ``(batch, T)`` for outputs ``(batch, T, V)``: each in ``[0, V)`` or
    ``IGNORE`` (-1, padding)."""
    want, V = (batch, *output_shape[:-1]), output_shape[-1]
    if not jnp.issubdtype(y.dtype, jnp.integer) or tuple(y.shape) != want:
        raise ValueError(
            f"y must be integer labels {want} (batch, T), one per position of the output "
            f"{(batch, *output_shape)} ({like} has {batch} rows), got {_validate.describe(y)}"
        )
    _ids_within(y, IGNORE, V, lambda lo, hi: (
        f"y holds labels in [{lo}, {hi}] but the network has {V} classes (output_shape[-1]); "
        f"labels must lie in [0, {V - 1}], or be {IGNORE} for padding"))
    return jnp.asarray(y)


def _class_targets(y, n_classes: int, dtype, like: str):
    """Integer labels ``(batch,)`` in ``[0, n_classes)`` or probability rows ``(batch, n_classes)``."""
    if y.ndim == 1:
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(
                f"y for cross_entropy must be integer labels (batch,) or one-hot rows "
                f"(batch, {n_classes}), got dtype {y.dtype} with shape {tuple(y.shape)}"
            )
        _ids_within(y, 0, n_classes, lambda lo, hi: (
            f"y holds labels in [{lo}, {hi}] but the network has {n_classes} classes "
            f"(sizes[-1]); labels must lie in [0, {n_classes - 1}]"))
        return jnp.asarray(y)
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise ValueError(
            f"y for cross_entropy must be integer labels (batch,) or one-hot rows "
            f"(batch, {n_classes}), got shape {tuple(y.shape)}"
        )
    y = _validate.same_float("y", y, dtype, like)
    _unit_interval("y for cross_entropy (rows of class probabilities)", y)
    return y
