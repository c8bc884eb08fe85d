"""The generic argument checks at the public boundary, in one message form.

Every failure is a ``ValueError`` or ``TypeError`` that names the argument, what was
expected and what was got, e.g. "lr must be a finite real number, got inf". Here are
the checks of plain values (names, integers, reals, flags, keys, dtypes, arrays,
trees); each API's own checks sit beside it: a network's parameters, inputs and targets in
:mod:`jbp.model.base` (the MLP's and the Sequential's own in their modules), ``fit``'s
in :mod:`jbp.training.fit`, ``check_grads``' in :mod:`jbp.verify.grads`.

Shape and dtype checks are static: under ``jit`` they run once, at trace time. Checks
on values (label ranges, NaN) need concrete arrays, so they are skipped when the value
is a tracer (inside ``jit``/``vmap``); call the function outside of them to get them.
They run on the host, with NumPy: ``jnp`` operations would be staged under ``jit``.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Collection

import jax
import jax.numpy as jnp
import numpy as np

#: The largest epoch index: :func:`jbp.fit` counts epochs in int32.
MAX_EPOCH = 2**31 - 1


def is_concrete(a) -> bool:
    """True if ``a`` holds values (not a tracer inside ``jit``/``vmap``)."""
    return not isinstance(a, jax.core.Tracer)


def describe(value: Any) -> str:
    """What was given, briefly: ``int 3``, ``float32 array of shape (2, 3)``."""
    if isinstance(value, np.generic):
        return f"{value.dtype} {value.item()!r}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def name(arg: str, value: Any, valid: Collection[str]) -> str:
    """Checks that ``value`` is one of the names ``valid``."""
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be a name (str), got {type(value).__name__} {value!r}")
    if value not in valid:
        raise ValueError(f"unknown {arg} {value!r}; expected one of {', '.join(valid)}")
    return value


def integer(arg: str, value: Any, low: int = 0, high: int | None = None, why: str = ""):
    """Checks an integer in ``[low, high]``: a Python or NumPy int (not a bool or a
    float), or a 0-d integer array. A traced one passes unchecked, as it is."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        v = int(value)
    elif getattr(value, "shape", None) == () and jnp.issubdtype(value.dtype, jnp.integer):
        if not is_concrete(value):
            return value
        v = int(value)
    else:
        raise TypeError(f"{arg} must be an int, got {describe(value)}")
    if v < low:
        raise ValueError(f"{arg} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{arg} must be <= {high}{why}, got {v}")
    return v


def positive_int(arg: str, value: Any) -> int:
    """Checks that ``value`` is an integer >= 1 (not a bool or a float)."""
    return integer(arg, value, low=1)


def real(arg: str, value: Any, positive: bool = False, finite: bool = False):
    """Checks a real number: a Python or NumPy number (not a bool) or a 0-d integer or
    floating array, not NaN (and > 0 if ``positive``, not inf if ``finite``). A traced
    one passes unchecked."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
    elif getattr(value, "shape", None) == () and (
        jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
    ):
        if not is_concrete(value):
            return value
        v = float(value)
    else:
        raise TypeError(f"{arg} must be a real number, got {describe(value)}")
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{arg} must be a {'finite ' * finite}real number, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{arg} must be > 0, got {v}")
    return value


def flag(arg: str, value: Any) -> bool:
    """Checks a ``bool``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{arg} must be True or False, got {describe(value)}")
    return bool(value)


def function(arg: str, value: Any, what: str):
    """Checks that ``value`` is ``None`` or callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{arg} must be a function {what}, got {describe(value)}")
    return value


@functools.cache
def _raw_key_shape() -> tuple:
    return tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)


def prng_key(arg: str, value: Any):
    """Checks one PRNG key: ``jax.random.key(seed)`` (or a raw ``jax.random.PRNGKey``)."""
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(
                f"{arg} must be one PRNG key, got an array of keys of shape {tuple(shape)}; "
                "pick one, or jax.vmap over them"
            )
        return value
    if dtype == np.uint32 and shape is not None and tuple(shape) == _raw_key_shape():
        return value
    raise TypeError(f"{arg} must be a PRNG key, jax.random.key(seed), got {describe(value)}")


def shape(arg: str, value: Any) -> tuple:
    """Checks one example's shape: a sequence of positive ints (no batch axis)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or np.ndim(value) != 1:
        raise TypeError(
            f"{arg} must be one example's shape like (64,) or (8, 8, 1), got {describe(value)}"
        )
    if len(value) == 0:
        raise ValueError(f"{arg} must have at least one axis, got ()")
    return tuple(positive_int(f"{arg}[{i}]", n) for i, n in enumerate(value))


def optimizer(value: Any):
    """Checks an optax ``GradientTransformation`` (anything with ``init`` and ``update``)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), "
            f"got {type(value).__name__}"
        )
    return value


def float_dtype(arg: str, dtype: Any) -> np.dtype:
    """``dtype`` as a canonical floating dtype; ``None`` means JAX's default float."""
    if dtype is None:
        return jnp.zeros(()).dtype
    try:
        dtype = jax.dtypes.canonicalize_dtype(np.dtype(dtype))
    except (TypeError, ValueError):
        raise TypeError(f"{arg} must be a floating dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{arg} must be a floating dtype, got {dtype}")
    return dtype


def one_dtype(arg: str, dtypes: list) -> np.dtype:
    dtypes = set(map(np.dtype, dtypes))
    if len(dtypes) > 1:
        raise TypeError(f"{arg} mixes dtypes {sorted(map(str, dtypes))}; use one floating dtype")
    return dtypes.pop()


def array(arg: str, value: Any):
    if isinstance(value, (jax.Array, np.ndarray)) and value.dtype != object:
        return value
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{arg} must be an array, got {type(value).__name__}: {e}") from None
    if a.dtype == object:
        raise TypeError(f"{arg} must be an array of numbers, got {describe(value)}")
    return a


def same_float(arg: str, a, dtype, like: str = "params"):
    """Casts integer/bool ``a`` to ``dtype`` (that of ``like``); refuses another floating dtype."""
    got = a.dtype
    if jnp.issubdtype(got, jnp.floating):
        if jax.dtypes.canonicalize_dtype(got) != dtype:
            raise TypeError(
                f"{arg} has dtype {got} but {like} are {dtype}; cast {arg} with "
                f".astype({dtype}) or make params of dtype {got} (net.init(key, dtype=...))"
            )
        return jnp.asarray(a)
    if jnp.issubdtype(got, jnp.integer) or got == np.bool_:
        return jnp.asarray(a, dtype)
    raise TypeError(f"{arg} must hold real numbers (floating, integer or bool), got dtype {got}")


def finite(arg: str, a) -> None:
    """Checks that a concrete array holds no NaN or inf."""
    if is_concrete(a) and jnp.issubdtype(a.dtype, jnp.floating):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(np.asarray(a, np.float64))))
        if bad:
            raise ValueError(f"{arg} must be finite, but {bad} of its values are NaN or inf")


def same_tree(arg: str, value: Any, like_arg: str, like: Any) -> None:
    """Checks that ``value`` has the structure, shapes and dtypes of ``like``."""
    got, want = jax.tree.structure(value), jax.tree.structure(like)
    if got != want:
        raise ValueError(f"{arg} has structure {got} but {like_arg} has {want}; they must match")
    for (path, w), g in zip(jax.tree_util.tree_flatten_with_path(like)[0], jax.tree.leaves(value)):
        where = jax.tree_util.keystr(path)
        if not (hasattr(g, "shape") and hasattr(g, "dtype")):
            raise TypeError(f"{arg}{where} must be an array, got {describe(g)}")
        if tuple(g.shape) != tuple(np.shape(w)):
            raise ValueError(
                f"{arg}{where} has shape {tuple(g.shape)} but {like_arg}{where} has "
                f"{tuple(np.shape(w))}"
            )
        if np.dtype(g.dtype) != np.dtype(w.dtype):
            raise TypeError(
                f"{arg}{where} has dtype {g.dtype} but {like_arg}{where} has {w.dtype}"
            )


def opt_state(optimizer_, params_, value) -> None:
    """Checks that ``value`` has the structure, shapes and dtypes of ``optimizer.init(params)``."""
    want = jax.eval_shape(optimizer_.init, params_)
    try:
        same_tree("opt_state", value, "optimizer.init(params)", want)
    except ValueError as e:
        raise ValueError(f"{e} (was opt_state made by another optimizer, or for other params?)") from None

