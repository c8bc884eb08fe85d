"""``--layers SPEC``: a network of layers written on the command line.

The grammar (see :data:`HELP`): items separated by commas, each a layer name and its
integer or decimal arguments separated by colons; an activation name is an activation
layer. The network's input shape follows from the first layer: digits' 64 features are
an ``8 x 8 x 1`` image for a ``conv2d`` first layer and a ``64 x 1`` signal for a
``conv1d`` one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jbp.cli.common import UsageError
from jbp.model.activations import HIDDEN_ACTIVATIONS
from jbp.model.sequential import Sequential

HELP = (
    "a network of layers instead of --hidden: comma-separated items, each NAME[:ARG...]: "
    "dense:N, conv2d:FEATURES:KERNEL[:STRIDE], conv1d:FEATURES:KERNEL[:STRIDE], "
    "maxpool2d:WINDOW, avgpool2d:WINDOW, maxpool1d:WINDOW, avgpool1d:WINDOW (stride = window), "
    "flatten, dropout:RATE, layernorm, or an activation name (relu, tanh, ...); the last "
    "layer gives the outputs (dense:10 on digits). Digits become 8x8x1 images when the first "
    "layer is conv2d (64x1 signals for conv1d). "
    "Example: conv2d:16:3,relu,maxpool2d:2,flatten,dense:10"
)

#: Named models for ``--model``.
MODELS = {
    "cnn": "conv2d:16:3,relu,conv2d:32:3,relu,maxpool2d:2,flatten,dense:64,relu,dense:10",
}


def option(args):
    """The spec of ``--model NAME`` or ``--layers SPEC`` (``None`` for neither)."""
    if args.model is not None:
        if args.model not in MODELS:
            raise UsageError(f"unknown --model {args.model!r}; expected one of {', '.join(MODELS)}")
        if args.layers is not None:
            raise UsageError("give --model or --layers, not both")
        return MODELS[args.model]
    return args.layers


def _ints(name: str, item: str, args: list, low: int, high: int) -> list:
    if not low <= len(args) <= high:
        want = f"{low}" if low == high else f"{low} to {high}"
        raise UsageError(f"--layers item {item!r}: {name} takes {want} integer arguments, got {len(args)}")
    try:
        values = [int(a) for a in args]
    except ValueError:
        raise UsageError(f"--layers item {item!r}: {name}'s arguments must be integers") from None
    if any(v < 1 for v in values):
        raise UsageError(f"--layers item {item!r}: {name}'s arguments must be >= 1")
    return values


def layer(item: str):
    """One item of the spec as a layer."""
    import jbp.layers as L

    name, *args = item.strip().split(":")
    name = name.lower()
    if name in HIDDEN_ACTIVATIONS and not args:
        return name
    if name == "dense":
        (n,) = _ints(name, item, args, 1, 1)
        return L.Dense(n)
    if name in ("conv2d", "conv1d"):
        f, k, *s = _ints(name, item, args, 2, 3)
        s = s[0] if s else 1
        if name == "conv2d":
            return L.Conv2D(f, (k, k), strides=(s, s))
        return L.Conv1D(f, k, stride=s)
    if name in ("maxpool2d", "avgpool2d"):
        (w,) = _ints(name, item, args, 1, 1)
        return (L.MaxPool2D if name.startswith("max") else L.AvgPool2D)((w, w), (w, w))
    if name in ("maxpool1d", "avgpool1d"):
        (w,) = _ints(name, item, args, 1, 1)
        return (L.MaxPool1D if name.startswith("max") else L.AvgPool1D)(w, w)
    if name in ("flatten", "layernorm") and not args:
        return L.Flatten() if name == "flatten" else L.LayerNorm()
    if name == "dropout" and len(args) == 1:
        try:
            rate = float(args[0])
        except ValueError:
            rate = math.nan
        if not 0 <= rate < 1:
            raise UsageError(f"--layers item {item!r}: dropout's rate must be a number in [0, 1)")
        return L.Dropout(rate)
    raise UsageError(
        f"--layers item {item!r} is not a layer; expected dense:N, conv2d:F:K[:S], conv1d:F:K[:S], "
        f"maxpool2d:W, avgpool2d:W, maxpool1d:W, avgpool1d:W, flatten, dropout:RATE, layernorm "
        f"or an activation name"
    )


def parse(spec: str) -> list:
    """The layers of a spec (activation names stay names)."""
    items = [item for item in spec.split(",")]
    if not spec.strip() or any(not item.strip() for item in items):
        raise UsageError(f"--layers must be comma-separated layers like dense:64,relu,dense:10, got {spec!r}")
    return [layer(item) for item in items]


def input_shape(first, n_features: int) -> tuple:
    """One example's shape for the first layer: an image or a signal for a convolution."""
    kind = type(first).__name__
    if kind == "Conv2D":
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise UsageError(f"conv2d needs square images, but the data has {n_features} features")
        return (side, side, 1)
    if kind == "Conv1D":
        return (n_features, 1)
    return (n_features,)


def network(spec: str, data) -> Sequential:
    """The Sequential a spec describes for ``data`` (its loss and input shape)."""
    layers = parse(spec)
    try:
        net = Sequential(input_shape(layers[0], data.n_features), layers, loss=data.loss)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--layers {spec!r}: {e}") from None
    if net.output_shape != (data.n_outputs,):
        raise UsageError(
            f"--layers {spec!r}: the last layer gives {net.output_shape[0]} outputs but {data.name} "
            f"needs {data.n_outputs}; end with dense:{data.n_outputs}"
        )
    return net


def shaped_data(net, data):
    """``data`` with its inputs ``(n, n_features)`` reshaped to ``(n, *net.input_shape)``."""
    shape = lambda x: np.asarray(x).reshape((len(x), *net.input_shape))
    return dataclasses.replace(data, x_train=shape(data.x_train), x_test=shape(data.x_test))
