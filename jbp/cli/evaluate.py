"""``jbp evaluate --out DIR``: the metrics of a saved run, recomputed from its checkpoint.

The parameters evaluated are those the run keeps: with ``--val-fraction``, the epoch of the
lowest validation loss (``best.npz``), which the header names. A regression's RMSE is in
the target's own units. The data is the run's split of its dataset or ``--data`` file; a
file that changed since training is refused in one line (see :func:`jbp.cli.saved.dataset`).
"""

from __future__ import annotations

import json

import numpy as np

from jbp.cli import common, datafiles, runtime, saved
from jbp.cli.common import say


def add_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="print the metrics of a run saved by jbp train --out DIR")
    p.add_argument("--out", required=True, help="the run's folder (its checkpoint is read, and its data)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: one line per split; json: one object (default text)")
    common.cache_option(p)


def _splits(run: saved.SavedRun, cache: bool):
    """``(name, [(split, x, y), ...])``; a --mmap run's arrays stay memory-mapped."""
    if run.settings.get("mmap"):
        arrays = datafiles.mmap_arrays(run.settings)
        pairs = [("train", arrays["x"], arrays["y"])]
        if "x_test" in arrays:
            pairs.append(("test", arrays["x_test"], arrays["y_test"]))
        return arrays["where"], pairs
    data = saved.dataset(run, cache=cache)
    return data.name, [("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)]


def metrics(run: saved.SavedRun, cache: bool = False) -> dict:
    """Loss per split, and accuracy (classification) or RMSE in the target's units (regression)."""
    from jbp.cli import mmap

    net, params, pre = run.checkpoint.net, run.params, run.preprocessing
    name, pairs = _splits(run, cache)
    out = {"dataset": name, "network": saved.network_text(run), "epoch": run.checkpoint.epoch,
           "stop_reason": run.checkpoint.extra.get("stop_reason"), "kept_epoch": run.kept_epoch}
    for split, x, y in pairs:
        x = x.reshape(len(x), *saved.input_shape(net))
        if run.settings.get("mmap"):
            m = mmap.evaluate(net, params, x.reshape(len(x), -1), y if net.loss_name != "mse" else y.reshape(len(y), -1))
            out[f"{split}_loss"] = m["test_loss"]
            if "test_accuracy" in m:
                out[f"{split}_accuracy"] = m["test_accuracy"]
            else:
                out[f"{split}_rmse"] = float(np.sqrt(2 * m["test_loss"] / y.reshape(len(y), -1).shape[1]))
            continue
        loss, accuracy = common.metric_fns(net)
        out[f"{split}_loss"] = float(loss(params, x, y))
        if accuracy is not None:
            out[f"{split}_accuracy"] = float(accuracy(params, x, y))
        else:
            y_hat = pre.outputs(np.asarray(net.predict(params, x)))
            out[f"{split}_rmse"] = float(np.sqrt(np.mean((y_hat - pre.outputs(np.asarray(y))) ** 2)))
    return out


def run(args) -> int:
    m = metrics(saved.load(args.out), cache=runtime.cache_wanted(args.no_cache))
    if args.format == "json":
        say(json.dumps(m, indent=1))
        return 0
    kept = (f", parameters of the kept epoch {m['kept_epoch']} (lowest validation loss)"
            if m["kept_epoch"] is not None else "")
    say(f"jbp evaluate: {args.out}: {m['dataset']}, network {m['network']}, epoch {m['epoch']} "
        f"({m['stop_reason']}){kept}")
    for split in ("train", "test"):
        if f"{split}_loss" not in m:
            continue
        extra = (f", accuracy {m[f'{split}_accuracy']:.4f}" if f"{split}_accuracy" in m
                 else f", RMSE {m[f'{split}_rmse']:.4g}")
        say(f"{split}: loss {m[f'{split}_loss']:.4g}{extra}")
    return 0
