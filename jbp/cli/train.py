"""``jbp train``: check the gradients, train in compiled chunks, report, save."""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from jbp.cli import (common, datacache, datafiles, diagnostics, flags, gradcheck, launch, layers_spec, lm,
                     preprocess, rundir, runtime, timing)
from jbp.cli import privacy as dp
from jbp.cli.common import CHECKPOINT, OPTIMIZERS, RUN_SETTINGS, UsageError, say
from jbp.cli.plots import plots, preload
from jbp.training.checkpoint import load_checkpoint, save_checkpoint
from jbp.training.early_stopping import init_best
from jbp.training.fit import fit

#: A run whose final training loss exceeds this multiple of the loss at its initial
#: parameters failed to learn (typically too high a learning rate): it says so, exit 1.
LOSS_ROSE = 10.0
#: A run of at least :data:`FLAT_STEPS` optimizer steps whose training loss never fell
#: below ``1 - LOSS_FLAT`` of its loss at the initial parameters failed to learn too (an
#: unscaled target, too small a learning rate, a plateau): it says so, exit 1. Shorter
#: runs (a few steps of a smoke test) are not judged.
LOSS_FLAT, FLAT_STEPS = 0.05, 100


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a network and report test accuracy")
    common.network_options(train)
    train.add_argument("--layers", metavar="SPEC", help=layers_spec.HELP)
    train.add_argument("--model", help=f"a named network of layers: {', '.join(f'{k} = {v}' for k, v in layers_spec.MODELS.items())}; "
                       f"or a character-level language model on --dataset shakespeare or --data FILE.txt: "
                       f"{', '.join(lm.MODELS)} (--hidden and --features then give its widths)")
    train.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default adam)")
    train.add_argument("--lr", type=flags.lr, help="learning rate, > 0 (default: sgd 0.1, momentum 0.05, adam 1e-3, kfac 0.1)")
    train.add_argument("--lr-decay", type=flags.lr_decay, help="multiply the learning rate by this, in (0, 1], every epoch")
    train.add_argument("--epochs", type=flags.epochs,
                       help=f"total epochs (default {common.DEFAULTS['epochs']}); with --resume, train up to this")
    train.add_argument("--batch-size", type=flags.batch_size, help="examples per step (default 32, at most the data)")
    train.add_argument("--tol", type=flags.tol, help="stop once an epoch's mean training loss is <= tol (>= 0)")
    train.add_argument("--chunk", type=flags.chunk, default=5, help="epochs compiled per progress update (default 5)")
    train.add_argument("--rule", help="learning rule: bp, fa, ss or dfa (default bp; see jbp.rules)")
    train.add_argument("--out", help="folder for metrics.json, plots (layers.png: per-layer "
                       "statistics) and the checkpoint")
    train.add_argument("--resume", action="store_true",
                       help="continue the run saved in --out, or write the files an interrupt left unwritten")
    train.add_argument("--overwrite", action="store_true", help="replace the run already saved in --out")
    train.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                       help="verify the manual gradients against jax.grad first, at the initial parameters (default on)")
    dp.add_options(train)
    datafiles.add_options(train)
    lm.add_options(train)


def progress(total: int, initial: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the cli extra
        return None
    return tqdm(total=total, initial=initial, unit="epoch", disable=None, leave=False, file=sys.stderr)



def resumed_settings(args, saved) -> dict:
    """The saved run's settings, ``--epochs`` applied; a differing setting is refused."""
    if not {"settings", "train_loss", "stop_reason"} <= set(saved.extra):
        raise UsageError(f"the checkpoint in {args.out} holds no run settings: it was not written by jbp train")
    s = common.with_lr({"rule": "bp", **saved.extra["settings"]})  # runs saved before --rule were backprop
    for k in RUN_SETTINGS + dp.SETTINGS:
        given = getattr(args, k, None)
        if given is not None and given != s.get(k):
            raise UsageError(f"--{k.replace('_', '-')} {given} differs from the run in {args.out} "
                             f"({s.get(k)}); a resumed run keeps its settings")
    if args.epochs is not None:
        s["epochs"] = args.epochs
    return s


def nothing_left(saved, s) -> str:
    """Why a resumed run has no epoch left to run, or ``""``."""
    if saved.extra["stop_reason"] != "ran all epochs":
        return f"it stopped at epoch {saved.epoch} ({saved.extra['stop_reason']})"
    if saved.epoch >= s["epochs"]:
        return f"it is at epoch {saved.epoch} and --epochs is {s['epochs']}; pass a larger --epochs to continue"
    return ""


def regression_rmse(net, params, data) -> float:
    """The test RMSE of a regression, in the target's own units (its scaling undone)."""
    y_hat, y = np.asarray(net.predict(params, data.x_test)), np.asarray(data.y_test)
    if data.y_scaling is not None:
        y_hat, y = data.y_scaling.invert(y_hat), data.y_scaling.invert(y)
    return float(np.sqrt(np.mean((y_hat - y) ** 2)))


def run(args) -> int:
    if lm.wanted(args):
        return lm.run(args)
    lm.refuse_options(args)
    started = time.perf_counter()
    args.layers = layers_spec.option(args)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the folder of the run to continue")
    rundir.check(args.out, resume=args.resume, overwrite=args.overwrite)
    ckpt_path = os.path.join(args.out, CHECKPOINT) if args.out else None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise UsageError(f"no checkpoint to resume in {args.out} (looked for {ckpt_path}): no run was saved "
                             "there yet; run the command without --resume")
        saved = common.usage(load_checkpoint, ckpt_path)
        s, taken = resumed_settings(args, saved), {}
        left = nothing_left(saved, s)
        if left and rundir.complete(args.out, saved.epoch):
            say(f"nothing left to run in {args.out}: {left}")
            return 0
        if left:  # interrupted while it wrote its files
            say(f"{args.out}: {left}; its metrics and figures were not all written, writing them now")
    else:
        if args.data is not None and args.dataset is not None:
            raise UsageError("give either --dataset NAME or --data PATH, not both")
        s = common.settings(args)
        taken = common.from_dataset(args)
        s.update({k: getattr(args, k) for k in dp.SETTINGS})
        if s["data"] is not None:
            s["dataset"] = None
    datafiles.check(s)
    if s.get("mmap"):
        from jbp.cli import mmap
        return mmap.run(args, s, saved if args.resume else None)

    cache = runtime.cache_wanted(args.no_cache)
    # a run saved before runs kept their preprocessing trained on a file's regression targets as they are
    scale_targets = not args.resume or "preprocessing" in saved.extra
    if args.resume and s.get("data"):
        preprocess.check_unchanged(s["data"], (saved.extra.get("preprocessing") or {}).get("data_file"), args.out)
    data, validation = datafiles.load(s, builtin=lambda name, seed: datacache.load(name, seed, cache=cache),
                                      scale_targets=scale_targets)
    learned = preprocess.record(data, s)
    n_features = data.n_features
    if s.get("layers"):  # a network of layers; digits become images for a convolution
        net = layers_spec.network(s["layers"], data)
        data = layers_spec.shaped_data(net, data)
    else:
        net = common.usage(common.network, s, data)
    n = len(data.x_train)
    batch_size = min(s["batch_size"], n)
    optimizer = common.optimizer(s, n // batch_size)
    privacy = dp.resolve(s, n, batch_size, args.resume)
    mesh = launch.mesh(batch_size)  # all devices of all processes under `jbp launch`, else None
    init_key, shuffle_key = jax.random.split(jax.random.key(s["seed"]))
    rule = common.usage(diagnostics.rule, s["rule"], s["seed"])
    diagnostics.check(rule, net, s.get("layers"))
    if not rule.is_backprop and privacy is not None:
        raise UsageError(f"--rule {s['rule']} cannot be combined with --dp-*; DP-SGD clips backprop's per-example gradients")
    if s["optimizer"] == "kfac" and (not rule.is_backprop or privacy is not None or mesh is not None):
        raise UsageError("--optimizer kfac reads the step's own backprop pass; it cannot be combined with "
                         f"{'--rule ' + s['rule'] if not rule.is_backprop else '--dp-*' if privacy is not None else 'jbp launch'}")
    monitor = bool(args.out) and diagnostics.recordable(net) and privacy is None and mesh is None
    initial = net.init(init_key, dtype=data.x_train.dtype)
    loss_fn, accuracy_fn = common.metric_fns(net)
    if args.resume:
        opt_state, best = datafiles.restore(optimizer, saved, validation)
        params, epoch, shuffle_key = saved.params, saved.epoch, saved.key
        train_loss, stop_reason = list(saved.extra["train_loss"]), saved.extra["stop_reason"]
        test_curve = [list(p) for p in saved.extra.get("test_loss_curve", [])]
        val_loss, val_accuracy = list(saved.extra.get("val_loss", [])), list(saved.extra.get("val_accuracy", []))
        say(f"resuming {args.out} at epoch {epoch} of {s['epochs']}")
    else:
        params = initial
        opt_state, epoch, train_loss, stop_reason = jax.jit(optimizer.init)(params), 0, [], "ran all epochs"
        test_curve = [[0, float(loss_fn(params, data.x_test, data.y_test))]]
        val_loss, val_accuracy = [], []
        best = init_best(params, 0, data.x_train.dtype) if validation is not None else None

    feedback, layer_stats = diagnostics.start(rule, net, params, saved if args.resume else None)

    def save_state():
        """The checkpoint (and best.npz), each written atomically: all that --resume needs."""
        if validation is not None and epoch > 0:
            datafiles.save_best(args.out, net, best, s)
        save_checkpoint(ckpt_path, net=net, params=params, opt_state=datafiles.saved_state(opt_state, best),
                        epoch=epoch, key=shuffle_key,
                        extra={"settings": s, "train_loss": train_loss, "test_loss_curve": test_curve,
                               "stop_reason": stop_reason, "val_loss": val_loss, "val_accuracy": val_accuracy,
                               "classes": list(data.classes) if data.classes else None,
                               "preprocessing": learned, "layer_stats": layer_stats},
                        feedback=feedback)

    if args.out and launch.is_main():  # process 0 alone writes files
        if args.resume:
            rundir.mark_incomplete(args.out)  # until metrics.json is written again, last
        else:
            rundir.create(args.out, overwrite=args.overwrite)
            save_state()  # from here on, an interrupt leaves a run that --resume continues
        preload()

    shape = "-".join(map(str, net.sizes)) + f" {s['activation']}" if not s.get("layers") else s["layers"]
    say(f"jbp train: {data.name} ({n} train / {len(data.x_test)} test, {n_features} features), "
        f"network {shape} -> {net.output_activation} "
        f"({net.loss_name}), {s['optimizer']} lr {s['lr']:g}, "
        f"batch {batch_size}, rule {s['rule']}, on {jax.default_backend()}")
    if taken:
        say(f"settings declared by the {s['dataset']} dataset (where no flag was given): "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in taken.items()))
    if validation is not None:
        say(f"validation: {len(validation[0])} examples held out of the training data"
            + (f", early stopping with patience {s['patience']}" if s["patience"] else ""))
    with runtime.CompileClock() as clock:
        initial_loss = float(loss_fn(initial, data.x_train, data.y_train))
        check_start = time.perf_counter()
        grad_check = gradcheck.run(net, initial, data, random=privacy is not None) if args.check else None
        check_s = time.perf_counter() - check_start if args.check else 0.0

        bar = progress(s["epochs"], epoch)
        loop_start = time.perf_counter()
        chunks = []  # per chunk: (seconds, epochs done, programs compiled during it)
        diverged = False
        while epoch < s["epochs"] and stop_reason == "ran all epochs":
            todo = min(args.chunk, s["epochs"] - epoch)
            start, programs = time.perf_counter(), clock.programs
            params, h = fit(net, params, data.x_train, data.y_train, optimizer=optimizer, epochs=todo,
                            batch_size=batch_size, key=shuffle_key, tol=s["tol"], opt_state=opt_state,
                            start_epoch=epoch, privacy=privacy, validation=validation,
                            patience=s.get("patience"), best=best, mesh=mesh, rule=rule, feedback=feedback,
                            monitor=monitor)
            params, h = launch.local((params, h))  # each process's own copy for what follows
            jax.block_until_ready(params)
            done = int(h.epoch) - epoch
            chunks.append((time.perf_counter() - start, done, clock.programs - programs))
            train_loss += [float(v) for v in np.asarray(h.loss[:done])]
            if h.layer_stats is not None:
                layer_stats = diagnostics.extend(layer_stats, h.layer_stats, done)
            if validation is not None:
                best = h.best
                val_loss += [float(v) for v in np.asarray(h.val_loss[:done])]
                val_accuracy += [float(v) for v in np.asarray(h.val_accuracy[:done])]
            epoch, opt_state = int(h.epoch), h.opt_state
            if h.diverged:
                diverged, stop_reason = True, h.reason
                say(f"training diverged at epoch {epoch + 1}: the loss became "
                    f"{float(h.loss[done])}; keeping the parameters of epoch {epoch}")
            elif int(h.stop_reason) != 0:
                stop_reason = h.reason
            if done:  # the test loss at each chunk's end: one evaluation, no extra compilation
                test_curve.append([epoch, float(loss_fn(params, data.x_test, data.y_test))])
            if bar is not None:
                postfix = {"loss": f"{train_loss[-1]:.4g}"} if train_loss else {}
                if accuracy_fn is not None:
                    postfix["test_acc"] = f"{float(accuracy_fn(params, data.x_test, data.y_test)):.4f}"
                bar.set_postfix(postfix)
                bar.update(done)
            if ckpt_path and launch.is_main():
                save_state()
        train_s = time.perf_counter() - loop_start  # the chunks, their checkpoints and test losses
        if bar is not None:
            bar.close()
        if validation is not None and best is not None:
            params = best.params  # keep the epoch with the lowest validation loss
        metrics = {
            "dataset": data.name,
            "classes": list(data.classes) if data.classes is not None else None,
            "network": {"sizes": list(net.sizes), "activation": s["activation"],
                        "output_activation": net.output_activation, "loss": net.loss_name, "init": s["init"]}
            if not s.get("layers") else {"layers": s["layers"], "output_activation": net.output_activation,
                                         "loss": net.loss_name},
            "settings": s,
            "epochs_run": epoch,
            "stop_reason": stop_reason,
            "settings_from_dataset": sorted(taken),
            "initial_train_loss": initial_loss,
            "train_loss": train_loss,
            "test_loss": float(loss_fn(params, data.x_test, data.y_test)),
            "test_loss_curve": test_curve,
            "gradient_check": grad_check,
            "layer_stats": layer_stats,
            "backend": jax.default_backend(),
        }
        if validation is not None and best is not None:
            metrics["validation"] = datafiles.validation_metrics(val_loss, val_accuracy, best, validation)
        if accuracy_fn is not None:
            metrics["train_accuracy"] = float(accuracy_fn(params, data.x_train, data.y_train))
            metrics["test_accuracy"] = float(accuracy_fn(params, data.x_test, data.y_test))
        else:  # in the target's own units
            metrics["test_rmse"] = regression_rmse(net, params, data)
        metrics["preprocessing"] = learned
        rose = not diverged and bool(train_loss) and train_loss[-1] > LOSS_ROSE * initial_loss
        if rose:
            say(f"training failed: the training loss rose from {initial_loss:.4g} (at the initial parameters) "
                f"to {train_loss[-1]:.4g}; the learning rate ({s['lr']:g}) is likely too high, try a smaller --lr")
        steps = epoch * (n // batch_size)
        flat = (not diverged and not rose and bool(train_loss) and steps >= FLAT_STEPS
                and min(train_loss) > (1 - LOSS_FLAT) * initial_loss)
        if flat:
            say(f"training failed: the training loss barely moved over {steps:,} steps, from {initial_loss:.4g} (at "
                f"the initial parameters) to {train_loss[-1]:.4g}, never {LOSS_FLAT:.0%} below its start; "
                f"try another --lr (now {s['lr']:g}), more --epochs or another network")
        metrics["failed_to_learn"] = rose or flat
        if privacy is not None:  # a diverged epoch touched the data too
            metrics["privacy"] = dp.report(privacy, n, batch_size, epoch + diverged)

        summary = [f"epochs {epoch} ({stop_reason})"
                   + (f", kept epoch {int(best.epoch) + 1} (lowest validation loss)"
                      if validation is not None and best is not None else ""),
                   f"train loss {train_loss[-1]:.4g}" if train_loss else "no epochs run",
                   f"test loss {metrics['test_loss']:.4g}"]
        if "test_accuracy" in metrics:
            summary.append(f"test accuracy {metrics['test_accuracy']:.4f}")
        if "test_rmse" in metrics:
            summary.append(f"test RMSE {metrics['test_rmse']:.4g}"
                           + (" (in the target's units)" if data.y_scaling is not None else ""))
        say("result: " + ", ".join(summary))
        if privacy is not None:
            say(dp.describe(metrics["privacy"]))
        written = plots(args.out, net, params, data, train_loss, test_curve,
                        val_loss=val_loss if validation is not None else None,
                        kept_epoch=int(best.epoch) + 1 if validation is not None and best is not None else None
                        ) if args.out and launch.is_main() else []
        written += [datafiles.BEST] if written and validation is not None else []
        if written:
            written += diagnostics.written(args.out, layer_stats, s["rule"])
    metrics["timings"] = timing.summary(chunks, n // batch_size, check_s, clock.seconds,
                                        time.perf_counter() - started, setup_s=check_start - started,
                                        train_s=train_s)
    if args.out and launch.is_main():
        rundir.write_metrics(args.out, metrics)  # last: the run's files are complete
        say(f"wrote {', '.join(os.path.join(args.out, w) for w in ['metrics.json', *written, CHECKPOINT])}")
    say("time: " + timing.line(metrics["timings"]))
    return 1 if diverged or rose or flat else 0
