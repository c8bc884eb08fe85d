"""The standardisation a run learns from its training split, kept so that new raw inputs
(and a regression's outputs) can be mapped exactly as the training data was.

A :class:`Scaling` is the per-column affine map ``z = (v - mean) / scale`` with ``mean``
and ``scale`` the training split's mean and standard deviation (a constant column keeps
``scale = 1``: centred, not divided by zero). :meth:`Scaling.to_dict` and
:meth:`Scaling.from_dict` write it as JSON that round-trips float32 exactly, so a
checkpoint or ``metrics.json`` can carry it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Scaling(NamedTuple):
    """``z = (v - mean) / scale`` per column; ``mean`` and ``scale`` have one example's shape.

    Attributes:
      mean: the training split's mean per column (per pixel for images), float32.
      scale: its standard deviation per column, float32, with 1 for a constant column.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, a) -> "Scaling":
        """The scaling of ``a`` ``(n, ...)``: mean and standard deviation over its rows
        (computed in float64)."""
        a = np.asarray(a)
        mean, std = a.mean(axis=0, dtype=np.float64), a.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))

    @property
    def shape(self) -> tuple:
        return tuple(self.mean.shape)

    def _fit_rows(self, v: np.ndarray, name: str) -> tuple:
        """``v`` ``(n, ...)`` and the mean and scale shaped to it: one example's shape, or
        a flat row of the same size."""
        v = np.asarray(v, np.float32)
        size = int(np.prod(self.shape))
        if tuple(v.shape[1:]) == self.shape:
            return v, self.mean, self.scale
        if v.ndim >= 2 and int(np.prod(v.shape[1:])) == size:
            return v.reshape(len(v), size), self.mean.reshape(size), self.scale.reshape(size)
        raise ValueError(f"{name} has examples of shape {tuple(v.shape[1:])}, but the scaling was fitted "
                         f"on examples of shape {self.shape}")

    def apply(self, v, name: str = "v") -> np.ndarray:
        """``(v - mean) / scale``, float32, in ``v``'s shape (``v`` may be given flat)."""
        v, mean, scale = self._fit_rows(v, name)
        return ((v - mean) / scale).astype(np.float32)

    def invert(self, z, name: str = "z") -> np.ndarray:
        """``z * scale + mean``: standardised values back in the original units, float32."""
        z, mean, scale = self._fit_rows(z, name)
        return (z * scale + mean).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"shape": [...], "mean": [...], "scale": [...]}`` (flat lists)."""
        return {"shape": list(self.shape), "mean": self.mean.ravel().tolist(),
                "scale": self.scale.ravel().tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaling":
        """The inverse of :meth:`to_dict`; a malformed dict is a ``ValueError``."""
        try:
            shape = tuple(int(n) for n in d["shape"])
            mean = np.asarray(d["mean"], np.float32).reshape(shape)
            scale = np.asarray(d["scale"], np.float32).reshape(shape)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"a scaling must be a dict with shape, mean and scale of that shape: {e}") from None
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("a scaling's mean must be finite and its scale finite and > 0")
        return cls(mean, scale)
