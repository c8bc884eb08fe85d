"""``jbp train --data FOLDER --mmap``: train from memory-mapped ``.npy`` files, for data
bigger than memory.

``x.npy`` and ``y.npy`` are opened with ``np.load(..., mmap_mode="r")`` and streamed with
:func:`jbp.fit_stream` (block shuffles, compiled chunks of steps, the next chunk read
while one trains); the test pair ``x_test.npy``, ``y_test.npy``, if present, is evaluated
in slices. Inputs are used as stored (images flattened, no standardisation: write the
file standardised), and nothing is split off: the memory-mapped path has no
``--val-fraction``. Checkpoints, ``--resume``, ``--rule`` and, with ``--out``, the
per-layer statistics (``layers.png``) work as for in-memory data.
"""

from __future__ import annotations

import os
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from jbp.cli import common, datafiles, diagnostics, preprocess, rundir
from jbp.cli.common import CHECKPOINT, CHECK_BATCH, UsageError, say
from jbp.cli.plots import plots
from jbp.model.network import MLP
from jbp.training.checkpoint import restore_opt_state, save_checkpoint
from jbp.training.stream import fit_stream
from jbp.verify.grads import check_grads

#: Mini-batches per compiled chunk, and rows per slice when evaluating.
STEPS_PER_CHUNK, EVAL_ROWS = 64, 8192


def _targets(y, task: str, where: str):
    if task == "classification":
        if y.ndim != 1 or y.dtype.kind not in "iub":
            raise UsageError(f"{where}/y.npy must hold integer class labels (n,) for classification, "
                             f"got {y.dtype} of shape {y.shape}")
        return y, int(np.max(y)) + 1
    y = y.reshape(len(y), -1)
    return y, y.shape[1]


def evaluate(net, params, x, y) -> dict:
    """Mean loss (and accuracy) over memory-mapped arrays, a slice at a time."""
    total_loss, total_correct = 0.0, 0.0
    for a in range(0, len(x), EVAL_ROWS):
        xb, yb = np.asarray(x[a:a + EVAL_ROWS], np.float32), np.asarray(y[a:a + EVAL_ROWS])
        if net.loss_name == "mse":
            yb = yb.astype(np.float32)
        total_loss += float(common.metric_fns(net)[0](params, xb, yb)) * len(xb)
        if net.loss_name != "mse":
            total_correct += float(common.metric_fns(net)[1](params, xb, yb)) * len(xb)
    out = {"test_loss": total_loss / len(x)}
    if net.loss_name != "mse":
        out["test_accuracy"] = total_correct / len(x)
    return out


def run(args, s: dict, saved) -> int:
    arrays = datafiles.mmap_arrays(s)
    where = arrays["where"]
    x = arrays["x"].reshape(len(arrays["x"]), -1)
    task = s.get("task") or ("regression" if np.issubdtype(arrays["y"].dtype, np.floating) else "classification")
    y, n_outputs = _targets(arrays["y"], task, where)
    if n_outputs < 2 and task == "classification":
        raise UsageError(f"{where}/y.npy holds a single class; classification needs at least 2")
    net = common.usage(MLP, (x.shape[1], *common.hidden(s["hidden"]), n_outputs), activation=s["activation"],
                       loss="cross_entropy" if task == "classification" else "mse", init=s["init"])
    n = len(x)
    batch_size = min(s["batch_size"], n)
    optimizer = common.optimizer(s, n // batch_size)
    init_key, shuffle_key = jax.random.split(jax.random.key(s["seed"]))
    rule = common.usage(diagnostics.rule, s["rule"], s["seed"])
    monitor = bool(args.out) and diagnostics.recordable(net)
    if saved is not None:
        opt_state = common.usage(restore_opt_state, optimizer, saved.params, saved.opt_state)
        params, epoch, shuffle_key = saved.params, saved.epoch, saved.key
        train_loss, stop_reason = list(saved.extra["train_loss"]), saved.extra["stop_reason"]
        say(f"resuming {args.out} at epoch {epoch} of {s['epochs']}")
    else:
        params = net.init(init_key, dtype=jnp.float32)
        opt_state, epoch, train_loss, stop_reason = optimizer.init(params), 0, [], "ran all epochs"
    feedback, layer_stats = diagnostics.start(rule, net, params, saved)
    # the inputs are used as stored; the file's size is kept (hashing data bigger than memory is not)
    learned = preprocess.record(None, s, hash_contents=False)

    def save_state():
        save_checkpoint(os.path.join(args.out, CHECKPOINT), net=net, params=params, opt_state=opt_state,
                        epoch=epoch, key=shuffle_key, feedback=feedback,
                        extra={"settings": s, "train_loss": train_loss, "stop_reason": stop_reason,
                               "preprocessing": learned, "layer_stats": layer_stats})

    if args.out and saved is not None:
        rundir.mark_incomplete(args.out)  # until metrics.json is written again, last
    elif args.out:
        rundir.create(args.out, overwrite=args.overwrite)
        save_state()  # from here on, an interrupt leaves a run that --resume continues
    name = os.path.basename(os.path.normpath(where))
    say(f"jbp train: {name} memory-mapped ({n} train, {x.nbytes / 2**20:,.0f} MiB of inputs, "
        f"{x.shape[1]} features), network {'-'.join(map(str, net.sizes))} {s['activation']} -> "
        f"{net.output_activation} ({net.loss_name}), batch {batch_size}, rule {s['rule']}, "
        f"chunks of {STEPS_PER_CHUNK} steps")
    grad_check = None
    if args.check:
        m = min(CHECK_BATCH, n)
        yc = np.asarray(y[:m], np.float32) if task == "regression" else np.asarray(y[:m])
        report = check_grads(net, params, np.asarray(x[:m], np.float32), yc)
        say(f"gradient check on {m} examples, manual vs jax.grad ({report.dtype}): "
            f"{'PASSED' if report.ok else 'FAILED'}")
        grad_check = {"ok": report.ok, "max_rel_err": max(leaf.rel_err for leaf in report.leaves)}
    start = time.perf_counter()
    diverged = False
    while epoch < s["epochs"] and stop_reason == "ran all epochs":
        todo = min(args.chunk, s["epochs"] - epoch)
        params, h = common.usage(fit_stream, net, params, (x, y), optimizer=optimizer, epochs=todo,
                                 batch_size=batch_size, key=shuffle_key, steps_per_chunk=STEPS_PER_CHUNK,
                                 tol=s["tol"], opt_state=opt_state, start_epoch=epoch, rule=rule,
                                 feedback=feedback, monitor=monitor)
        done = int(h.epoch) - epoch
        train_loss += [float(v) for v in np.asarray(h.loss[:done])]
        if h.layer_stats is not None:
            layer_stats = diagnostics.extend(layer_stats, h.layer_stats, done)
        epoch, opt_state = int(h.epoch), h.opt_state
        if int(h.stop_reason) != 0:
            stop_reason, diverged = h.reason, h.diverged
        if args.out:
            save_state()
    train_s = time.perf_counter() - start
    metrics = {"dataset": name, "memory_mapped": True, "settings": s, "epochs_run": epoch,
               "stop_reason": stop_reason, "train_loss": train_loss, "gradient_check": grad_check,
               "network": {"sizes": list(net.sizes), "loss": net.loss_name},
               "timings": {"train_s": train_s}, "backend": jax.default_backend()}
    if "x_test" in arrays:
        y_test, _ = _targets(arrays["y_test"], task, where)
        metrics.update(evaluate(net, params, arrays["x_test"].reshape(len(arrays["x_test"]), -1), y_test))
    summary = [f"epochs {epoch} ({stop_reason})", f"train loss {train_loss[-1]:.4g}" if train_loss else "no epochs run"]
    summary += [f"{k.replace('_', ' ')} {metrics[k]:.4f}" for k in ("test_loss", "test_accuracy") if k in metrics]
    say("result: " + ", ".join(summary) + f", {train_s:.1f} s")
    if args.out:
        figure = types.SimpleNamespace(name=name, n_features=x.shape[1], is_classification=False)
        written = ["metrics.json", *plots(args.out, net, params, figure, train_loss), CHECKPOINT,
                   *diagnostics.written(args.out, layer_stats, s["rule"])]
        rundir.write_metrics(args.out, metrics)  # last: the run's files are complete
        say(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
    return 1 if diverged else 0
