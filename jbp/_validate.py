"""Checks at the public boundary, in one message form.

Every failure is a ``ValueError`` or ``TypeError`` that names the argument, what was
expected and what was got, e.g. "x has 5 features but the network expects 4 (sizes[0])".

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

from jbp.model.activations import ACTIVATIONS, Activation
from jbp.model.base import Network

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


def network(value: Any):
    """Checks a network: a :class:`jbp.MLP`, a :class:`jbp.Sequential` (any
    :class:`jbp.model.base.Network`)."""
    if not isinstance(value, Network):
        raise TypeError(
            f"net must be a jbp network (jbp.MLP or jbp.Sequential), got {type(value).__name__}"
        )
    return value


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


def sizes(value: Any) -> tuple:
    """Checks layer widths: at least two positive ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or np.ndim(value) != 1:
        raise TypeError(
            f"sizes must be a sequence of layer widths like (2, 8, 1), got {value!r}"
        )
    if len(value) < 2:
        raise ValueError(
            f"sizes must have at least 2 entries (inputs and outputs), got {tuple(value)!r}"
        )
    return tuple(positive_int(f"sizes[{i}]", n) for i, n in enumerate(value))


def activation_names(value: Any) -> tuple:
    """``activation`` of :class:`jbp.MLP` as a tuple: one name, or a sequence of names."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list)):
        return tuple(value)
    raise TypeError(
        f"activation must be a name or a sequence of names (one per hidden layer), "
        f"got {describe(value)}"
    )


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


def _layer(l: int, layer: Any) -> tuple:
    """``(W, b)`` of ``params[l]``, checked to be floating arrays."""
    W, b = getattr(layer, "W", None), getattr(layer, "b", None)
    if not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in (W, b)):
        raise TypeError(
            f"params[{l}] must be a jbp.Layer with arrays W and b, got {type(layer).__name__}"
        )
    for leaf, a in (("W", W), ("b", b)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"params[{l}].{leaf} must be floating, got dtype {a.dtype}")
    return W, b


def _one_dtype(arg: str, dtypes: list) -> np.dtype:
    dtypes = set(map(np.dtype, dtypes))
    if len(dtypes) > 1:
        raise TypeError(f"{arg} mixes dtypes {sorted(map(str, dtypes))}; use one floating dtype")
    return dtypes.pop()


def params(net, value: Any) -> np.dtype:
    """Checks that ``value`` has the network's structure and shapes; returns its dtype
    (the network's ``check_params``)."""
    return net.check_params(value)


def mlp_params(net, value: Any) -> np.dtype:
    """:class:`jbp.MLP`'s params, in the seed's names: a tuple of :class:`jbp.Layer` of the
    sizes' shapes; returns their dtype."""
    if not isinstance(value, tuple):  # a list would not match the tuple of gradients
        raise TypeError(
            f"params must be a tuple of jbp.Layer (from net.init), got {type(value).__name__}"
        )
    if len(value) != net.n_layers:
        raise ValueError(
            f"params has {len(value)} layers but the network has {net.n_layers} "
            f"(sizes={net.sizes})"
        )
    dtypes = []
    for l, layer in enumerate(value):
        n_in, n_out = net.sizes[l], net.sizes[l + 1]
        for leaf, a, expected, where in zip(
            "Wb", _layer(l, layer), ((n_out, n_in), (n_out,)),
            (f"(sizes[{l + 1}], sizes[{l}])", f"(sizes[{l + 1}],)"),
        ):
            if tuple(a.shape) != expected:
                raise ValueError(
                    f"params[{l}].{leaf} has shape {tuple(a.shape)} but the network expects "
                    f"{expected} {where} for layer {l + 1}"
                )
            dtypes.append(a.dtype)
    return _one_dtype("params", dtypes)


def finite_params(value) -> None:
    """Checks that concrete parameters hold no NaN or inf (after :func:`params`)."""
    for path, a in jax.tree_util.tree_flatten_with_path(value)[0]:
        finite(f"params{jax.tree_util.keystr(path)}", a)


def layer_params(net, value: Any) -> np.dtype:
    """For a network of layers: one entry per layer, each with the structure, shapes and
    dtype of that layer's ``init``; returns their one floating dtype."""
    if not isinstance(value, tuple):  # a list would not match the tuple of gradients
        raise TypeError(
            f"params must be a tuple with one entry per layer (from net.init), got "
            f"{type(value).__name__}"
        )
    if len(value) != net.n_layers:
        raise ValueError(
            f"params has {len(value)} entries but the network has {net.n_layers} layers"
        )
    leaves = jax.tree_util.tree_flatten_with_path(value)[0]
    for path, a in leaves:
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"params{jax.tree_util.keystr(path)} must be an array, got {describe(a)}")
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(
                f"params{jax.tree_util.keystr(path)} must be floating, got dtype {a.dtype}"
            )
    dtype = _one_dtype("params", [a.dtype for _, a in leaves]) if leaves else float_dtype("dtype", None)
    want = net.param_shapes(dtype)
    for i, (layer, got) in enumerate(zip(net.layers, value)):
        same_tree(f"params[{i}]", got, f"layers[{i}] ({type(layer).__name__}).init", want[i])
    return dtype


def layers(value: Any, activations: Any) -> np.dtype:
    """For the pure functions (no network): ``params`` that chain up, ``W^(l)``
    ``(n_l, n_{l-1})`` and ``b^(l)`` ``(n_l,)``, and one activation per layer."""
    if not isinstance(value, tuple):  # a list would not match the tuple of gradients
        raise TypeError(
            f"params must be a tuple of jbp.Layer (from net.init), got {type(value).__name__}"
        )
    if not value:
        raise ValueError("params has no layers; it needs at least one jbp.Layer")
    if isinstance(activations, str) or not isinstance(activations, (tuple, list)):
        raise TypeError(
            f"activations must be a sequence with one activation per layer (net.activations), "
            f"got {describe(activations)}"
        )
    if len(activations) != len(value):
        raise ValueError(
            f"activations has {len(activations)} entries but params has {len(value)} layers; "
            "give one activation per layer (net.activations)"
        )
    for l, a in enumerate(activations):
        if not isinstance(a, Activation):
            name(f"activations[{l}]", a, ACTIVATIONS)
    dtypes = []
    for l, layer in enumerate(value):
        W, b = _layer(l, layer)
        if W.ndim != 2:
            raise ValueError(f"params[{l}].W must be 2-D (n_out, n_in), got shape {tuple(W.shape)}")
        if tuple(b.shape) != (W.shape[0],):
            raise ValueError(
                f"params[{l}].b has shape {tuple(b.shape)} but params[{l}].W has "
                f"{W.shape[0]} rows; expected ({W.shape[0]},)"
            )
        if l and W.shape[1] != value[l - 1].W.shape[0]:
            raise ValueError(
                f"params[{l}].W has {W.shape[1]} columns but layer {l} has "
                f"{value[l - 1].W.shape[0]} outputs (params[{l - 1}].W has shape "
                f"{tuple(value[l - 1].W.shape)})"
            )
        dtypes += [W.dtype, b.dtype]
    return _one_dtype("params", dtypes)


def _array(arg: str, value: Any):
    if isinstance(value, (jax.Array, np.ndarray)) and value.dtype != object:
        return value
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{arg} must be an array, got {type(value).__name__}: {e}") from None
    if a.dtype == object:
        raise TypeError(f"{arg} must be an array of numbers, got {describe(value)}")
    return a


def _same_float(arg: str, a, dtype, like: str = "params"):
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


def inputs(net, params_, x):
    """Checks params and ``x`` ``(batch, *input_shape)``; returns ``x`` in the params' dtype."""
    dtype = params(net, params_)
    x = _array("x", x)
    if net.input_vocab is not None:
        return _token_inputs(x, ("batch", *net.input_shape), net.input_vocab)
    net.check_input_shape(x)
    if x.shape[0] == 0:
        raise ValueError("x is empty: it has 0 rows")
    return _same_float("x", x, dtype)


def input_shape(net, x) -> None:
    """A network of layers' ``x``: ``(batch, *input_shape)``."""
    want = ("batch", *net.input_shape)
    if x.ndim != len(want) or tuple(x.shape[1:]) != net.input_shape:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but the network expects "
            f"({', '.join(map(str, want))}) (input_shape={net.input_shape})"
        )


def mlp_input_shape(net, x) -> None:
    """:class:`jbp.MLP`'s ``x``: ``(batch, sizes[0])``."""
    if x.ndim != 2:
        raise ValueError(
            f"x must be 2-D (batch, features) with {net.sizes[0]} features, got shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[1] != net.sizes[0]:
        raise ValueError(
            f"x has {x.shape[1]} features but the network expects {net.sizes[0]} (sizes[0])"
        )


def _token_inputs(x, want: tuple, vocab: int):
    """Integer token ids ``(batch, T)`` in ``[0, vocab)`` for a network whose first
    layer takes ids (``layers[0].input_vocab``); returned as a JAX integer array."""
    shape = f"({', '.join(map(str, want))})"
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"x must be integer token ids {shape} in [0, {vocab}), got {describe(x)}")
    if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]):
        raise ValueError(f"x has shape {tuple(x.shape)} but the network expects token ids {shape}")
    if x.shape[0] == 0:
        raise ValueError("x is empty: it has 0 rows")
    if is_concrete(x):
        v = np.asarray(x)  # on the host: jnp ops would be staged under jit
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(
                f"x holds token ids in [{lo}, {hi}] but the network's vocabulary has {vocab} "
                f"(layers[0].input_vocab); ids must lie in [0, {vocab - 1}]"
            )
    return jnp.asarray(x)


def inputs_and_targets(net, params_, x, y):
    """Checks params, ``x`` and the targets ``y`` for the network's loss.

    Returns ``(x, y)`` as arrays, floating targets in the params' dtype.
    """
    x = inputs(net, params_, x)
    return x, targets(net, y, x.shape[0], x.dtype)


def targets(net, y, batch: int, dtype, like: tuple = ("x", "params")):
    """Checks targets ``y`` for ``batch`` outputs of the network's loss, in ``dtype``;
    ``like`` names where the batch and the dtype come from."""
    y = _array("y", y)
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
    y = _same_float("y", y, dtype, like[1])
    if net.loss_name == "binary_cross_entropy":
        _unit_interval("y for binary_cross_entropy", y)
    return y


def _unit_interval(what: str, y) -> None:
    """Checks that concrete targets are finite and lie in [0, 1]."""
    if is_concrete(y):
        finite("y", y)
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
            f"{(batch, *output_shape)} ({like} has {batch} rows), got {describe(y)}"
        )
    if is_concrete(y):
        v = np.asarray(y)
        lo, hi = int(v.min()), int(v.max())
        if lo < -1 or hi >= V:
            raise ValueError(
                f"y holds labels in [{lo}, {hi}] but the network has {V} classes (output_shape[-1]); "
                f"labels must lie in [0, {V - 1}], or be -1 for padding"
            )
    return jnp.asarray(y)


def _class_targets(y, n_classes: int, dtype, like: str):
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
    y = _same_float("y", y, dtype, like)
    _unit_interval("y for cross_entropy (rows of class probabilities)", y)
    return y


def finite(arg: str, a) -> None:
    """Checks that a concrete array holds no NaN or inf."""
    if is_concrete(a) and jnp.issubdtype(a.dtype, jnp.floating):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(np.asarray(a, np.float64))))
        if bad:
            raise ValueError(f"{arg} must be finite, but {bad} of its values are NaN or inf")


def forward_inputs(params_, x, activations):
    """For :func:`jbp.forward`: params, activations and ``x`` ``(batch, n_0)``; returns
    ``x`` in the params' dtype."""
    dtype = layers(params_, activations)
    n_in = params_[0].W.shape[1]
    x = _array("x", x)
    if x.ndim != 2:
        raise ValueError(
            f"x must be 2-D (batch, features) with {n_in} features (params[0].W.shape[1]), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[1] != n_in:
        raise ValueError(
            f"x has {x.shape[1]} features but params[0].W expects {n_in} (its shape is "
            f"{tuple(params_[0].W.shape)})"
        )
    return _same_float("x", x, dtype)


def _cache_arrays(cache) -> tuple:
    zs, xs = getattr(cache, "zs", None), getattr(cache, "xs", None)
    if (
        not isinstance(zs, (tuple, list)) or not isinstance(xs, (tuple, list))
        or not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in (*zs, *xs))
    ):
        raise TypeError(
            f"cache must be the jbp.Cache of arrays that jbp.forward returns, got "
            f"{type(cache).__name__}"
        )
    return zs, xs


def _as_jax(cache):
    return cache._replace(zs=tuple(map(jnp.asarray, cache.zs)), xs=tuple(map(jnp.asarray, cache.xs)))


def backward_inputs(params_, cache, delta_out, activations) -> tuple:
    """For :func:`jbp.deltas` and :func:`jbp.backward`: params, activations, a cache of
    ``jbp.forward`` with these params, and ``delta_out`` of the output layer's shape;
    returns ``(cache, delta_out)`` as JAX arrays, ``delta_out`` in the params' dtype."""
    dtype = layers(params_, activations)
    zs, xs = _cache_arrays(cache)
    n = len(params_)
    if len(zs) != n or len(xs) != n + 1:
        raise ValueError(
            f"cache holds {len(zs)} zs and {len(xs)} xs but params has {n} layers; expected "
            f"{n} and {n + 1}: the cache of jbp.forward with these params"
        )
    batch = xs[0].shape[0] if xs[0].ndim == 2 else None
    expected = [("xs[0]", xs[0], params_[0].W.shape[1])] + [
        (f"{kind}[{l + i}]", a[l + i], params_[l].W.shape[0])
        for l in range(n) for kind, a, i in (("zs", zs, 0), ("xs", xs, 1))
    ]
    for where, a, width in expected:
        if tuple(a.shape) != (batch, width):
            raise ValueError(
                f"cache.{where} has shape {tuple(a.shape)} but params give "
                f"({batch}, {width}) (batch, width); use the cache of jbp.forward with these params"
            )
        if a.dtype != dtype:
            raise TypeError(f"cache.{where} has dtype {a.dtype} but params are {dtype}")
    delta_out = _array("delta_out", delta_out)
    if tuple(delta_out.shape) != tuple(zs[-1].shape):
        raise ValueError(
            f"delta_out has shape {tuple(delta_out.shape)} but the output layer's z has "
            f"{tuple(zs[-1].shape)} (cache.zs[-1]): it must be dL/dz of the output layer"
        )
    return _as_jax(cache), _same_float("delta_out", delta_out, dtype)


def sequential_cache(net, cache):
    """For :meth:`jbp.Sequential.output_delta` and ``backward``: a cache of ``net.forward``."""
    residuals, z, out = (getattr(cache, a, None) for a in ("residuals", "z", "out"))
    if not isinstance(residuals, tuple) or not all(hasattr(a, "shape") for a in (z, out)):
        raise TypeError(
            f"cache must be the SequentialCache that net.forward returns, got {type(cache).__name__}"
        )
    if len(residuals) != net.n_layers:
        raise ValueError(
            f"cache holds residuals of {len(residuals)} layers but the network has "
            f"{net.n_layers}; use the cache of net.forward(params, x)"
        )
    want = ", ".join(map(str, net.output_shape))
    if z.ndim != 1 + len(net.output_shape) or tuple(z.shape[1:]) != net.output_shape or out.shape != z.shape:
        raise ValueError(
            f"cache.z has shape {tuple(z.shape)} and cache.out {tuple(out.shape)} but the "
            f"network's output is (batch, {want}) (output_shape)"
        )
    return cache._replace(z=jnp.asarray(z), out=jnp.asarray(out))


def cache_and_targets(net, cache, y) -> tuple:
    """For :meth:`jbp.MLP.output_delta`: a cache of ``net.forward`` and targets for it;
    returns ``(cache, y)``, the cache as JAX arrays and ``y`` as for :func:`inputs_and_targets`."""
    cache = mlp_cache(net, cache)
    z = cache.zs[-1]
    y = targets(net, y, z.shape[0], z.dtype, like=("the cache (cache.zs[-1])", "the cache's arrays"))
    return cache, y


def mlp_cache(net, cache):
    """For :meth:`jbp.MLP.output_delta` and ``backward``: the :class:`jbp.Cache` of
    ``net.forward``, as JAX arrays."""
    zs, xs = _cache_arrays(cache)
    if len(zs) != net.n_layers or len(xs) != net.n_layers + 1:
        raise ValueError(
            f"cache holds {len(zs)} zs and {len(xs)} xs but the network has {net.n_layers} "
            f"layers; use the cache of net.forward(params, x)"
        )
    z, out = zs[-1], xs[-1]
    if z.ndim != 2 or z.shape[1] != net.sizes[-1] or out.shape != z.shape:
        raise ValueError(
            f"cache.zs[-1] has shape {tuple(z.shape)} and cache.xs[-1] {tuple(out.shape)} but "
            f"the network's output is (batch, {net.sizes[-1]}) (sizes[-1])"
        )
    if not jnp.issubdtype(z.dtype, jnp.floating) or out.dtype != z.dtype:
        raise TypeError(f"cache must hold arrays of one floating dtype, got {z.dtype} and {out.dtype}")
    return _as_jax(cache)


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


def fit_args(net, params_, x, y, optimizer_, epochs, batch_size, key, tol, opt_state_,
             start_epoch, loss_and_grad) -> tuple:
    """All of :func:`jbp.fit`'s checks; returns ``(x, y, epochs, batch_size)``."""
    network(net)
    optimizer(optimizer_)
    x, y = inputs_and_targets(net, params_, x, y)
    finite_params(params_)
    finite("x", x)
    finite("y", y)
    epochs = integer("epochs", epochs, low=1, high=MAX_EPOCH)
    n = x.shape[0]
    batch_size = n if batch_size is None else positive_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data (x has {n} rows)")
    if key is None and batch_size < n:
        raise ValueError(
            "key is required to shuffle mini-batches (batch_size < number of examples); "
            "pass key=jax.random.key(seed)"
        )
    if key is not None:
        prng_key("key", key)
    integer("start_epoch", start_epoch, low=0, high=MAX_EPOCH - epochs,
            why=f" so that start_epoch + epochs ({epochs}) fits the int32 epoch counter")
    if tol is not None:
        real("tol", tol)
    function("loss_and_grad", loss_and_grad, "(params, x, y) -> (loss, grads)")
    if opt_state_ is not None:
        opt_state(optimizer_, params_, opt_state_)
    return x, y, epochs, batch_size


def train_step_args(net, optimizer_, params_, opt_state_, loss_and_grad, key=None) -> None:
    """:func:`jbp.train_step`'s own checks (``x`` and ``y`` are checked by the loss)."""
    network(net)
    optimizer(optimizer_)
    net.check_key(key)
    params(net, params_)
    opt_state(optimizer_, params_, opt_state_)
    function("loss_and_grad", loss_and_grad, "(params, x, y) -> (loss, grads)")


def check_grads_args(net, params_, x, y, rtol, finite_differences, key, raise_on_failure) -> tuple:
    """All of :func:`jbp.check_grads`'s checks; returns ``(x, y)``.

    Non-finite params or data are refused: there is no gradient to compare there.
    """
    network(net)
    x, y = inputs_and_targets(net, params_, x, y)
    finite_params(params_)
    finite("x", x)
    finite("y", y)
    if rtol is not None:
        real("rtol", rtol, positive=True)
    flag("finite_differences", finite_differences)
    flag("raise_on_failure", raise_on_failure)
    if key is not None:
        prng_key("key", key)
    return x, y


def checkpoint_args(net, params_, epoch, key, extra) -> None:
    """:func:`jbp.save_checkpoint`'s checks of everything but the optimizer state."""
    network(net)
    params(net, params_)
    integer("epoch", epoch, low=0)
    if key is not None:
        prng_key("key", key)
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict (JSON-serialisable), got {describe(extra)}")
