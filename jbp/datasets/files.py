"""A user's own data files: CSV, NumPy (``.npz``, ``.npy`` pairs) and IDX (MNIST's format).

:func:`load_file` reads any of them into the same :class:`~jbp.datasets.Dataset` the
built-in datasets use:

- **CSV** with a header row. ``target`` names the target column (default: the last one),
  ``features`` the input columns (default: all the others), all numeric. For
  ``task="classification"`` (the default) the target holds class labels, integers or
  names, mapped to ids ``0..k-1`` in sorted order (``Dataset.classes[id]`` is the label);
  for ``task="regression"`` it holds numbers.
- **``.npz``** with arrays ``x`` ``(n, ...)`` and ``y`` ``(n,)`` or ``(n, k)``, and
  optionally ``x_test`` and ``y_test``.
- **``.npy`` pairs**: a folder holding ``x.npy`` and ``y.npy`` (optionally ``x_test.npy``
  and ``y_test.npy``), named like the ``.npz`` keys; ``path`` is the folder or its
  ``x.npy``. For these two, ``task=None`` means classification for integer, bool or
  string ``y`` and regression for floating ``y``.
- **IDX**, the format of MNIST, Fashion-MNIST and KMNIST: a folder holding
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte`` (``test-`` for ``t10k-`` also works, ``.gz`` or not). Images
  keep their shape, ``(n, rows, cols, 1)``; :func:`flatten` makes them rows for an MLP.

A file without a test split is split with :func:`split` (stratified for classes,
deterministic in ``seed``). Inputs are standardised with the training split's mean and
standard deviation per feature (per pixel for images), as :func:`jbp.datasets.digits`
does, and so are regression targets; the maps are kept in the dataset (``x_scaling``,
``y_scaling``), so that new raw rows can be standardised alike and a network's outputs
mapped back to the file's units. Nothing is downloaded.

Every malformed file raises a one-line ``ValueError`` that names the file, where (the line
of a CSV, the byte offset of an IDX file) and what was expected.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import math
import os
import zipfile
from typing import Optional, Sequence

import numpy as np

from jbp.datasets.builtin import Dataset
from jbp.datasets.scaling import Scaling

TASKS = ("classification", "regression")

#: IDX type codes (the magic number's third byte): NumPy dtype (big-endian) and name.
IDX_TYPES = {0x08: (">u1", "unsigned byte"), 0x09: (">i1", "signed byte"), 0x0B: (">i2", "short"),
             0x0C: (">i4", "int"), 0x0D: (">f4", "float"), 0x0E: (">f8", "double")}
#: The IDX files of a folder: (split, kind) -> the accepted name prefixes.
IDX_NAMES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte", "test-images-idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte", "test-labels-idx1-ubyte"),
}


def load_file(
    path: str | os.PathLike,
    *,
    target: Optional[str] = None,
    features: Optional[Sequence[str]] = None,
    task: Optional[str] = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    scale_targets: bool = True,
) -> Dataset:
    """Reads a data file (CSV, ``.npz``, a folder of ``.npy`` or of IDX files) as a :class:`Dataset`.

    Args:
      path: a ``.csv`` or ``.npz`` file, a folder of ``.npy`` files (or its ``x.npy``), or
        a folder of IDX files.
      target: CSV only: the target column (default: the last).
      features: CSV only: the input columns (default: every column but the target).
      task: ``"classification"`` or ``"regression"``; ``None`` infers it (see the module).
      seed: seed of the train/test split, for files without a test split.
      test_fraction: the share of examples held out for the test split, in (0, 1).
      scale_targets: regression only: standardise the targets too (on the training
        split), keeping the map back in ``y_scaling``; ``False`` keeps them as they are.

    Returns:
      A :class:`Dataset`: inputs float32 and standardised on the training split (the map
      in ``x_scaling``); ``cross_entropy`` with integer ids for classes (``classes``
      lists their labels), ``mse`` with float32 ``(n, k)`` targets for regression.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError, TypeError: a bad argument, or a malformed file (one line naming the
        file, the line or byte offset, and what was expected).
    """
    path = os.fspath(path)
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file or folder: {path}")
    if (target is not None or features is not None) and not path.lower().endswith(".csv"):
        raise ValueError(f"target and features select CSV columns, but {path} is not a .csv file")
    name = os.path.basename(os.path.normpath(path))
    if path.lower().endswith(".csv"):
        x, labels, task, classes, columns, target = read_csv(path, target, features, task or "classification")
        d = _dataset(name, x, labels, None, None, task, classes, seed, test_fraction, scale_targets)
        return dataclasses.replace(d, columns=tuple(columns), target=target)
    if path.lower().endswith(".npz"):
        arrays = read_npz(path)
    elif os.path.isdir(path) and _idx_file(path, "train", "images", required=False):
        return _dataset(name, *read_idx(path), "classification", None, seed, test_fraction, scale_targets)
    elif os.path.isdir(path) or os.path.basename(path) == "x.npy":
        arrays = read_npy_folder(path if os.path.isdir(path) else os.path.dirname(path) or ".")
    else:
        raise ValueError(
            f"{path}: unknown data format; expected a .csv or .npz file, a folder of .npy "
            "files (x.npy, y.npy) or a folder of IDX files (train-images-idx3-ubyte, ...)"
        )
    where, x, y = arrays["where"], arrays["x"], arrays["y"]
    task = task or ("regression" if np.issubdtype(y.dtype, np.floating) else "classification")
    labels, classes = _targets(f"{where}: y", y, task)
    if "x_test" in arrays:
        test_labels, _ = _targets(f"{where}: y_test", arrays["y_test"], task, classes)
        return _dataset(name, x, labels, arrays["x_test"], test_labels, task, classes, seed, test_fraction,
                        scale_targets)
    return _dataset(name, x, labels, None, None, task, classes, seed, test_fraction, scale_targets)


def split(y: np.ndarray, fraction: float, seed: int, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held)`` that hold out ``fraction`` of the examples, deterministic in ``seed``.

    With ``stratify`` (for class labels ``y`` ``(n,)``), each class gives
    ``round(fraction * its count)`` examples to ``held``, but always keeps one, so every
    class stays in ``keep`` and the two splits have the classes' shares. Both index
    arrays are sorted.
    """
    n = len(y)
    rng = np.random.default_rng(seed)
    if not stratify:
        order = rng.permutation(n)
        n_held = min(max(int(round(fraction * n)), 1), n - 1)
        return np.sort(order[n_held:]), np.sort(order[:n_held])
    held = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        held.append(members[: min(int(round(fraction * len(members))), len(members) - 1)])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(n), held), held


def flatten(d: Dataset) -> Dataset:
    """The dataset with each example's inputs as one row, ``(n, n_features)``: for an MLP."""
    if d.x_train.ndim == 2:
        return d
    return dataclasses.replace(d, x_train=d.x_train.reshape(len(d.x_train), -1),
                               x_test=d.x_test.reshape(len(d.x_test), -1))


def _dataset(name, x, labels, x_test, test_labels, task, classes, seed, test_fraction, scale_targets) -> Dataset:
    classify = task == "classification"
    if x_test is None:
        keep, held = split(labels, test_fraction, seed, stratify=classify)
        if len(held) == 0 or len(keep) == 0:
            raise ValueError(
                f"{name} has {len(labels)} examples: too few to hold out a test split of {test_fraction:g} "
                f"({'one example of each class stays for training, ' if classify else ''}"
                f"{len(held)} would be held out); give more rows or a file with a test split"
            )
        x, labels, x_test, test_labels = x[keep], labels[keep], x[held], labels[held]
    elif x_test.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"{name}: the test inputs have shape {x_test.shape[1:]} per example but the training "
            f"inputs {x.shape[1:]}; they must match"
        )
    x_scaling = Scaling.fit(x)
    if classify:
        n_outputs = len(classes) if classes is not None else int(max(labels.max(), test_labels.max())) + 1
        return Dataset(name, x_scaling.apply(x), labels.astype(np.int32), x_scaling.apply(x_test),
                       test_labels.astype(np.int32), "cross_entropy", n_outputs,
                       classes=tuple(classes) if classes is not None else tuple(range(n_outputs)),
                       x_scaling=x_scaling)
    y_scaling = Scaling.fit(labels) if scale_targets else None
    if y_scaling is not None:
        labels, test_labels = y_scaling.apply(labels), y_scaling.apply(test_labels)
    return Dataset(name, x_scaling.apply(x), labels, x_scaling.apply(x_test), test_labels, "mse", labels.shape[1],
                   x_scaling=x_scaling, y_scaling=y_scaling)


def _targets(where: str, y: np.ndarray, task: str, classes=None) -> tuple[np.ndarray, Optional[list]]:
    """``y`` as class ids (and the labels, in id order) or as float32 ``(n, k)`` regression targets."""
    if task == "regression":
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or y.ndim not in (1, 2):
            raise ValueError(f"{where} must hold numbers (n,) or (n, k) for regression, got {y.dtype} of shape {y.shape}")
        y = y.astype(np.float32).reshape(len(y), -1)
        _finite(where, y)
        return y, None
    if y.ndim != 1:
        raise ValueError(f"{where} must be 1-D class labels (n,) for classification, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        _finite(where, y)
        if np.any(y != np.round(y)):
            raise ValueError(
                f"{where} holds non-integer values such as {y[y != np.round(y)][0].item()!r}; class labels "
                "must be integers or names (use task='regression' for numeric targets)"
            )
        y = y.astype(np.int64)
    if y.dtype.kind not in "biuU":
        raise ValueError(f"{where} must hold class labels (integers, bools or strings), got dtype {y.dtype}")
    found = np.unique(y)
    if classes is None:
        if len(found) < 2:
            raise ValueError(
                f"{where} holds a single class ({found[0].item()!r}) in all {len(y)} examples; "
                "classification needs at least 2"
            )
        classes = found.tolist()
    unknown = sorted(set(found.tolist()) - set(classes))
    if unknown:
        raise ValueError(f"{where} holds labels {unknown[:5]} that the training split does not have")
    return np.searchsorted(np.asarray(classes), y).astype(np.int32), classes


def _finite(where: str, a: np.ndarray) -> None:
    bad = a.size - np.count_nonzero(np.isfinite(a))
    if bad:
        raise ValueError(f"{where} holds {bad} NaN or inf values; expected finite numbers")


# --- CSV ------------------------------------------------------------------------------------


def read_csv(path: str, target: Optional[str], features: Optional[Sequence[str]], task: str):
    """``(x, labels, task, classes, features, target)`` of a CSV file with a header row
    (see :func:`load_file`)."""
    x, labels, features, target = read_csv_columns(path, target, features)
    if task == "regression":
        y = np.array([[_number(path, line, target, v)] for line, v in labels], np.float32)
        return x, y, task, None, features, target
    return (x, *_csv_classes(path, target, labels), features, target)


def read_csv_columns(path: str, target: Optional[str], features: Optional[Sequence[str]],
                     target_required: bool = True):
    """``(x, labels, features, target)``: the feature columns as float64 ``(n, k)``, the
    target column as ``[(line, text), ...]`` (``None`` when ``target_required`` is false
    and the file has no such column), and the column names used."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or not any(cell.strip() for cell in header):
            raise ValueError(f"{path}, line 1: expected a header row of column names, got an empty line")
        header = [cell.strip() for cell in header]
        seen = set()
        for col in header:
            if col in seen:
                raise ValueError(f"{path}, line 1: column {col!r} appears twice in the header")
            seen.add(col)
        target = header[-1] if target is None else target
        columns = ", ".join(header)
        if target not in header and (target_required or features is None):
            raise ValueError(f"{path}, line 1: no target column {target!r}; the header has {columns}")
        if features is None:
            features = [c for c in header if c != target]
        else:
            features = list(features)
            for c in features:
                if c not in header:
                    raise ValueError(f"{path}, line 1: no feature column {c!r}; the header has {columns}")
            if target in features:
                raise ValueError(f"{path}: the target column {target!r} is also among the features")
        if not features:
            raise ValueError(f"{path}, line 1: no feature columns besides the target {target!r}")
        cols = [header.index(c) for c in features]
        t = header.index(target) if target in header else None
        rows, labels = [], []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines
            line = reader.line_num
            if len(row) != len(header):
                raise ValueError(
                    f"{path}, line {line}: {len(row)} cells, expected {len(header)} as in the header"
                )
            rows.append([_number(path, line, header[i], row[i]) for i in cols])
            if t is None:
                continue
            label = row[t].strip()
            if not label:
                raise ValueError(f"{path}, line {line}, column {target!r}: empty cell; expected a target")
            labels.append((line, label))
    if not rows:
        raise ValueError(f"{path}: no data rows after the header; expected at least 2")
    return np.asarray(rows, np.float64), (labels if t is not None else None), features, target


def _number(path, line, column, cell) -> float:
    text = cell.strip()
    if not text:
        raise ValueError(f"{path}, line {line}, column {column!r}: empty cell; expected a number")
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{path}, line {line}, column {column!r}: {text!r}; expected a finite number")
    return v


def _csv_classes(path, target, labels):
    """Class ids of the target column, and the task and label list: integers sorted
    numerically if every label is one, else names sorted as text."""
    def integer(text):
        try:
            v = float(text)
        except ValueError:
            return None
        return int(v) if math.isfinite(v) and v == int(v) else False

    values = [integer(v) for _, v in labels]
    if any(v is False for v in values) and not any(v is None for v in values):
        line, text = next((line, text) for (line, text), v in zip(labels, values) if v is False)
        raise ValueError(
            f"{path}, line {line}, column {target!r}: {text!r} is not a class label (an integer or a "
            "name); for numeric targets use --task regression (task='regression')"
        )
    keys = values if all(isinstance(v, int) for v in values) else [v for _, v in labels]
    classes = sorted(set(keys))
    if len(classes) < 2:
        raise ValueError(
            f"{path}: column {target!r} holds a single class ({classes[0]!r}) on all {len(keys)} rows; "
            "classification needs at least 2 (for numeric targets use --task regression)"
        )
    ids = {c: i for i, c in enumerate(classes)}
    return np.array([ids[k] for k in keys], np.int32), "classification", classes


# --- NumPy ------------------------------------------------------------------------------------


def read_npz(path: str) -> dict:
    """The arrays ``x``, ``y`` (and ``x_test``, ``y_test``) of an ``.npz`` archive, checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not a zip archive of arrays")
            names = list(z.files)
            arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test") if k in names}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz archive ({type(e).__name__}: {e})") from None
    return _checked_arrays(path, arrays, names, "array")


def read_npy_folder(folder: str, mmap: bool = False) -> dict:
    """The arrays of a folder's ``x.npy``, ``y.npy`` (and ``x_test.npy``, ``y_test.npy``),
    checked; memory-mapped (read-only) with ``mmap``."""
    arrays, names = {}, sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npy"))
    for k in ("x", "y", "x_test", "y_test"):
        file = os.path.join(folder, k + ".npy")
        if os.path.exists(file):
            try:
                arrays[k] = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
            except (ValueError, OSError, EOFError) as e:
                raise ValueError(f"{file} is not a readable .npy file ({type(e).__name__}: {e})") from None
    return _checked_arrays(folder, arrays, names, "file", check_values=not mmap)


def _checked_arrays(where: str, arrays: dict, names: list, kind: str, check_values: bool = True) -> dict:
    suffix = ".npy" if kind == "file" else ""
    for k in ("x", "y"):
        if k not in arrays:
            holds = ", ".join(n + suffix for n in names) or "nothing"
            raise ValueError(f"{where} has no {kind} {k + suffix!r} (it holds {holds}); expected {kind}s "
                             f"'x{suffix}' (inputs) and 'y{suffix}' (targets)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{where} has only one of 'x_test{suffix}' and 'y_test{suffix}'; give both or neither")
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk not in arrays:
            continue
        x, y = arrays[xk], arrays[yk]
        if x.ndim < 2:
            raise ValueError(f"{where}: {xk}{suffix} has shape {x.shape}; expected at least 2-D inputs (n, features)")
        if y.ndim not in (1, 2):
            raise ValueError(f"{where}: {yk}{suffix} has shape {y.shape}; expected targets (n,) or (n, k)")
        if len(x) != len(y):
            raise ValueError(f"{where}: {xk}{suffix} has {len(x)} examples but {yk}{suffix} has {len(y)}; they must match")
        if len(x) < 2:
            raise ValueError(f"{where}: {xk}{suffix} has {len(x)} examples; expected at least 2")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
            raise ValueError(f"{where}: {xk}{suffix} has dtype {x.dtype}; expected real numbers")
        if check_values:
            _finite(f"{where}: {xk}{suffix}", x)
    arrays["where"] = where
    return arrays


# --- IDX --------------------------------------------------------------------------------------


def _idx_file(folder: str, split_: str, kind: str, required: bool = True) -> Optional[str]:
    for prefix in IDX_NAMES[(split_, kind)]:
        for name in (prefix, prefix + ".gz"):
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
    if required:
        raise ValueError(f"{folder} has no {split_} {kind} file; expected {IDX_NAMES[(split_, kind)][0]}[.gz]")
    return None


def read_idx_file(path: str, ndim: int) -> np.ndarray:
    """The array of one IDX file (gzipped or not) that must have ``ndim`` dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, OSError) as e:
        raise ValueError(f"{path}: truncated or corrupted gzip stream ({type(e).__name__}: {e})") from None
    what = "images (n, rows, cols)" if ndim == 3 else "labels (n,)"
    expected = f"0x000008{ndim:02X} (unsigned bytes, {ndim} dimensions: {what})"
    if len(data) < 4:
        raise ValueError(f"{path}: truncated at byte offset {len(data)}; expected a 4-byte magic number {expected}")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or data[3] != ndim:
        raise ValueError(f"{path}: wrong magic number 0x{data[:4].hex().upper()} at byte offset 0; expected {expected}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated at byte offset {len(data)}; expected {ndim} 4-byte dimensions "
                         f"after the magic number (a header of {header} bytes)")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(IDX_TYPES[data[2]][0])
    size = math.prod(shape) * dtype.itemsize
    if len(data) < header + size:
        raise ValueError(f"{path}: truncated at byte offset {len(data)}; the header announces shape {shape}, "
                         f"{size} bytes of data ending at byte offset {header + size}")
    if len(data) > header + size:
        raise ValueError(f"{path}: {len(data) - header - size} unexpected bytes from byte offset {header + size}; "
                         f"the header announces shape {shape}")
    return np.frombuffer(data, dtype, math.prod(shape), header).reshape(shape)


def read_idx(folder: str) -> tuple:
    """``(x, labels, x_test, test_labels)`` of an IDX folder; images ``(n, rows, cols, 1)`` float32."""
    out = []
    for split_ in ("train", "test"):
        images_file, labels_file = _idx_file(folder, split_, "images"), _idx_file(folder, split_, "labels")
        images, labels = read_idx_file(images_file, 3), read_idx_file(labels_file, 1)
        if len(images) != len(labels):
            raise ValueError(f"{labels_file}: {len(labels)} labels (byte offset 4) but {images_file} holds "
                             f"{len(images)} images; the counts must match")
        if np.issubdtype(labels.dtype, np.floating) or labels.min(initial=0) < 0:
            raise ValueError(f"{labels_file}: labels must be integers >= 0, got dtype {labels.dtype}")
        out += [images[..., None].astype(np.float32), labels.astype(np.int64)]
    x, labels, x_test, test_labels = out
    if x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"{folder}: test images are {x_test.shape[1:3]} but training images {x.shape[1:3]}")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{_idx_file(folder, 'train', 'labels')}: a single class ({labels[0]}) in all "
                         f"{len(labels)} labels; classification needs at least 2")
    return x, labels, x_test, test_labels
