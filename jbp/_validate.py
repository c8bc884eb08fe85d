"""Checks at the public boundary, in one message form.

Every failure is a ``ValueError`` or ``TypeError`` that names the argument, what was
expected and what was got, e.g. "x has 5 features but the network expects 4 (sizes[0])".

Shape and dtype checks are static: under ``jit`` they run once, at trace time. Checks
on values (label ranges, NaN) need concrete arrays, so they are skipped when the value
is a tracer (inside ``jit``/``vmap``); call the function outside of them to get them.
"""

from __future__ import annotations

import numbers
from typing import Any, Collection

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(a) -> bool:
    """True if ``a`` holds values (not a tracer inside ``jit``/``vmap``)."""
    return not isinstance(a, jax.core.Tracer)


def name(arg: str, value: Any, valid: Collection[str]) -> str:
    """Checks that ``value`` is one of the names ``valid``."""
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be a name (str), got {type(value).__name__} {value!r}")
    if value not in valid:
        raise ValueError(f"unknown {arg} {value!r}; expected one of {', '.join(valid)}")
    return value


def positive_int(arg: str, value: Any) -> int:
    """Checks that ``value`` is an integer >= 1 (not a bool or a float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{arg} must be >= 1, got {value}")
    return int(value)


def sizes(value: Any) -> tuple:
    """Checks layer widths: at least two positive ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(
            f"sizes must be a sequence of layer widths like (2, 8, 1), got {value!r}"
        )
    if len(value) < 2:
        raise ValueError(
            f"sizes must have at least 2 entries (inputs and outputs), got {tuple(value)!r}"
        )
    return tuple(positive_int(f"sizes[{i}]", n) for i, n in enumerate(value))


def float_dtype(arg: str, dtype: Any) -> np.dtype:
    """``dtype`` as a canonical floating dtype; ``None`` means JAX's default float."""
    if dtype is None:
        return jnp.zeros(()).dtype
    try:
        dtype = jax.dtypes.canonicalize_dtype(np.dtype(dtype))
    except TypeError:
        raise TypeError(f"{arg} must be a floating dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{arg} must be a floating dtype, got {dtype}")
    return dtype


def params(net, value: Any) -> np.dtype:
    """Checks that ``value`` has the network's structure and shapes; returns its dtype."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(
            f"params must be a tuple of jbp.Layer (from net.init), got {type(value).__name__}"
        )
    if len(value) != net.n_layers:
        raise ValueError(
            f"params has {len(value)} layers but the network has {net.n_layers} "
            f"(sizes={net.sizes})"
        )
    dtypes = set()
    for l, layer in enumerate(value):
        n_in, n_out = net.sizes[l], net.sizes[l + 1]
        for leaf, expected, where in (
            ("W", (n_out, n_in), f"(sizes[{l + 1}], sizes[{l}])"),
            ("b", (n_out,), f"(sizes[{l + 1}],)"),
        ):
            a = getattr(layer, leaf, None)
            if a is None or not hasattr(a, "shape"):
                raise TypeError(
                    f"params[{l}] must be a jbp.Layer with arrays W and b, got {type(layer).__name__}"
                )
            if tuple(a.shape) != expected:
                raise ValueError(
                    f"params[{l}].{leaf} has shape {tuple(a.shape)} but the network expects "
                    f"{expected} {where} for layer {l + 1}"
                )
            if not jnp.issubdtype(a.dtype, jnp.floating):
                raise TypeError(f"params[{l}].{leaf} must be floating, got dtype {a.dtype}")
            dtypes.add(np.dtype(a.dtype))
    if len(dtypes) > 1:
        raise TypeError(
            f"params mixes dtypes {sorted(map(str, dtypes))}; use one floating dtype"
        )
    return dtypes.pop()


def _array(arg: str, value: Any):
    if isinstance(value, jax.Array) or isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{arg} must be an array, got {type(value).__name__}: {e}") from None


def _same_float(arg: str, a, dtype):
    """Casts integer/bool ``a`` to ``dtype``; refuses another floating dtype."""
    got = a.dtype
    if jnp.issubdtype(got, jnp.floating):
        if jax.dtypes.canonicalize_dtype(got) != dtype:
            raise TypeError(
                f"{arg} has dtype {got} but params are {dtype}; cast {arg} with "
                f".astype({dtype}) or make params of dtype {got} (net.init(key, dtype=...))"
            )
        return jnp.asarray(a)
    if jnp.issubdtype(got, jnp.integer) or got == np.bool_:
        return jnp.asarray(a, dtype)
    raise TypeError(f"{arg} must hold numbers, got dtype {got}")


def inputs(net, params_, x):
    """Checks params and ``x`` ``(batch, sizes[0])``; returns ``x`` in the params' dtype."""
    dtype = params(net, params_)
    x = _array("x", x)
    if x.ndim != 2:
        raise ValueError(
            f"x must be 2-D (batch, features) with {net.sizes[0]} features, got shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[1] != net.sizes[0]:
        raise ValueError(
            f"x has {x.shape[1]} features but the network expects {net.sizes[0]} (sizes[0])"
        )
    if x.shape[0] == 0:
        raise ValueError("x is empty: it has 0 rows")
    return _same_float("x", x, dtype)


def inputs_and_targets(net, params_, x, y):
    """Checks params, ``x`` and the targets ``y`` for the network's loss.

    Returns ``(x, y)`` as arrays, floating targets in the params' dtype.
    """
    x = inputs(net, params_, x)
    dtype = x.dtype
    y = _array("y", y)
    batch, n_out = x.shape[0], net.sizes[-1]
    if y.ndim == 0 or y.shape[0] != batch:
        raise ValueError(
            f"y has shape {tuple(y.shape)} but x has {batch} rows; y needs one row per example"
        )
    if net.loss_name == "cross_entropy":
        return x, _class_targets(y, n_out, dtype)
    if y.shape != (batch, n_out):
        hint = " (use y.reshape(-1, 1))" if y.shape == (batch,) and n_out == 1 else ""
        raise ValueError(
            f"y has shape {tuple(y.shape)} but the network's output is ({batch}, {n_out})"
            f" (batch, sizes[-1]){hint}"
        )
    y = _same_float("y", y, dtype)
    if net.loss_name == "binary_cross_entropy" and is_concrete(y):
        v = np.asarray(y, np.float64)  # on the host: jnp ops would be staged under jit
        lo, hi = float(v.min()), float(v.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(
                f"y for binary_cross_entropy must lie in [0, 1], got values in [{lo}, {hi}]"
            )
    return x, y


def _class_targets(y, n_classes: int, dtype):
    """Integer labels ``(batch,)`` in ``[0, n_classes)`` or probability rows ``(batch, n_classes)``."""
    if y.ndim == 1:
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(
                f"y for cross_entropy must be integer labels (batch,) or one-hot rows "
                f"(batch, {n_classes}), got dtype {y.dtype} with shape {tuple(y.shape)}"
            )
        if is_concrete(y):
            v = np.asarray(y)  # on the host: jnp ops would be staged under jit
            lo, hi = int(v.min()), int(v.max())
            if lo < 0 or hi >= n_classes:
                raise ValueError(
                    f"y holds labels in [{lo}, {hi}] but the network has {n_classes} classes "
                    f"(sizes[-1]); labels must lie in [0, {n_classes - 1}]"
                )
        return jnp.asarray(y)
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise ValueError(
            f"y for cross_entropy must be integer labels (batch,) or one-hot rows "
            f"(batch, {n_classes}), got shape {tuple(y.shape)}"
        )
    return _same_float("y", y, dtype)


def finite(arg: str, a) -> None:
    """Checks that a concrete array holds no NaN or inf."""
    if is_concrete(a) and jnp.issubdtype(a.dtype, jnp.floating):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(np.asarray(a, np.float64))))
        if bad:
            raise ValueError(f"{arg} must be finite, but {bad} of its values are NaN or inf")


def net_and_optimizer(net, optimizer) -> None:
    """Checks that ``net`` is a :class:`jbp.MLP` and ``optimizer`` an optax optimizer."""
    from jbp.network import MLP  # here: jbp.network imports this module

    if not isinstance(net, MLP):
        raise TypeError(f"net must be a jbp.MLP, got {type(net).__name__}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), "
            f"got {type(optimizer).__name__}"
        )
