"""A network's description as JSON, and the network rebuilt from it (for checkpoints).

A :class:`jbp.MLP` is its sizes, activation names, loss and init scheme. A
:class:`jbp.Sequential` is its input shape, loss, output activation, init scheme and
its layers, each written as its type name and its fields (``{"type": "Conv2D",
"fields": {"features": 16, ...}}``; a layer holding layers, such as ``Residual``, holds
their descriptions). Rebuilding never executes code from the file: a type name is only
looked up among jbp's built-in layers (:mod:`jbp.layers`). A layer of your own is saved
under its qualified name; to load it, pass the network itself (``load_checkpoint(path,
net=net)``), which must have the description saved.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from jbp.model.base import Network
from jbp.model.network import MLP
from jbp.model.sequential import Sequential


class NotRebuilt(ValueError):
    """The file's network cannot be rebuilt as asked (a layer of your own, or another ``net``)."""


def _builtin_layers() -> dict:
    import jbp.layers

    return {
        name: obj
        for name in getattr(jbp.layers, "__all__", ())
        if isinstance(obj := getattr(jbp.layers, name), type)
    }


def _jsonable(value: Any) -> Any:
    if _is_layer(value):
        return layer_description(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a layer field must be a number, a string, a tuple or a layer, got {value!r}")


def _is_layer(value: Any) -> bool:
    return all(callable(getattr(value, m, None)) for m in ("init", "forward", "backward"))


def layer_type(layer: Any) -> str:
    """The name a layer is saved under: its class name if built in, else ``module.Class``."""
    cls = type(layer)
    if cls.__module__.startswith("jbp.layers") and _builtin_layers().get(cls.__name__) is cls:
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def layer_description(layer: Any) -> dict:
    """``{"type": ..., "fields": {...}}`` of a layer (a dataclass's fields)."""
    fields = (
        {f.name: _jsonable(getattr(layer, f.name)) for f in dataclasses.fields(layer)}
        if dataclasses.is_dataclass(layer) else {}
    )
    return {"type": layer_type(layer), "fields": fields}


def describe(net: Network) -> dict:
    """The JSON-ready description of ``net`` (its ``description``, layers by :func:`layer_description`)."""
    return net.description(layer_description)


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (layers are frozen and hashable); layer dicts to layers."""
    if isinstance(value, dict) and set(value) == {"type", "fields"}:
        return build_layer(value)
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def build_layer(d: dict) -> Any:
    """A built-in layer from its description."""
    name = d["type"]
    builtin = {} if "." in name else _builtin_layers()  # a layer of your own: module.Class
    if name not in builtin:
        raise NotRebuilt(
            f"layer type {name!r} is not one of jbp's built-in layers; a layer of your own "
            "is not rebuilt from a file: pass the network, load_checkpoint(path, net=net)"
        )
    cls, fields = builtin[name], {k: _tuples(v) for k, v in d["fields"].items()}
    if cls.__dataclass_params__.init:
        return cls(**fields)
    # A layer with its own __init__ (arguments named unlike its fields, e.g. Dense's
    # ``init`` stored as ``init_name``): set the fields; Sequential then checks the layers.
    if set(fields) != {f.name for f in dataclasses.fields(cls)}:
        raise ValueError(f"layer {name} has fields {sorted(f.name for f in dataclasses.fields(cls))}, got {sorted(fields)}")
    layer = object.__new__(cls)
    for k, v in fields.items():
        object.__setattr__(layer, k, v)
    return layer


def rebuild(d: dict, net: Optional[Network] = None) -> Network:
    """The network a description describes; with ``net``, checks that it is that one."""
    if net is not None:
        if describe(net) != d:
            raise NotRebuilt(
                f"net does not match the network saved in the checkpoint: saved {d}, "
                f"given {describe(net)}"
            )
        return net
    if d.get("kind") == "Sequential":
        return Sequential(
            tuple(d["input_shape"]), [build_layer(layer) for layer in d["layers"]],
            loss=d["loss"], output_activation=d["output_activation"], init=d["init"],
        )
    return MLP(d["sizes"], activation=tuple(d["activation"]),
               output_activation=d["output_activation"], loss=d["loss"], init=d["init"])
