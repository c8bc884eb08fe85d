"""Argument checks shared by the built-in layers, in jbp's one-line form (see
:mod:`jbp._validate`): constructor fields when a layer is made, ``input_shape`` and
``dtype`` in ``init``. Nothing here runs under ``jit``'s traced values."""

from __future__ import annotations

from typing import Any

import numpy as np

from jbp import _validate

#: The paddings of convolutions, as in ``lax.conv_general_dilated``.
PADDINGS = ("SAME", "VALID")


def layer_name(layer) -> str:
    return type(layer).__name__


def ints(arg: str, value: Any, n: int) -> tuple:
    """``n`` positive ints: one int (repeated) or a sequence of ``n``."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{arg} must have {n} entries, one per spatial axis, got {tuple(value)!r}")
        return tuple(_validate.positive_int(f"{arg}[{i}]", v) for i, v in enumerate(value))
    return (_validate.positive_int(arg, value),) * n


def input_shape(layer, value: Any, rank: int | None, what: str) -> tuple:
    """Checks ``init``'s ``input_shape``: a tuple of positive ints (no batch axis), of
    ``rank`` entries (any rank >= 1 if ``None``); ``what`` names the axes expected."""
    where = f"{layer_name(layer)}.init's input_shape"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or np.ndim(value) != 1:
        raise TypeError(f"{where} must be a tuple of ints {what} (no batch axis), got {value!r}")
    shape = tuple(_validate.positive_int(f"{where}[{i}]", n) for i, n in enumerate(value))
    if (rank is None and not shape) or (rank is not None and len(shape) != rank):
        raise ValueError(
            f"{where} must be {what} ({'at least 1' if rank is None else rank} "
            f"{'entry' if rank in (None, 1) else 'entries'}, no batch axis), got {shape}"
        )
    return shape


def init_args(layer, key: Any, shape: Any, dtype: Any, rank: int | None, what: str) -> tuple:
    """``init``'s ``(key, input_shape, dtype)``, checked."""
    _validate.prng_key(f"{layer_name(layer)}.init's key", key)
    return key, input_shape(layer, shape, rank, what), _validate.float_dtype(f"{layer_name(layer)}.init's dtype", dtype)
