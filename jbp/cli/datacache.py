"""The built-in datasets for the command line, with the scikit-learn ones cached.

``digits`` comes from scikit-learn, whose import (with SciPy) takes longer than training
the default network. The CLI keeps each split it made in ``$XDG_CACHE_HOME/jbp/datasets``
(beside the compilation cache, and off with it: ``--no-cache``, ``JBP_NO_CACHE=1``) as an
``.npz`` archive read without pickle, keyed by the dataset, seed, jbp's version and
scikit-learn's (its split may change between versions). The arrays read back are exactly
those :func:`jbp.datasets.load` returned.
"""

from __future__ import annotations

import importlib.metadata
import os
import zipfile

import numpy as np

import jbp
from jbp import datasets
from jbp.cli import common, runtime

#: Datasets worth caching: those that import scikit-learn.
CACHED = ("digits",)
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def path(name: str, seed: int) -> str:
    try:
        sklearn = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - in the cli extra
        sklearn = "none"
    folder = os.path.join(os.path.dirname(runtime.cache_dir()), "datasets")
    return os.path.join(folder, f"{name}-seed{seed}-jbp{jbp.__version__}-sklearn{sklearn}.npz")


def load(name: str, seed: int, *, cache: bool) -> datasets.Dataset:
    """:func:`jbp.datasets.load`, read from the cache when ``cache`` and it is there (a
    bad name or seed is a :class:`jbp.cli.common.UsageError`)."""
    if not cache or name not in CACHED or not isinstance(seed, int):
        return common.usage(datasets.load, name, seed=seed)
    file = path(name, seed)
    try:
        with np.load(file, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _ARRAYS}
            return datasets.Dataset(name, **arrays, loss=str(f["loss"]), n_outputs=int(f["n_outputs"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # not cached yet, or unreadable: make it again
    data = common.usage(datasets.load, name, seed=seed)
    tmp = f"{file}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **{k: getattr(data, k) for k in _ARRAYS}, loss=data.loss, n_outputs=data.n_outputs)
        os.replace(tmp, file)
    except OSError:  # a read-only cache folder only costs the speed-up
        if os.path.exists(tmp):
            os.remove(tmp)
    return data
