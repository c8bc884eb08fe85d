"""``jbp train``: check the gradients, train in compiled chunks, report, save."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from jbp import datasets
from jbp.cli import common, diagnostics, layers_spec
from jbp.cli.common import CHECK_BATCH, CHECKPOINT, DEFAULT_LR, OPTIMIZERS, RUN_SETTINGS, UsageError, say
from jbp.cli.plots import plots
from jbp.training.checkpoint import load_checkpoint, restore_opt_state, save_checkpoint
from jbp.model.network import MLP
from jbp.model.rules import check_feedback
from jbp.training.fit import fit
from jbp.verify.grads import check_grads


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a network and report test accuracy")
    common.network_options(train)
    train.add_argument("--layers", metavar="SPEC", help=layers_spec.HELP)
    train.add_argument("--model", help=f"a named network of layers: {', '.join(f'{k} = {v}' for k, v in layers_spec.MODELS.items())}")
    train.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default adam)")
    train.add_argument("--lr", type=float, help="learning rate (default: sgd 0.1, momentum 0.05, adam 1e-3)")
    train.add_argument("--lr-decay", type=float, help="multiply the learning rate by this every epoch")
    train.add_argument("--epochs", type=int, help="total epochs (default 100); with --resume, train up to this")
    train.add_argument("--batch-size", type=int, help="examples per step (default 32, at most the data)")
    train.add_argument("--tol", type=float, help="stop once an epoch's mean training loss is <= tol")
    train.add_argument("--chunk", type=int, default=5, help="epochs compiled per progress update (default 5)")
    train.add_argument("--rule", help="learning rule: bp, fa, ss or dfa (default bp; see jbp.rules)")
    train.add_argument("--out", help="folder for metrics.json, plots (layers.png: per-layer "
                       "statistics) and the checkpoint")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                       help="verify the manual gradients against jax.grad first (default on)")


def gradient_check(net, params, data) -> dict:
    n = min(CHECK_BATCH, len(data.x_train))
    report = check_grads(net, params, data.x_train[:n], data.y_train[:n])
    worst = max(report.leaves, key=lambda leaf: leaf.rel_err / leaf.tol)
    verdict = "PASSED" if report.ok else "FAILED"
    say(f"gradient check on {n} examples, manual vs jax.grad ({report.dtype}): {verdict}, "
         f"max relative error {worst.rel_err:.1e} ({worst.name}, tolerance {worst.tol:.1e})")
    if not report.ok:
        say(report)
    return {"ok": report.ok, "max_rel_err": max(leaf.rel_err for leaf in report.leaves),
            "leaves": [leaf.to_dict() for leaf in report.leaves]}


def progress(total: int, initial: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the cli extra
        return None
    return tqdm(total=total, initial=initial, unit="epoch", disable=None, leave=False, file=sys.stderr)


def run(args) -> int:
    if args.model is not None:
        if args.model not in layers_spec.MODELS:
            raise UsageError(f"unknown --model {args.model!r}; expected one of {', '.join(layers_spec.MODELS)}")
        if args.layers is not None:
            raise UsageError("give --model or --layers, not both")
        args.layers = layers_spec.MODELS[args.model]
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the folder of the run to continue")
    if args.chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {args.chunk}")
    ckpt_path = os.path.join(args.out, CHECKPOINT) if args.out else None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise UsageError(f"no checkpoint to resume in {args.out} (looked for {ckpt_path})")
        saved = common.usage(load_checkpoint, ckpt_path)
        s = {"rule": "bp", **saved.extra["settings"]}  # runs saved before --rule were backprop
        for k in RUN_SETTINGS:
            given = getattr(args, k, None)
            if given is not None and given != s.get(k):
                raise UsageError(f"--{k.replace('_', '-')} {given} differs from the run in {args.out} "
                                 f"({s.get(k)}); a resumed run keeps its settings")
        if args.epochs is not None:
            s["epochs"] = args.epochs
    else:
        s = common.settings(args)
    for k in ("epochs", "batch_size"):
        if s[k] < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {s[k]}")

    data = common.usage(datasets.load, s["dataset"], seed=s["seed"])
    n_features = data.n_features
    if s.get("layers"):  # a network of layers; digits become images for a convolution
        net = layers_spec.network(s["layers"], data)
        data = layers_spec.shaped_data(net, data)
    else:
        net = common.usage(common.network, s, data)
    n = len(data.x_train)
    batch_size = min(s["batch_size"], n)
    optimizer = common.optimizer(s, n // batch_size)
    init_key, shuffle_key = jax.random.split(jax.random.key(s["seed"]))
    rule = common.usage(diagnostics.rule, s["rule"], s["seed"])
    if args.resume:
        opt_state = common.usage(restore_opt_state, optimizer, saved.params, saved.opt_state)
        params, epoch, shuffle_key = saved.params, saved.epoch, saved.key
        train_loss, stop_reason = list(saved.extra["train_loss"]), saved.extra["stop_reason"]
        feedback = common.usage(check_feedback, rule, net, params, saved.feedback)
        layer_stats = saved.extra.get("layer_stats")
        say(f"resuming {args.out} at epoch {epoch} of {s['epochs']}")
    else:
        params = net.init(init_key, dtype=data.x_train.dtype)
        opt_state, epoch, train_loss, stop_reason = optimizer.init(params), 0, [], "ran all epochs"
        feedback, layer_stats = rule.init(net, params), None
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    shape = "-".join(map(str, net.sizes)) + f" {s['activation']}" if not s.get("layers") else s["layers"]
    say(f"jbp train: {data.name} ({n} train / {len(data.x_test)} test, {n_features} features), "
         f"network {shape} -> {net.output_activation} "
         f"({net.loss_name}), {s['optimizer']} lr {s['lr'] or DEFAULT_LR[s['optimizer']]:g}, "
         f"batch {batch_size}, rule {s['rule']}, on {jax.default_backend()}")
    grad_check = gradient_check(net, params, data) if args.check else None

    loss_fn, accuracy_fn = common.metric_fns(net)
    bar = progress(s["epochs"], epoch)
    chunk_times, chunk_epochs = [], []
    diverged = False
    while epoch < s["epochs"] and stop_reason == "ran all epochs":
        todo = min(args.chunk, s["epochs"] - epoch)
        start = time.perf_counter()
        params, h = fit(net, params, data.x_train, data.y_train, optimizer=optimizer, epochs=todo,
                        batch_size=batch_size, key=shuffle_key, tol=s["tol"], opt_state=opt_state,
                        start_epoch=epoch, rule=rule, feedback=feedback, monitor=bool(args.out) and isinstance(net, MLP))
        jax.block_until_ready(params)
        done = int(h.epoch) - epoch
        chunk_times.append(time.perf_counter() - start)
        chunk_epochs.append(done)
        train_loss += [float(v) for v in np.asarray(h.loss[:done])]
        if h.layer_stats is not None:
            layer_stats = diagnostics.extend(layer_stats, h.layer_stats, done)
        epoch, opt_state = int(h.epoch), h.opt_state
        if h.diverged:
            diverged, stop_reason = True, h.reason
            say(f"training diverged at epoch {epoch + 1}: the loss became "
                 f"{float(h.loss[done])}; keeping the parameters of epoch {epoch}")
        elif int(h.stop_reason) != 0:
            stop_reason = h.reason
        if bar is not None:
            postfix = {"loss": f"{train_loss[-1]:.4g}"} if train_loss else {}
            if accuracy_fn is not None:
                postfix["test_acc"] = f"{float(accuracy_fn(params, data.x_test, data.y_test)):.4f}"
            bar.set_postfix(postfix)
            bar.update(done)
        if ckpt_path:
            save_checkpoint(ckpt_path, net=net, params=params, opt_state=opt_state, epoch=epoch,
                            key=shuffle_key, extra={"settings": s, "train_loss": train_loss,
                                                    "stop_reason": stop_reason, "layer_stats": layer_stats},
                            feedback=feedback)
    if bar is not None:
        bar.close()

    steps = sum(chunk_epochs) * (n // batch_size)
    # The first chunk includes compilation; steps/s is measured on the others when there are any.
    steady = (sum(chunk_times[1:]), sum(chunk_epochs[1:])) if len(chunk_times) > 1 else (sum(chunk_times), sum(chunk_epochs))
    steps_per_s = steady[1] * (n // batch_size) / steady[0] if steady[0] > 0 else float("nan")
    metrics = {
        "dataset": data.name,
        "network": {"sizes": list(net.sizes), "activation": s["activation"],
                    "output_activation": net.output_activation, "loss": net.loss_name, "init": s["init"]}
        if not s.get("layers") else {"layers": s["layers"], "output_activation": net.output_activation,
                                     "loss": net.loss_name},
        "settings": s,
        "epochs_run": epoch,
        "stop_reason": stop_reason,
        "train_loss": train_loss,
        "test_loss": float(loss_fn(params, data.x_test, data.y_test)),
        "gradient_check": grad_check,
        "layer_stats": layer_stats,
        "timings": {"train_s": sum(chunk_times), "first_chunk_s": chunk_times[0] if chunk_times else 0.0,
                    "steps": steps, "steps_per_s": steps_per_s},
        "backend": jax.default_backend(),
    }
    if accuracy_fn is not None:
        metrics["train_accuracy"] = float(accuracy_fn(params, data.x_train, data.y_train))
        metrics["test_accuracy"] = float(accuracy_fn(params, data.x_test, data.y_test))
    summary = [f"epochs {epoch} ({stop_reason})",
               f"train loss {train_loss[-1]:.4g}" if train_loss else "no epochs run",
               f"test loss {metrics['test_loss']:.4g}"]
    if "test_accuracy" in metrics:
        summary.append(f"test accuracy {metrics['test_accuracy']:.4f}")
    summary.append(f"{sum(chunk_times):.1f} s, {steps_per_s:,.0f} steps/s")
    say("result: " + ", ".join(summary))
    if args.out:
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        written = ["metrics.json", *plots(args.out, net, params, data, train_loss)]
        if layer_stats is not None and layer_stats["delta_norm"]:  # none when the first epoch diverged
            written.append(diagnostics.plot(args.out, layer_stats, s["rule"]))
        written.append(CHECKPOINT)
        say(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
    return 1 if diverged else 0


