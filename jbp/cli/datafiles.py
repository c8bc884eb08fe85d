"""``jbp train``'s data options: a user's file (``--data``), the validation split
(``--val-fraction``), early stopping (``--patience``), and training from memory-mapped
``.npy`` files (``--mmap``).

The data options are run settings: ``--resume`` takes them from the checkpoint. The
validation rows are taken from the training split (stratified for classes, with the run's
seed); the test split is never used for any choice. With validation, the run keeps the
parameters of the epoch with the lowest validation loss: they are written to ``best.npz``.
``checkpoint.npz`` holds the last epoch's state, with the early-stopping state (the best
parameters, loss and epoch) beside the optimizer state, from which ``--resume`` continues.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import jax
import numpy as np

from jbp import datasets
from jbp.cli.common import UsageError, usage
from jbp.datasets.files import read_npy_folder
from jbp.training.checkpoint import restore_opt_state, save_checkpoint
from jbp.training.early_stopping import Best

#: The data settings of a run (saved with it, kept by ``--resume``).
DATA_SETTINGS = ("data", "target", "features", "task", "val_fraction", "patience", "mmap")
BEST = "best.npz"


def add_data_option(p) -> None:
    """``--data`` and the options that say how to read it (``train`` and ``check``)."""
    p.add_argument("--data", help="your own data: a .csv or .npz file, a folder of .npy files "
                                  "(x.npy, y.npy) or of IDX files (MNIST format); see README")
    p.add_argument("--target", help="CSV: the target column (default: the last)")
    p.add_argument("--features", help="CSV: comma-separated input columns (default: all but the target)")
    p.add_argument("--task", help="classification or regression (default: classification for CSV; "
                                  "by the dtype of y for .npz/.npy)")


def add_options(p) -> None:
    add_data_option(p)
    p.add_argument("--val-fraction", type=float,
                   help="hold out this share of the training data for validation (stratified)")
    p.add_argument("--patience", type=int,
                   help="with --val-fraction: stop after this many epochs without a lower validation loss")
    p.add_argument("--mmap", action="store_true", default=None,
                   help="--data FOLDER of .npy files: memory-map them and stream chunks (data bigger than memory)")


def check(s: dict) -> None:
    """The data settings' own checks (before anything is read)."""
    if s.get("data") is None:
        for k in ("target", "features", "task", "mmap"):
            if s.get(k):
                raise UsageError(f"--{k} applies to --data PATH, which was not given")
    if s.get("val_fraction") is not None and not 0 < s["val_fraction"] < 1:
        raise UsageError(f"--val-fraction must be in (0, 1), got {s['val_fraction']}")
    if s.get("patience") is not None:
        if s["patience"] < 1:
            raise UsageError(f"--patience must be >= 1, got {s['patience']}")
        if s.get("val_fraction") is None:
            raise UsageError("--patience needs --val-fraction: early stopping watches the validation loss")
    if s.get("mmap") and s.get("val_fraction") is not None:
        raise UsageError("--val-fraction is not available with --mmap; hold out x_test.npy/y_test.npy instead")
    if s.get("mmap"):
        others = [flag for flag, given in (
            ("--layers/--model", s.get("layers")),
            ("--dp-*", any(s.get(k) is not None for k in ("dp_clip", "dp_noise", "dp_epsilon"))),
            ("jbp launch", jax.distributed.is_initialized()),
        ) if given]
        if others:
            raise UsageError(f"--mmap trains a jbp.MLP in one process, without DP-SGD; "
                             f"{', '.join(others)} cannot be combined with it")


def load(s: dict, builtin=None, scale_targets: bool = True):
    """``(data, validation)``: the dataset of the run's settings, flattened for an MLP, its
    training split without the validation rows, and ``(x_val, y_val)`` or ``None``.
    ``builtin(name, seed)`` loads a built-in dataset (default :func:`jbp.datasets.load`);
    ``scale_targets``: standardise a file's regression targets (runs saved before this
    was done trained on them as they are)."""
    if s.get("data") is None:
        data = builtin(s["dataset"], s["seed"]) if builtin else usage(datasets.load, s["dataset"], seed=s["seed"])
    else:
        if not os.path.exists(s["data"]):
            raise UsageError(f"--data {s['data']}: no such file or folder")
        features = s["features"].split(",") if s.get("features") else None
        data = usage(datasets.load_file, s["data"], target=s.get("target"), features=features,
                     task=s.get("task"), seed=s["seed"], scale_targets=scale_targets)
    data = datasets.flatten(data)
    if s.get("val_fraction") is None:
        return data, None
    n = len(data.y_train)
    keep, held = datasets.split(data.y_train, s["val_fraction"], s["seed"], stratify=data.is_classification)
    if len(held) == 0:
        raise UsageError(f"--val-fraction {s['val_fraction']} of {n} training examples holds out none; raise it")
    batch = min(s.get("batch_size") or 1, n)
    if len(keep) < batch:
        most = max(math.floor((n - batch) / n * 100) / 100, 0)
        raise UsageError(f"--val-fraction {s['val_fraction']} leaves {len(keep)} of {n} training examples for "
                         f"training, fewer than one batch ({batch}); use at most {most:g}"
                         + ("" if most > 0 else " (or a smaller --batch-size)"))
    validation = (data.x_train[held], data.y_train[held])
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep]), validation


def save_best(out: str, net, best: Best, s: dict) -> None:
    """Writes the best epoch's parameters, the ones the run keeps (``best.npz``), atomically."""
    save_checkpoint(os.path.join(out, BEST), net=net, params=best.params, epoch=int(best.epoch) + 1,
                    extra={"best_epoch": int(best.epoch), "val_loss": float(best.val_loss), "settings": s})


def saved_state(opt_state, best: Optional[Best]):
    """What ``checkpoint.npz`` stores as its optimizer state: with validation, the early
    stopping state rides along (``(opt_state, Best)``), so that one atomically written file
    holds all a resume needs."""
    return opt_state if best is None else (opt_state, best)


def restore(optimizer, saved, validation) -> tuple:
    """``(opt_state, best)`` of a saved checkpoint (``best`` is ``None`` without validation)."""
    params = saved.params
    if validation is None:
        return usage(restore_opt_state, optimizer, params, saved.opt_state), None
    template = (optimizer.init(params), Best(params, np.float32(0), np.int32(0)))
    n_opt = len(jax.tree.leaves(template[0]))
    leaves = list(saved.opt_state or [])
    if len(leaves) != len(jax.tree.leaves(template)):
        raise UsageError("the checkpoint has no validation state to resume (was it saved without --val-fraction?)")
    opt_state = usage(restore_opt_state, optimizer, params, leaves[:n_opt])
    best = jax.tree.unflatten(jax.tree.structure(template[1]), leaves[n_opt:])
    return opt_state, best


def validation_metrics(history_val_loss: list, history_val_acc: list, best: Best, validation) -> dict:
    return {"n": len(validation[0]), "val_loss": history_val_loss, "val_accuracy": history_val_acc,
            "best_epoch": int(best.epoch), "kept_epoch": int(best.epoch) + 1,
            "best_val_loss": float(best.val_loss)}


def mmap_arrays(s: dict) -> dict:
    """The memory-mapped ``x.npy``, ``y.npy`` (and test pair) of ``--data FOLDER --mmap``."""
    folder = s["data"]
    if os.path.isfile(folder) and os.path.basename(folder) == "x.npy":
        folder = os.path.dirname(folder) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--mmap needs --data FOLDER holding x.npy and y.npy, got {s['data']}")
    return usage(read_npy_folder, folder, mmap=True)
