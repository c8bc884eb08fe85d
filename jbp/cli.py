"""The command line: ``python -m jbp train|check`` (also installed as ``jbp``).

``train`` checks the hand-derived gradients on a batch, trains with :func:`jbp.fit` in
compiled chunks of epochs (a progress bar moves between chunks), prints a summary and,
with ``--out DIR``, writes ``metrics.json``, plots and an atomically written checkpoint
after every chunk, from which ``--resume`` continues exactly. ``check`` only verifies
the gradients. Mistakes in the arguments print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from typing import Optional, Sequence

import jax
import numpy as np
import optax

from jbp import datasets
from jbp.check import STRESS, check_grads
from jbp.checkpoint import load_checkpoint, restore_opt_state, save_checkpoint
from jbp.mutation_check import mutation_test
from jbp.network import MLP
from jbp.train import fit

#: Defaults of ``train`` (reach >= 0.97 test accuracy on digits; see README).
DEFAULTS = {
    "dataset": "digits",
    "hidden": "256",
    "activation": "relu",
    "optimizer": "adam",
    "epochs": 100,
    "batch_size": 32,
    "seed": 0,
}
#: Learning rate by optimizer when ``--lr`` is not given.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 1e-3}
OPTIMIZERS = tuple(DEFAULT_LR)
#: The settings that define a run; ``--resume`` takes them from the checkpoint.
RUN_SETTINGS = ("dataset", "hidden", "activation", "init", "optimizer", "lr", "lr_decay",
                "batch_size", "seed", "tol")
CHECKPOINT = "checkpoint.npz"
CHECK_BATCH = 64


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


def _usage(fn, *args, **kwargs):
    """Calls a setup function; its ValueError/TypeError (a bad name, size or file) is the
    user's mistake, so it becomes a UsageError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _hidden(text: str) -> tuple:
    try:
        sizes = tuple(int(s) for s in text.split(",")) if text.strip() else ()
    except ValueError:
        sizes = None
    if sizes is None or any(n < 1 for n in sizes):
        raise UsageError(
            f"--hidden must be comma-separated positive widths like 128 or 256,128, got {text!r}"
        )
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jbp", description="Backpropagation with hand-derived gradients, in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def network_options(p):
        p.add_argument("--dataset", help=f"one of {', '.join(datasets.DATASETS)} (default digits)")
        p.add_argument("--hidden", help="hidden widths, e.g. 128 or 256,128 (default 256)")
        p.add_argument("--activation", help="hidden activation (default relu)")
        p.add_argument("--init", help="init scheme (default he_normal for relu-like, else glorot_uniform)")
        p.add_argument("--seed", type=int, help="seed of the split, init and shuffles (default 0)")

    train = commands.add_parser("train", help="train a network and report test accuracy")
    network_options(train)
    train.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default adam)")
    train.add_argument("--lr", type=float, help="learning rate (default: sgd 0.1, momentum 0.05, adam 1e-3)")
    train.add_argument("--lr-decay", type=float, help="multiply the learning rate by this every epoch")
    train.add_argument("--epochs", type=int, help="total epochs (default 100); with --resume, train up to this")
    train.add_argument("--batch-size", type=int, help="examples per step (default 32, at most the data)")
    train.add_argument("--tol", type=float, help="stop once an epoch's mean training loss is <= tol")
    train.add_argument("--chunk", type=int, default=5, help="epochs compiled per progress update (default 5)")
    train.add_argument("--out", help="folder for metrics.json, plots and the checkpoint")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                       help="verify the manual gradients against jax.grad first (default on)")

    check = commands.add_parser("check", help="only verify the manual gradients against jax.grad")
    network_options(check)
    check.add_argument("--stress", choices=STRESS, help="check at an adversarial point instead")
    check.add_argument("--mutations", action="store_true",
                       help="plant the classic mistakes in jbp's backward and show each is caught")
    check.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    return parser


def _settings(args) -> dict:
    """The run's settings: given options over defaults."""
    s = {k: getattr(args, k, None) for k in RUN_SETTINGS + ("epochs",)}
    for k, v in DEFAULTS.items():
        if s.get(k) is None:
            s[k] = v
    if s["init"] is None:
        s["init"] = "he_normal" if s["activation"] in ("relu", "leaky_relu", "elu", "gelu") else "glorot_uniform"
    return s


def _network(s: dict, data: datasets.Dataset) -> MLP:
    return MLP(
        (data.n_features, *_hidden(s["hidden"]), data.n_outputs),
        activation=s["activation"],
        loss=data.loss,
        init=s["init"],
    )


def _optimizer(s: dict, steps_per_epoch: int) -> optax.GradientTransformation:
    if s["optimizer"] not in OPTIMIZERS:
        raise UsageError(f"unknown --optimizer {s['optimizer']!r}; expected one of {', '.join(OPTIMIZERS)}")
    return _make_optimizer(s["optimizer"], s["lr"], s["lr_decay"], steps_per_epoch)


@functools.lru_cache(maxsize=None)
def _make_optimizer(name, lr, lr_decay, steps_per_epoch) -> optax.GradientTransformation:
    # Cached: fit is compiled per optimizer object, so equal settings reuse one.
    lr = lr if lr is not None else DEFAULT_LR[name]
    if lr_decay is not None:
        # A schedule of the step count alone (kept in the optimizer state), so a resumed
        # run follows exactly the same learning rates as an uninterrupted one.
        lr = optax.exponential_decay(lr, transition_steps=steps_per_epoch, decay_rate=lr_decay)
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    return optax.adam(lr)


def _say(*parts) -> None:
    print(*parts, flush=True)


def _gradient_check(net, params, data) -> dict:
    n = min(CHECK_BATCH, len(data.x_train))
    report = check_grads(net, params, data.x_train[:n], data.y_train[:n])
    worst = max(report.leaves, key=lambda leaf: leaf.rel_err / leaf.tol)
    verdict = "PASSED" if report.ok else "FAILED"
    _say(f"gradient check on {n} examples, manual vs jax.grad ({report.dtype}): {verdict}, "
         f"max relative error {worst.rel_err:.1e} ({worst.name}, tolerance {worst.tol:.1e})")
    if not report.ok:
        _say(report)
    return {"ok": report.ok, "max_rel_err": max(leaf.rel_err for leaf in report.leaves),
            "leaves": [leaf.to_dict() for leaf in report.leaves]}


_loss = jax.jit(lambda net, params, x, y: net.loss(params, x, y), static_argnums=0)
_accuracy = jax.jit(lambda net, params, x, y: net.accuracy(params, x, y), static_argnums=0)


def _metric_fns(net):
    loss = functools.partial(_loss, net)
    accuracy = functools.partial(_accuracy, net) if net.loss_name != "mse" else None
    return loss, accuracy


def _progress(total: int, initial: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the cli extra
        return None
    return tqdm(total=total, initial=initial, unit="epoch", disable=None, leave=False, file=sys.stderr)


def _plots(out: str, net, params, data, train_loss: list) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(train_loss) + 1), train_loss)
    ax.set(xlabel="epoch", ylabel="mean training loss", title=f"{data.name}: {net.loss_name}")
    if all(v > 0 for v in train_loss):
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=100)
    plt.close(fig)
    written.append("loss.png")

    if data.n_features == 2 and data.is_classification:
        lo, hi = data.x_train.min(0) - 0.3, data.x_train.max(0) + 0.3
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
        grid = np.stack([g0.ravel(), g1.ravel()], 1).astype(np.float32)
        p = np.asarray(net.predict(params, grid))
        label = p.argmax(1) if p.shape[1] > 1 else (p[:, 0] > 0.5).astype(int)
        y = data.y_train if data.y_train.ndim == 1 else (data.y_train[:, 0] > 0.5).astype(int)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.contourf(g0, g1, label.reshape(g0.shape), alpha=0.3, cmap="viridis")
        ax.scatter(data.x_train[:, 0], data.x_train[:, 1], c=y, s=8, cmap="viridis", edgecolors="k", linewidths=0.2)
        ax.set(title=f"{data.name}: decision regions", xticks=[], yticks=[])
        fig.tight_layout()
        fig.savefig(os.path.join(out, "decision_boundary.png"), dpi=100)
        plt.close(fig)
        written.append("decision_boundary.png")
    return written


def _train(args) -> int:
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the folder of the run to continue")
    if args.chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {args.chunk}")
    ckpt_path = os.path.join(args.out, CHECKPOINT) if args.out else None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise UsageError(f"no checkpoint to resume in {args.out} (looked for {ckpt_path})")
        saved = _usage(load_checkpoint, ckpt_path)
        s = dict(saved.extra["settings"])
        for k in RUN_SETTINGS:
            given = getattr(args, k, None)
            if given is not None and given != s[k]:
                raise UsageError(f"--{k.replace('_', '-')} {given} differs from the run in {args.out} "
                                 f"({s[k]}); a resumed run keeps its settings")
        if args.epochs is not None:
            s["epochs"] = args.epochs
    else:
        s = _settings(args)
    for k in ("epochs", "batch_size"):
        if s[k] < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {s[k]}")

    data = _usage(datasets.load, s["dataset"], seed=s["seed"])
    net = _usage(_network, s, data)
    n = len(data.x_train)
    batch_size = min(s["batch_size"], n)
    optimizer = _optimizer(s, n // batch_size)
    init_key, shuffle_key = jax.random.split(jax.random.key(s["seed"]))
    if args.resume:
        opt_state = _usage(restore_opt_state, optimizer, saved.params, saved.opt_state)
        params, epoch, shuffle_key = saved.params, saved.epoch, saved.key
        train_loss, stop_reason = list(saved.extra["train_loss"]), saved.extra["stop_reason"]
        _say(f"resuming {args.out} at epoch {epoch} of {s['epochs']}")
    else:
        params = net.init(init_key, dtype=data.x_train.dtype)
        opt_state, epoch, train_loss, stop_reason = optimizer.init(params), 0, [], "ran all epochs"
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    _say(f"jbp train: {data.name} ({n} train / {len(data.x_test)} test, {data.n_features} features), "
         f"network {'-'.join(map(str, net.sizes))} {s['activation']} -> {net.output_activation} "
         f"({net.loss_name}), {s['optimizer']} lr {s['lr'] or DEFAULT_LR[s['optimizer']]:g}, "
         f"batch {batch_size}, on {jax.default_backend()}")
    grad_check = _gradient_check(net, params, data) if args.check else None

    loss_fn, accuracy_fn = _metric_fns(net)
    bar = _progress(s["epochs"], epoch)
    chunk_times, chunk_epochs = [], []
    diverged = False
    while epoch < s["epochs"] and stop_reason == "ran all epochs":
        todo = min(args.chunk, s["epochs"] - epoch)
        start = time.perf_counter()
        params, h = fit(net, params, data.x_train, data.y_train, optimizer=optimizer, epochs=todo,
                        batch_size=batch_size, key=shuffle_key, tol=s["tol"], opt_state=opt_state,
                        start_epoch=epoch)
        jax.block_until_ready(params)
        done = int(h.epoch) - epoch
        chunk_times.append(time.perf_counter() - start)
        chunk_epochs.append(done)
        train_loss += [float(v) for v in np.asarray(h.loss[:done])]
        epoch, opt_state = int(h.epoch), h.opt_state
        if h.diverged:
            diverged, stop_reason = True, h.reason
            _say(f"training diverged at epoch {epoch + 1}: the loss became "
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
                                                    "stop_reason": stop_reason})
    if bar is not None:
        bar.close()

    steps = sum(chunk_epochs) * (n // batch_size)
    # The first chunk includes compilation; steps/s is measured on the others when there are any.
    steady = (sum(chunk_times[1:]), sum(chunk_epochs[1:])) if len(chunk_times) > 1 else (sum(chunk_times), sum(chunk_epochs))
    steps_per_s = steady[1] * (n // batch_size) / steady[0] if steady[0] > 0 else float("nan")
    metrics = {
        "dataset": data.name,
        "network": {"sizes": list(net.sizes), "activation": s["activation"],
                    "output_activation": net.output_activation, "loss": net.loss_name, "init": s["init"]},
        "settings": s,
        "epochs_run": epoch,
        "stop_reason": stop_reason,
        "train_loss": train_loss,
        "test_loss": float(loss_fn(params, data.x_test, data.y_test)),
        "gradient_check": grad_check,
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
    _say("result: " + ", ".join(summary))
    if args.out:
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        written = ["metrics.json", *_plots(args.out, net, params, data, train_loss), CHECKPOINT]
        _say(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
    return 1 if diverged else 0


def _check(args) -> int:
    s = _settings(args)
    data = _usage(datasets.load, s["dataset"], seed=s["seed"])
    net = _usage(_network, s, data)
    params = net.init(jax.random.split(jax.random.key(s["seed"]))[0], dtype=data.x_train.dtype)
    n = min(CHECK_BATCH, len(data.x_train))
    x, y = data.x_train[:n], data.y_train[:n]
    check = mutation_test if args.mutations else check_grads
    report = check(net, params, x, y, stress=args.stress)
    if args.format == "json":
        _say(json.dumps(report.to_dict(), allow_nan=False, indent=1))
    else:
        _say(f"jbp check: {data.name}, network {'-'.join(map(str, net.sizes))} {s['activation']} -> "
             f"{net.output_activation} ({net.loss_name}), {n} examples"
             + (f", stress point {args.stress!r}" if args.stress else ""))
        _say(report.to_markdown() if args.format == "markdown" else report)
    return 0 if report.ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
        return _train(args) if args.command == "train" else _check(args)
    except UsageError as e:
        # Every mistake in the arguments ends here, as one line.
        print(f"jbp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jbp: interrupted; with --out, --resume continues from the last checkpoint", file=sys.stderr)
        return 130
