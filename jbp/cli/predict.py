"""``jbp predict --out DIR [--data FILE] [--to FILE]``: a saved run's predictions.

Reads the run's checkpoint only. The inputs are ``--data FILE``, a ``.npy`` array
``(n, n_features)`` (a network of layers: ``(n, *input_shape)``, or flat) or an ``.npz``
archive with ``x`` (and optionally ``y``, the targets), fed to the network as given: they
must be preprocessed as the run's training inputs were (standardised with its training
split's mean and standard deviation, which the checkpoint does not keep). By default: the
test split of the run's dataset or ``--data`` file (its seed's split, read as ``jbp
train`` read it). Writes
``--to`` (default ``DIR/predictions.csv``):

- ``.csv``: a header, then one row per example. Classification: ``prediction`` (the
  class), ``target`` when the targets are known, and the probabilities ``p_0 ... p_{k-1}``
  (``p_1`` for a single sigmoid output). Regression: ``y_hat_0 ...`` and, when known,
  ``target_0 ...``.
- ``.npy``: the network's outputs ``(n, n_outputs)`` (probabilities, or the regression
  values), float32.
"""

from __future__ import annotations

import math
import os

import numpy as np

from jbp.cli import common, runtime, saved
from jbp.cli.common import UsageError, say


def add_parser(commands) -> None:
    p = commands.add_parser("predict", help="write the predictions of a run saved by jbp train --out DIR")
    p.add_argument("--out", required=True, help="the run's folder (its checkpoint.npz is read, nothing else)")
    p.add_argument("--data", help="inputs: .npy (n, features) or .npz with x [and y], fed to the network as "
                                  "given, so preprocessed as the run's training inputs were (standardised); "
                                  "images may be given flat (default: the run's own test split)")
    p.add_argument("--to", help="where to write: .csv or .npy (default DIR/predictions.csv)")
    common.cache_option(p)


def read_inputs(path: str, shape: tuple):
    """``(x, y or None)`` from a ``.npy`` or ``.npz`` file: ``x`` ``(n, *shape)``, or
    ``(n, prod(shape))`` rows made into that shape (images given flat)."""
    if not os.path.isfile(path):
        raise UsageError(f"--data must be a .npy or .npz file, got {path!r}, which does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], (f["y"] if "y" in f.files else None)
    except TypeError:  # a .npy file: np.load returned the array itself, which is no context manager
        x, y = np.load(path, allow_pickle=False), None
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise UsageError(f"--data {path} is not a .npy array or an .npz archive with x: {e}") from None
    size = math.prod(shape)
    if x.ndim == 2 and x.shape[1] == size:
        x = x.reshape(len(x), *shape)
    if tuple(x.shape[1:]) != tuple(shape) or not np.issubdtype(x.dtype, np.number):
        want = ", ".join(map(str, ("n", *shape))) + (f") or (n, {size}" if len(shape) > 1 else "")
        raise UsageError(f"--data {path} must hold numbers of shape ({want}), got {x.dtype} {x.shape}")
    return x.astype(np.float32), y


def run(args) -> int:
    if args.to and not args.to.endswith((".csv", ".npy")):
        raise UsageError(f"--to must end in .csv or .npy, got {args.to!r}")
    r = saved.load(args.out, cache=runtime.cache_wanted(args.no_cache))
    net, params, data = r.checkpoint.net, r.checkpoint.params, r.data
    if args.data:
        x, y = read_inputs(args.data, saved.input_shape(net))
        source = args.data
    else:
        x, y, source = data.x_test, data.y_test, f"the {data.name} test split (seed {r.settings['seed']})"
    p = np.asarray(net.predict(params, x), np.float32)
    to = args.to or os.path.join(args.out, "predictions.csv")
    try:
        if to.endswith(".npy"):
            np.save(to, p)
        else:
            write_csv(to, p, y, data.is_classification)
    except OSError as e:
        raise UsageError(f"--to {to}: cannot write there ({e.strerror or e})") from None
    say(f"wrote {to}: {len(x)} predictions for {source}")
    return 0


def write_csv(path: str, p: np.ndarray, y, classification: bool) -> None:
    if classification:
        label = p.argmax(1) if p.shape[1] > 1 else (p[:, 0] > 0.5).astype(int)
        probs = [f"p_{k}" for k in range(p.shape[1])] if p.shape[1] > 1 else ["p_1"]
        head, cols = ["prediction"], [label[:, None].astype(float)]
        if y is not None:
            y = np.asarray(y)
            head.append("target")
            cols.append((y if y.ndim == 1 else (y[:, 0] > 0.5).astype(int))[:, None].astype(float))
        head += probs
        cols.append(p)
        fmt = ["%d"] * (len(head) - len(probs)) + ["%.6g"] * len(probs)
    else:
        head = [f"y_hat_{k}" for k in range(p.shape[1])]
        cols = [p]
        if y is not None:
            head += [f"target_{k}" for k in range(p.shape[1])]
            cols.append(np.asarray(y, np.float32).reshape(len(p), -1))
        fmt = "%.6g"
    np.savetxt(path, np.concatenate(cols, axis=1), fmt=fmt, delimiter=",", header=",".join(head), comments="")
