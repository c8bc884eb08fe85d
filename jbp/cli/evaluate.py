"""``jbp evaluate --out DIR``: the metrics of a saved run, recomputed from its checkpoint."""

from __future__ import annotations

import json

import numpy as np

from jbp.cli import common, runtime, saved
from jbp.cli.common import say


def add_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="print the metrics of a run saved by jbp train --out DIR")
    p.add_argument("--out", required=True, help="the run's folder (its checkpoint.npz is read, nothing else)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: one line per split; json: one object (default text)")
    common.cache_option(p)


def metrics(run: saved.SavedRun) -> dict:
    """Loss per split, and accuracy (classification) or RMSE (regression)."""
    net, params, data = run.checkpoint.net, run.checkpoint.params, run.data
    loss, accuracy = common.metric_fns(net)
    out = {"dataset": data.name, "network": saved.network_text(run), "epoch": run.checkpoint.epoch,
           "stop_reason": run.checkpoint.extra.get("stop_reason")}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        out[f"{split}_loss"] = float(loss(params, x, y))
        if accuracy is not None:
            out[f"{split}_accuracy"] = float(accuracy(params, x, y))
        else:
            out[f"{split}_rmse"] = float(np.sqrt(np.mean((np.asarray(net.predict(params, x)) - y) ** 2)))
    return out


def run(args) -> int:
    m = metrics(saved.load(args.out, cache=runtime.cache_wanted(args.no_cache)))
    if args.format == "json":
        say(json.dumps(m, indent=1))
        return 0
    say(f"jbp evaluate: {args.out}: {m['dataset']}, network {m['network']}, epoch {m['epoch']} ({m['stop_reason']})")
    for split in ("train", "test"):
        extra = (f", accuracy {m[f'{split}_accuracy']:.4f}" if f"{split}_accuracy" in m
                 else f", RMSE {m[f'{split}_rmse']:.4g}")
        say(f"{split}: loss {m[f'{split}_loss']:.4g}{extra}")
    return 0
