"""What the commands share: defaults, the one-line usage error, the network and optimizer
a run's settings describe, and its metric functions."""

from __future__ import annotations

import argparse
import functools

import jax
import optax

from jbp import datasets
from jbp.curvature import kfac
from jbp.model.activations import HIDDEN_ACTIVATIONS
from jbp.model.initializers import INITIALIZERS
from jbp.model.network import MLP

#: Defaults of ``train``: >= 0.975 test accuracy on digits on each of 5 seeds at 40 epochs
#: (``experiments/digits.py``; 100 epochs gained 0.001 on average, see README).
DEFAULTS = {
    "dataset": "digits",
    "hidden": "256",
    "activation": "relu",
    "optimizer": "adam",
    "epochs": 40,
    "batch_size": 32,
    "seed": 0,
    "rule": "bp",
}
#: Learning rate by optimizer when ``--lr`` is not given.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 1e-3, "kfac": 0.1}
OPTIMIZERS = tuple(DEFAULT_LR)
#: The settings that define a run; ``--resume`` takes them from the checkpoint.
RUN_SETTINGS = ("dataset", "hidden", "activation", "init", "optimizer", "lr", "lr_decay",
                "batch_size", "seed", "tol", "layers", "rule",
                # the data options (jbp.cli.datafiles)
                "data", "target", "features", "task", "val_fraction", "patience", "mmap")
CHECKPOINT = "checkpoint.npz"
CHECK_BATCH = 64


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


def usage(fn, *args, **kwargs):
    """Calls a setup function; its ValueError/TypeError (a bad name, size or file) is the
    user's mistake, so it becomes a UsageError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def hidden(text: str) -> tuple:
    try:
        sizes = tuple(int(s) for s in text.split(",")) if text.strip() else ()
    except ValueError:
        sizes = None
    if sizes is None or any(n < 1 for n in sizes):
        raise UsageError(
            f"--hidden must be comma-separated positive widths like 128 or 256,128, got {text!r}"
        )
    return sizes


def network_options(p) -> None:
    """The options that describe the data and the network (``train`` and ``check``)."""
    from jbp.cli import flags

    p.add_argument("--dataset", help=f"one of {', '.join(datasets.DATASETS)} (default digits)")
    p.add_argument("--hidden", help="hidden widths, e.g. 128 or 256,128 (default: the dataset's declared "
                                    "widths, jbp.datasets.SETTINGS; 256 for --data)")
    p.add_argument("--activation", help=f"hidden activation: {', '.join(HIDDEN_ACTIVATIONS)} "
                                        "(default: the dataset's declared one; relu for --data)")
    p.add_argument("--init", help=f"init scheme: {', '.join(INITIALIZERS)} "
                                  "(default he_normal for relu-like, else glorot_uniform)")
    p.add_argument("--seed", type=flags.seed, help="seed of the split, init and shuffles (default 0)")
    cache_option(p)


def cache_option(p) -> None:
    p.add_argument("--no-cache", action="store_true",
                   help="do not use JAX's compilation cache in ~/.cache/jbp (also: JBP_NO_CACHE=1)")


def from_dataset(args) -> dict:
    """The settings the run takes from its built-in dataset's declaration
    (:data:`jbp.datasets.SETTINGS`): those no flag gives. A declared learning rate is
    taken only with the declared optimizer; a network of layers takes no widths or
    activation."""
    if getattr(args, "data", None) is not None:
        return {}
    name = getattr(args, "dataset", None) or DEFAULTS["dataset"]
    declared = dict(datasets.SETTINGS.get(name, {}))
    if "hidden" in declared:
        declared["hidden"] = ",".join(map(str, declared["hidden"]))
    if getattr(args, "optimizer", None) not in (None, declared.get("optimizer")):
        declared.pop("lr", None)
    if getattr(args, "layers", None) is not None:
        declared.pop("hidden", None)
        declared.pop("activation", None)
    return {k: v for k, v in declared.items() if getattr(args, k, None) is None}


def settings(args) -> dict:
    """The run's settings: given options, over the dataset's declared settings
    (:func:`from_dataset`), over defaults."""
    s = {k: getattr(args, k, None) for k in RUN_SETTINGS + ("epochs",)}
    s.update(from_dataset(args))
    for k, v in DEFAULTS.items():
        if s.get(k) is None:
            s[k] = v
    if s["init"] is None:
        s["init"] = "he_normal" if s["activation"] in ("relu", "leaky_relu", "elu", "gelu") else "glorot_uniform"
    return with_lr(s)


def with_lr(s: dict) -> dict:
    """``s`` with the learning rate actually used: ``--lr``, else the optimizer's default
    (a checkpoint from before this was resolved holds ``None``)."""
    if s.get("lr") is None and s.get("optimizer") in DEFAULT_LR:
        s = {**s, "lr": DEFAULT_LR[s["optimizer"]]}
    return s


def network(s: dict, data: datasets.Dataset) -> MLP:
    return MLP(
        (data.n_features, *hidden(s["hidden"]), data.n_outputs),
        activation=s["activation"],
        loss=data.loss,
        init=s["init"],
    )


def optimizer(s: dict, steps_per_epoch: int) -> optax.GradientTransformation:
    if s["optimizer"] not in OPTIMIZERS:
        raise UsageError(f"unknown --optimizer {s['optimizer']!r}; expected one of {', '.join(OPTIMIZERS)}")
    return make_optimizer(s["optimizer"], s["lr"], s["lr_decay"], steps_per_epoch)


@functools.lru_cache(maxsize=None)
def make_optimizer(name, lr, lr_decay, steps_per_epoch) -> optax.GradientTransformation:
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
    if name == "kfac":  # K-FAC's preconditioned update, then sgd(lr) with momentum 0.9
        return kfac(lr)
    return optax.adam(lr)


def say(*parts) -> None:
    print(*parts, flush=True)


_loss = jax.jit(lambda net, params, x, y: net.loss(params, x, y), static_argnums=0)
_accuracy = jax.jit(lambda net, params, x, y: net.accuracy(params, x, y), static_argnums=0)


def metric_fns(net):
    loss = functools.partial(_loss, net)
    accuracy = functools.partial(_row_fraction, net) if net.loss_name != "mse" else None
    return loss, accuracy


def _row_fraction(net, params, x, y) -> float:
    """``net.accuracy`` as the exact fraction ``k / n`` of the ``n`` rows predicted right:
    the network's mean is rounded to the params' dtype (float32 unless x64 is on), so the
    same predictions would print and save as different numbers in different dtypes."""
    n = int(x.shape[0])
    return round(float(_accuracy(net, params, x, y)) * n) / n


