"""``jbp predict --out DIR [--data FILE] [--to FILE]``: a saved run's predictions.

Reads the run's checkpoint (and ``best.npz``, the kept epoch's parameters, for a run with
validation). The inputs are ``--data``, raw, in the format of the run's training file: a
``.csv`` with a header (the run's feature columns are taken by name; the target column,
when present, gives the targets), a ``.npy`` array ``(n, ...)``, an ``.npz`` archive with
``x`` (and optionally ``y``, the targets: class names or numbers), or a folder holding
``x.npy`` (and ``y.npy``). They are standardised as the run's training inputs were (the run
keeps its training split's means and scales), and images may be given flat. Without
``--data``: the run's own test split (its seed's split of its dataset or ``--data`` file;
a ``--mmap`` run: its folder's ``x_test.npy``, ``y_test.npy``). Writes ``--to`` (default
``DIR/predictions.csv``):

- ``.csv``: a header, then one row per example. Classification: ``prediction`` (the class
  name), ``target`` when the targets are known, and the probability of each class,
  ``p_NAME`` (``p_1`` for a single sigmoid output). Regression: ``y_hat_0 ...`` and, when
  known, ``target_0 ...``, in the target's own units.
- ``.npy``: the network's outputs ``(n, n_outputs)``, float32: probabilities, or the
  regression values in the target's units.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from jbp.cli import common, datafiles, runtime, saved
from jbp.cli.common import UsageError, say
from jbp.datasets.files import read_csv_columns


def add_parser(commands) -> None:
    p = commands.add_parser("predict", help="write the predictions of a run saved by jbp train --out DIR")
    p.add_argument("--out", required=True, help="the run's folder (its checkpoint is read)")
    p.add_argument("--data", help="raw inputs in the training file's format: .csv (the target column may be "
                                  "left out), .npy, .npz with x [and y], or a folder of x.npy [and y.npy]; "
                                  "standardised as the run's training inputs were (default: the run's own "
                                  "test split)")
    p.add_argument("--to", help="where to write: .csv or .npy (default DIR/predictions.csv)")
    common.cache_option(p)


def _arrays(path: str) -> tuple:
    """``(x, y or None)`` of a ``.npy`` file, an ``.npz`` archive or a folder of ``.npy`` files."""
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "x.npy")):
            raise UsageError(f"--data {path} is a folder without x.npy; expected x.npy (and y.npy)")
        arrays = {}
        for k in ("x", "y"):
            file = os.path.join(path, f"{k}.npy")
            if os.path.exists(file):
                arrays[k] = common.usage(np.load, file, allow_pickle=False)
        return arrays["x"], arrays.get("y")
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["x"], (f["y"] if "y" in f.files else None)
    except TypeError:  # a .npy file: np.load returned the array itself, which is no context manager
        return np.load(path, allow_pickle=False), None
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise UsageError(f"--data {path} is not a .npy array or an .npz archive with x: {e}") from None


def _csv(path: str, run: saved.SavedRun, n_features: int) -> tuple:
    """``(x, targets as text or None)`` of a CSV: the run's feature columns by name (a run
    not trained on a CSV: every column, or all but the last when there is one too many)."""
    pre = run.preprocessing
    if pre.columns is not None:
        x, labels, _, _ = common.usage(read_csv_columns, path, pre.target, pre.columns, target_required=False)
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        with_target = len(header) == n_features + 1
        x, labels, _, _ = common.usage(read_csv_columns, path, header[-1] if with_target else None,
                                       None if with_target else header, target_required=with_target)
    return x, (None if labels is None else [text for _, text in labels])


def read_inputs(path: str, run: saved.SavedRun) -> tuple:
    """``(x, y or None)`` of ``--data``: ``x`` raw, ``(n, *input_shape)`` float32 as the
    network takes it once standardised (see :meth:`Preprocessing.inputs`); ``y`` as the
    network's targets (class ids, or the regression targets in the file's units)."""
    if not os.path.exists(path):
        raise UsageError(f"--data must be a .csv, .npy or .npz file or a folder of .npy files, got {path!r}, "
                         "which does not exist")
    net, pre = run.checkpoint.net, run.preprocessing
    shape = saved.input_shape(net)
    size = int(np.prod(shape))
    if path.lower().endswith(".csv"):
        x, y = _csv(path, run, size)
    else:
        x, y = _arrays(path)
    x = np.asarray(x)
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != size or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        want = ", ".join(map(str, ("n", *shape))) + (f") or (n, {size}" if len(shape) > 1 else "")
        raise UsageError(f"--data {path} must hold numbers of shape ({want}), got {x.dtype} {x.shape}")
    if y is not None and len(y) != len(x):
        raise UsageError(f"--data {path}: {len(x)} inputs but {len(y)} targets; they must match")
    x = pre.inputs(x, f"--data {path}").reshape(len(x), *shape)
    if y is not None:
        if net.loss_name == "mse":
            y = common.usage(np.asarray, y, np.float32).reshape(len(x), -1)
        else:
            y = pre.class_ids(y, f"--data {path}")
    return x, y


def run(args) -> int:
    if args.to and not args.to.endswith((".csv", ".npy")):
        raise UsageError(f"--to must end in .csv or .npy, got {args.to!r}")
    r = saved.load(args.out)
    net, params, pre = r.checkpoint.net, r.params, r.preprocessing
    if args.data:
        x, y = read_inputs(args.data, r)
        source = args.data
    elif r.settings.get("mmap"):
        arrays = datafiles.mmap_arrays(r.settings)
        if "x_test" not in arrays:
            raise UsageError(f"{args.out} is a --mmap run whose folder has no x_test.npy; give --data FILE")
        x = np.asarray(arrays["x_test"], np.float32).reshape(len(arrays["x_test"]), *saved.input_shape(net))
        y, source = np.asarray(arrays["y_test"]), f"{arrays['where']}/x_test.npy"
    else:
        data = saved.dataset(r, cache=runtime.cache_wanted(args.no_cache))
        x, y, source = data.x_test, data.y_test, f"the {data.name} test split (seed {r.settings['seed']})"
        if net.loss_name == "mse":
            y = pre.outputs(y)  # the targets in their own units, as the predictions
    p = pre.outputs(np.asarray(net.predict(params, x), np.float32))
    to = args.to or os.path.join(args.out, "predictions.csv")
    try:
        if to.endswith(".npy"):
            np.save(to, p)
        else:
            write_csv(to, p, y, net.loss_name != "mse", pre)
    except OSError as e:
        raise UsageError(f"--to {to}: cannot write there ({e.strerror or e})") from None
    say(f"wrote {to}: {len(x)} predictions for {source}")
    return 0


def write_csv(path: str, p: np.ndarray, y, classification: bool, pre) -> None:
    """The predictions as CSV: class names and probabilities, or values in the target's units."""
    number = lambda v: f"{v:.6g}"
    if classification:
        ids = p.argmax(1) if p.shape[1] > 1 else (p[:, 0] > 0.5).astype(int)
        head = ["prediction"] + (["target"] if y is not None else [])
        head += [f"p_{name}" for name in pre.label_names(np.arange(p.shape[1]))] if p.shape[1] > 1 else ["p_1"]
        columns = [pre.label_names(ids)]
        if y is not None:
            y = np.asarray(y)
            columns.append(pre.label_names(y if y.ndim == 1 else (y[:, 0] > 0.5).astype(int)))
        columns += [[number(v) for v in p[:, k]] for k in range(p.shape[1])]
    else:
        head = [f"y_hat_{k}" for k in range(p.shape[1])]
        columns = [[number(v) for v in p[:, k]] for k in range(p.shape[1])]
        if y is not None:
            y = np.asarray(y, np.float32).reshape(len(p), -1)
            head += [f"target_{k}" for k in range(p.shape[1])]
            columns += [[number(v) for v in y[:, k]] for k in range(y.shape[1])]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(head)
        w.writerows(zip(*columns))
