"""``jbp train --model gpt|lstm|gru|rnn``: a character-level language model on a text.

The text is ``--dataset shakespeare`` (:func:`jbp.datasets.text.shakespeare`) or
``--data FILE.txt`` (:func:`jbp.datasets.text.load_text`), split contiguously: the
first 90% of the characters train, the last 10% validate. Training runs ``--steps``
optimizer steps, compiled ``--eval-every`` steps at a time; step ``i`` draws its
``--batch-size`` windows of ``--context`` characters at random offsets from
``fold_in(key, i)``, so a run resumed from any checkpoint takes exactly the batches of
the uninterrupted run. With ``--check`` (the default) the hand-derived gradients are first
compared with ``jax.grad`` on :data:`CHECK_WINDOWS` training windows at the initial
parameters (:mod:`jbp.cli.gradcheck`), as every run's are. After each compiled chunk it prints the training loss, the
validation loss (on up to :data:`VAL_WINDOWS` fixed windows of the validation text) and
the tokens per second, and saves the checkpoint, which keeps the vocabulary for
``jbp generate``. The run's folder is the same as any run's (:mod:`jbp.cli.rundir`):
the checkpoint first, ``loss.png``, then ``metrics.json`` last.

The networks (:func:`network`): :func:`jbp.models.gpt`, or
``Embedding(vocab, features)``, ``LSTM|GRU|RNN(hidden)`` over every position, and the
fused softmax head ``FusedLMHead(vocab)``.

A recurrent model carries its state by default (``--carry-state``; truncated BPTT): the
training text is read as ``--batch-size`` parallel streams
(:func:`jbp.datasets.text.streams`), step ``i`` takes window ``i mod W`` of each (``W``
windows per stream), and starts from the state the step before ended in (from zeros at
each pass's first window); the gradient stops at the window's edge. The state is saved
in the checkpoint, so a resumed run is the uninterrupted one. ``--no-carry-state``
trains on random windows, each from a zero state, as the GPT does.

Every step is :func:`jbp.training.update.step`, the one training step, compiled
``--eval-every`` steps at a time in a ``lax.scan``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jbp.cli import common, flags, gradcheck, rundir
from jbp.cli import privacy as dp
from jbp.cli.common import CHECKPOINT, UsageError, say
from jbp.cli.plots import preload, save
from jbp.datasets import text
from jbp.layers import GRU, LSTM, RNN, Embedding, FusedLMHead
from jbp.model.sequential import Sequential
from jbp.model import rules
from jbp.models import gpt
from jbp.training import update
from jbp.training.checkpoint import load_checkpoint, save_checkpoint

RECURRENT = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
#: The language models of ``--model``.
MODELS = ("gpt", *RECURRENT)
#: Defaults: nanoGPT's CPU configuration of a character-level GPT (4 blocks, 4 heads,
#: 128 features, context 64, batch 12, lr 1e-3, 2,000 steps, no dropout).
DEFAULTS = {"context": 64, "blocks": 4, "heads": 4, "features": 128, "dropout": 0.0, "hidden": 128,
            "steps": 2000, "batch_size": 12, "eval_every": 100, "optimizer": "adam", "seed": 0}
#: The settings of ``--model gpt`` alone.
GPT_ONLY = ("blocks", "heads", "dropout")
#: The optimizers of a language model (the learning rate defaults to each one's, 1e-3 for adam).
OPTIMIZERS = ("sgd", "momentum", "adam")
#: The settings that define a language-model run; ``--resume`` takes them from the checkpoint.
SETTINGS = ("model", "dataset", "data", "context", "blocks", "heads", "features", "dropout", "hidden",
            "batch_size", "eval_every", "lr", "optimizer", "seed", "carry_state")
#: Validation windows the validation loss is averaged over (the first ones of the text).
VAL_WINDOWS = 64
#: Training windows of ``train``'s gradient check (``--check``, at the initial parameters).
CHECK_WINDOWS = 4
#: Options of ``train`` that mean nothing to a language model: refused, not ignored.
NOT_FOR_TEXT = ("layers", "epochs", "tol", "rule", "val_fraction", "patience", "mmap", "target", "task",
                "activation", "init", "lr_decay", *dp.SETTINGS)


def add_options(p) -> None:
    p.add_argument("--context", type=_positive("--context"), help="language models: characters per window "
                   f"(default {DEFAULTS['context']})")
    p.add_argument("--blocks", type=_positive("--blocks"),
                   help=f"--model gpt: transformer blocks (default {DEFAULTS['blocks']})")
    p.add_argument("--heads", type=_positive("--heads"),
                   help=f"--model gpt: attention heads, dividing --features (default {DEFAULTS['heads']})")
    p.add_argument("--dropout", type=flags.dropout, help="--model gpt: dropout rate in [0, 1) after the embeddings "
                   "and at the end of each residual branch, while training only (default 0)")
    p.add_argument("--steps", type=_positive("--steps"), help="language models: total optimizer steps "
                   f"(default {DEFAULTS['steps']}); with --resume, train up to this")
    p.add_argument("--eval-every", type=_positive("--eval-every"), help="language models: steps compiled per "
                   f"progress line, validation loss and checkpoint (default {DEFAULTS['eval_every']})")
    p.add_argument("--carry-state", action=argparse.BooleanOptionalAction, default=None,
                   help="--model lstm|gru|rnn: read the text as --batch-size parallel streams of consecutive "
                        "windows and carry the state from one window to the next (truncated BPTT; the "
                        "default); --no-carry-state: random windows, each from a zero state")


def refuse_options(args) -> None:
    """A run that is not a language model's refuses the options of :func:`add_options`
    in one line rather than ignoring them (``--dropout``: ``dropout:RATE`` in ``--layers``)."""
    for k in ("context", "blocks", "heads", "dropout", "steps", "eval_every"):
        if getattr(args, k, None) is not None:
            hint = "; for a network of layers put dropout:RATE in --layers" if k == "dropout" else ""
            raise UsageError(f"--{k.replace('_', '-')} applies to a language model (--model "
                             f"{'|'.join(MODELS)}){hint}")


def _positive(flag: str):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise UsageError(f"{flag} must be a positive integer, got {value!r}") from None
        if n < 1:
            raise UsageError(f"{flag} must be a positive integer, got {n}")
        return n

    return parse


def wanted(args) -> bool:
    """Whether ``train``'s arguments ask for a language model: ``--model`` one of
    :data:`MODELS`, or ``--dataset shakespeare`` or a ``--data`` ``.txt`` file without
    ``--model`` (a GPT), or ``--resume`` of a language-model run."""
    if args.model is not None:
        return args.model in MODELS
    if args.resume and args.out:
        path = os.path.join(args.out, CHECKPOINT)
        if os.path.exists(path):
            try:
                return load_checkpoint(path).extra.get("settings", {}).get("model") in MODELS
            except (OSError, ValueError):
                return False
        return False
    return args.dataset == "shakespeare" or (args.data or "").lower().endswith(".txt")


def _width(flag: str, value):
    if value is None or isinstance(value, int):
        return value
    return _positive(flag)(value)


def settings(args) -> dict:
    """The run's settings: the options given, over :data:`DEFAULTS`."""
    given = [k for k in NOT_FOR_TEXT if getattr(args, k, None) not in (None, False)]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} does not apply to a language model "
                         f"(--model {args.model or 'gpt'}); see jbp train --help")
    if args.data is not None and args.dataset is not None:
        raise UsageError("give either --dataset shakespeare or --data FILE.txt, not both")
    if args.data is None and args.dataset != "shakespeare":
        raise UsageError(f"--model {args.model or 'gpt'} trains on text: give --dataset shakespeare or --data "
                         f"FILE.txt" + (f", got --dataset {args.dataset}" if args.dataset else ""))
    s = {k: getattr(args, k, None) for k in SETTINGS}
    s["model"], s["steps"] = args.model or "gpt", args.steps
    if s["model"] == "gpt" and s["hidden"] is not None:
        raise UsageError("--hidden applies to --model lstm, gru or rnn; a GPT's width is --features")
    given = [k for k in GPT_ONLY if s[k] is not None]
    if s["model"] != "gpt" and given:
        raise UsageError(f"--{given[0]} applies to --model gpt, not {s['model']}; its width is --hidden "
                         "(and --features, the embedding's)")
    s["features"], s["hidden"] = _width("--features", s["features"]), _width("--hidden", s["hidden"])
    if s["model"] == "gpt" and s["carry_state"]:
        raise UsageError("--carry-state applies to --model lstm, gru or rnn; a GPT has no state to carry")
    s["carry_state"] = s["model"] != "gpt" and s["carry_state"] is not False
    unused = ("hidden",) if s["model"] == "gpt" else GPT_ONLY
    for k, v in DEFAULTS.items():
        if s.get(k) is None and k not in unused:
            s[k] = v
    if s["optimizer"] not in OPTIMIZERS:
        raise UsageError(f"--optimizer {s['optimizer']!r} is not available for a language model; expected one of "
                         f"{', '.join(OPTIMIZERS)}")
    if s["lr"] is None:
        s["lr"] = common.DEFAULT_LR[s["optimizer"]]
    if s["data"] is not None:
        s["data"] = os.path.abspath(s["data"])
    return s


def resumed_settings(args, saved) -> dict:
    """The saved run's settings, ``--steps`` applied; a differing setting is refused."""
    s = dict(saved.extra["settings"])
    if s["model"] == "gpt":
        s.setdefault("dropout", 0.0)  # a run saved before --dropout had none
    s.setdefault("carry_state", False)  # runs saved before the state was carried
    for k in SETTINGS:
        given = getattr(args, k, None)
        if k in ("features", "hidden"):
            given = _width(f"--{k}", given)
        if k == "data" and given is not None:
            given = os.path.abspath(given)
        if given is not None and given != s.get(k):
            raise UsageError(f"--{k.replace('_', '-')} {given} differs from the run in {args.out} "
                             f"({s.get(k)}); a resumed run keeps its settings")
    s["steps"] = args.steps if args.steps is not None else s["steps"]
    return s


def load_text(s: dict) -> text.Text:
    """The run's text: Shakespeare (downloaded once; offline, one line saying to give a
    text file) or the ``--data`` file."""
    if s["data"] is None:
        try:
            return text.shakespeare()
        except RuntimeError as e:
            raise UsageError(str(e)) from None
    return common.usage(text.load_text, s["data"])


def network(s: dict, vocab: int) -> Sequential:
    """The run's network over ``vocab`` token ids (see the module docstring)."""
    if s["model"] == "gpt":
        if s["features"] % s["heads"]:
            raise UsageError(f"--heads {s['heads']} must divide --features {s['features']}")
        return common.usage(gpt, vocab, s["context"], s["blocks"], s["heads"], s["features"], s["dropout"])
    layers = [Embedding(vocab, s["features"]), RECURRENT[s["model"]](s["hidden"]), FusedLMHead(vocab)]
    return Sequential((s["context"],), layers, loss="cross_entropy")


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), static_argnames="loss_and_grad")
def train_steps(net, optimizer, steps: int, batch: int, params, opt_state, ids, key, start, state=None,
                loss_and_grad=None):
    """``steps`` optimizer steps from step ``start``, each :func:`jbp.training.update.step`.

    Without a ``state``, step ``i`` takes ``batch`` windows at offsets drawn from
    ``fold_in(key, i)``. With one (truncated BPTT), step ``i`` takes window ``i mod W``
    of the ``batch`` streams of ``ids`` (:func:`jbp.datasets.text.streams`' layout)
    from ``state``, zeros at window 0. Dropout masks come from ``fold_in(key, i)`` too.
    ``loss_and_grad``, ``(params, x, y, key=, train=) -> (loss, grads)``, replaces the
    network's hand-derived gradients (autodiff of ``net.loss``: the same batches trained
    by autodiff, for comparison).

    Returns the parameters, the optimizer state, each step's loss and the state after
    the last step (``None`` without one)."""
    T = net.input_shape[0]
    length = (ids.shape[0] - 1) // batch  # characters per stream
    windows = length // T
    if loss_and_grad is None:  # the network's own (the fused head's: the logits are never formed)
        loss_and_grad = net.loss_and_grad_unchecked

    def step(carry, i):
        params, opt_state, state = carry
        batch_key, dropout_key = jax.random.split(jax.random.fold_in(key, i))
        if state is None:
            index = jax.random.randint(batch_key, (batch, 1), 0, ids.shape[0] - T) + jnp.arange(T)
        else:  # window k of every stream; a new pass over the text starts from zeros
            k = i % windows
            index = (jnp.arange(batch) * length + k * T)[:, None] + jnp.arange(T)
            state = jax.tree.map(lambda s: jnp.where(k == 0, jnp.zeros_like(s), s), state)
        params, opt_state, loss, _ = update.step(net, optimizer, rules.backprop(), params, opt_state, (),
                                                 ids[index], ids[index + 1], dropout_key,
                                                 loss_and_grad=loss_and_grad, state=state)
        if state is not None:
            loss, state = loss
        return (params, opt_state, state), loss

    (params, opt_state, state), losses = lax.scan(step, (params, opt_state, state), start + jnp.arange(steps))
    return params, opt_state, losses, state


def run(args) -> int:
    started = time.perf_counter()
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the folder of the run to continue")
    rundir.check(args.out, resume=args.resume, overwrite=args.overwrite)
    ckpt_path = os.path.join(args.out, CHECKPOINT) if args.out else None
    saved = None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise UsageError(f"no checkpoint to resume in {args.out} (looked for {ckpt_path}): no run was saved "
                             "there yet; run the command without --resume")
        saved = common.usage(load_checkpoint, ckpt_path)
        if "vocab" not in saved.extra:
            raise UsageError(f"the checkpoint in {args.out} is not a language model's run")
        s = resumed_settings(args, saved)
        if saved.epoch >= s["steps"] and _complete(args.out, saved.epoch):
            say(f"nothing left to run in {args.out}: it is at step {saved.epoch} and --steps is {s['steps']}; "
                "pass a larger --steps to continue")
            return 0
    else:
        s = settings(args)
    data = load_text(s)
    if saved is not None and saved.extra["vocab"] != data.vocab.chars:
        raise UsageError(f"the text of the run in {args.out} changed since it was trained: its vocabulary differs")
    T = s["context"]
    for part, ids in (("training", data.train), ("validation", data.val)):
        if len(ids) < T + 1:
            raise UsageError(f"{data.name}'s {part} part has {len(ids)} characters, fewer than --context + 1 = "
                             f"{T + 1}; give a longer text or a smaller --context")
    if s["carry_state"] and len(data.train) < s["batch_size"] * T + 1:
        raise UsageError(f"{data.name}'s training part has {len(data.train)} characters, too few for "
                         f"--batch-size {s['batch_size']} streams of a window of --context {T} each "
                         f"(needs {s['batch_size'] * T + 1}); give a longer text or a smaller --batch-size")
    net = network(s, data.vocab.size)
    optimizer = common.make_optimizer(s["optimizer"], s["lr"], None, 1)
    init_key, data_key = jax.random.split(jax.random.key(s["seed"]))
    loss_fn, _ = common.metric_fns(net)
    x_val, y_val = text.windows(data.val, T)
    x_val, y_val = x_val[:VAL_WINDOWS], y_val[:VAL_WINDOWS]
    if saved is not None:
        saved = common.usage(load_checkpoint, ckpt_path, optimizer=optimizer)
        params, opt_state, step, state = saved.params, saved.opt_state, saved.epoch, saved.state
        train_loss, val_curve = list(saved.extra["train_loss"]), [list(p) for p in saved.extra["val_loss_curve"]]
        rundir.mark_incomplete(args.out)
        say(f"resuming {args.out} at step {step} of {s['steps']}")
    else:
        params = net.init(init_key, jnp.float32)  # float32 whether or not JAX enables float64
        opt_state, step, train_loss = optimizer.init(params), 0, []
        state = net.init_state(s["batch_size"], jnp.float32) if s["carry_state"] else None
        val_curve = [[0, float(loss_fn(params, x_val, y_val))]]

    def save_state():
        save_checkpoint(ckpt_path, net=net, params=params, opt_state=opt_state, epoch=step, key=data_key,
                        state=state, extra={"settings": s, "vocab": data.vocab.chars, "train_loss": train_loss,
                               "val_loss_curve": val_curve, "stop_reason": stop_reason})

    stop_reason = "ran all steps"
    if args.out and saved is None:
        rundir.create(args.out, overwrite=args.overwrite)
        save_state()
    if args.out:
        preload()
    shape = (f"gpt {s['blocks']} blocks, {s['heads']} heads, {s['features']} features"
             + (f", dropout {s['dropout']:g}" if s["dropout"] else "") if s["model"] == "gpt"
             else f"{s['model']} {s['hidden']} hidden, {s['features']} embedding features")
    say(f"jbp train: {data.name} ({len(data.train):,} train / {len(data.val):,} validation characters, "
        f"vocabulary {data.vocab.size}), {shape}, context {T}"
        f"{', state carried across windows' if s['carry_state'] else ''}, {s['optimizer']} lr {s['lr']:g}, "
        f"batch {s['batch_size']}, on {jax.default_backend()}")
    grad_check = None
    if args.check:  # as every run: the hand-derived gradients against jax.grad, at the initial parameters
        x_check, y_check = text.windows(data.train, T)
        first = types.SimpleNamespace(x_train=x_check[:CHECK_WINDOWS], y_train=y_check[:CHECK_WINDOWS])
        grad_check = gradcheck.run(net, net.init(init_key, jnp.float32), first)
    ids = jnp.asarray(data.train)
    tokens_per_s, diverged = [], False
    while step < s["steps"]:
        todo = min(s["eval_every"], s["steps"] - step)
        start = time.perf_counter()
        new_params, new_opt_state, losses, new_state = train_steps(net, optimizer, todo, s["batch_size"], params,
                                                                   opt_state, ids, data_key, step, state)
        losses = np.asarray(losses)
        seconds = time.perf_counter() - start
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmin(np.isfinite(losses)))
            say(f"training diverged at step {step + bad + 1}: the loss became {losses[bad]}; "
                f"keeping the parameters of step {step}")
            diverged, stop_reason = True, "diverged"
            break
        params, opt_state, state, step = new_params, new_opt_state, new_state, step + todo
        train_loss += [float(v) for v in losses]
        val_curve.append([step, float(loss_fn(params, x_val, y_val))])
        tokens_per_s.append(todo * s["batch_size"] * T / seconds)
        say(f"step {step}/{s['steps']}: train loss {losses.mean():.4f}, validation loss {val_curve[-1][1]:.4f}, "
            f"{tokens_per_s[-1]:,.0f} tokens/s" + (" (with compilation)" if len(tokens_per_s) == 1 else ""))
        if ckpt_path:
            save_state()
    if ckpt_path and diverged:
        save_state()
    metrics = {"dataset": data.name, "model": s["model"], "settings": s, "vocab_size": data.vocab.size,
               "steps_run": step, "stop_reason": stop_reason, "train_loss": train_loss,
               "val_loss_curve": val_curve, "val_loss": val_curve[-1][1],
               "tokens_per_s": tokens_per_s, "gradient_check": grad_check, "seconds": time.perf_counter() - started,
               "backend": jax.default_backend()}
    say(f"result: steps {step} ({stop_reason}), validation loss {val_curve[-1][1]:.4f}"
        + (f", last train loss {np.mean(train_loss[-s['eval_every']:]):.4f}" if train_loss else ""))
    if args.out:
        loss_figure(os.path.join(args.out, "loss.png"), train_loss, val_curve)
        rundir.write_metrics(args.out, metrics)  # last: the run's files are complete
        say(f"wrote {', '.join(os.path.join(args.out, f) for f in ('metrics.json', 'loss.png', CHECKPOINT))}; "
            f"sample it with jbp generate --out {args.out}")
    return 1 if diverged else 0


def _complete(out: str, step: int) -> bool:
    try:
        with open(os.path.join(out, rundir.METRICS)) as f:
            return json.load(f).get("steps_run") == step
    except (OSError, ValueError, AttributeError):
        return False


def loss_figure(path: str, train_loss: list, val_curve: list) -> None:
    """``loss.png``: the training loss per step and the validation loss at each chunk's end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(train_loss) + 1), train_loss, lw=0.8, label="training (per step)")
    ax.plot(*np.asarray(val_curve).T, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.legend()
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
