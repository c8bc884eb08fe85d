"""What a run learned from its training data, kept with it: the inputs' standardisation,
the regression target's scale, the class names (and, for text, a vocabulary), the CSV's
column names, and the size and hash of the data file.

``jbp train`` saves :func:`record` in the checkpoint (``extra["preprocessing"]``) and in
``metrics.json``; ``jbp predict`` and ``jbp evaluate`` read it back as a
:class:`Preprocessing`, which maps raw inputs in the training file's format to what the
network saw, and the network's outputs back to class names or to the target's units. A run
saved before runs kept this has none: its inputs are used as given (:data:`MISSING`).
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple, Optional

import numpy as np

from jbp import datasets
from jbp.cli.common import UsageError

#: What a run saved before runs kept their preprocessing lacks, in one line.
MISSING = ("was saved by an earlier jbp and keeps no preprocessing (feature scaling, target scale, class "
           "names): inputs are used as given and classes are shown as ids")


def fingerprint(path: str, *, hash_contents: bool = True) -> dict:
    """``{"size": bytes, "sha256": hex or None}`` of a data file, or of a folder's files
    (their names and contents, in name order)."""
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
    h = hashlib.sha256() if hash_contents else None
    size = 0
    for file in files:
        size += os.path.getsize(file)
        if h is not None:
            h.update(os.path.basename(file).encode() + b"\0")
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return {"size": size, "sha256": h.hexdigest() if h is not None else None}


def check_unchanged(path: str, known: Optional[dict], out: str) -> None:
    """A one-line :class:`UsageError` when the data file at ``path`` is no longer the one
    fingerprinted as ``known`` when the run in ``out`` was trained (its split would differ)."""
    if known is None or not os.path.exists(path):
        return
    now = fingerprint(path, hash_contents=known.get("sha256") is not None)
    if now != known:
        size = (f"{known['size']:,} -> {now['size']:,} bytes" if now["size"] != known["size"]
                else "same size, different contents")
        raise UsageError(f"--data {path} changed since {out} was trained ({size}); its split would not be the "
                         "run's: restore the file, or train a new run on it")


def record(data: Optional[datasets.Dataset], s: dict, *, hash_contents: bool = True) -> dict:
    """The JSON-ready preprocessing of a run on ``data`` with settings ``s`` (``data`` is
    ``None`` for a memory-mapped run, whose inputs are used as stored)."""
    scaling = lambda sc: sc.to_dict() if sc is not None else None
    return {
        "x_scaling": scaling(getattr(data, "x_scaling", None)),
        "y_scaling": scaling(getattr(data, "y_scaling", None)),
        "classes": list(data.classes) if data is not None and data.classes is not None else None,
        "vocabulary": list(data.vocabulary) if data is not None and data.vocabulary is not None else None,
        "columns": list(data.columns) if data is not None and data.columns is not None else None,
        "target": data.target if data is not None else None,
        "data_file": fingerprint(s["data"], hash_contents=hash_contents) if s.get("data") else None,
    }


class Preprocessing(NamedTuple):
    """A saved run's preprocessing, read back (see :func:`record`)."""

    x_scaling: Optional[datasets.Scaling]
    y_scaling: Optional[datasets.Scaling]
    classes: Optional[list]
    vocabulary: Optional[list]
    columns: Optional[list]
    target: Optional[str]
    data_file: Optional[dict]

    @classmethod
    def from_record(cls, r: dict, where: str) -> "Preprocessing":
        try:
            read = lambda k: datasets.Scaling.from_dict(r[k]) if r.get(k) is not None else None
            return cls(read("x_scaling"), read("y_scaling"), r.get("classes"), r.get("vocabulary"),
                       r.get("columns"), r.get("target"), r.get("data_file"))
        except (AttributeError, ValueError) as e:
            raise UsageError(f"{where}: its preprocessing record is malformed ({e})") from None

    def inputs(self, x: np.ndarray, where: str) -> np.ndarray:
        """Raw inputs as the network saw the training inputs (standardised), float32."""
        if self.x_scaling is None:
            return np.asarray(x, np.float32)
        try:
            return self.x_scaling.apply(x, where)
        except ValueError as e:
            raise UsageError(str(e)) from None

    def outputs(self, p: np.ndarray) -> np.ndarray:
        """The network's outputs in the user's units (a regression's targets mapped back)."""
        return self.y_scaling.invert(p) if self.y_scaling is not None else p

    def label_names(self, ids: np.ndarray) -> list:
        """Class ids as the run's class names (the ids themselves when it has none)."""
        ids = np.asarray(ids).astype(int)
        return [self.classes[i] for i in ids] if self.classes is not None else ids.tolist()

    def class_ids(self, labels, where: str) -> np.ndarray:
        """Targets as given in a data file (class names or labels) as the run's class ids."""
        labels = np.asarray(labels)
        if self.classes is None:
            return labels
        ids = {_label_key(c): i for i, c in enumerate(self.classes)}
        as_key = _label_key if all(isinstance(c, int) for c in self.classes) else str
        keys = [as_key(v) for v in labels.tolist()]
        unknown = sorted({k for k in keys if k not in ids})
        if unknown:
            raise UsageError(f"{where} holds labels {unknown[:5]} that the run does not know; its classes are "
                             f"{', '.join(map(str, self.classes))}")
        return np.array([ids[k] for k in keys], np.int32)


def _label_key(v) -> str:
    """An integer label however it is written (``3``, ``3.0``, ``"3"``, ``"3.0"``) as one key."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(int(f)) if f.is_integer() else str(v)


def empty() -> Preprocessing:
    """What a run saved before runs kept their preprocessing is read back as."""
    return Preprocessing(None, None, None, None, None, None, None)
