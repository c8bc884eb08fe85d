"""Character models side by side on Shakespeare: jbp's hand-derived LSTM (truncated BPTT
with a carried state), the same LSTM trained by ``jax.value_and_grad`` (autodiff), and a
GPT of about the same parameter count, on the same split and the same batches.

The training text (:func:`jbp.datasets.text.shakespeare`, its first 90%) is laid out as
``BATCH`` parallel streams of consecutive windows of ``T`` characters
(:func:`jbp.datasets.text.streams`); step ``i`` takes window ``i`` of every stream, for
all three models. The two LSTMs start each window from the state the previous one ended
in (``jbp.train_step(..., state=...)``; the gradient stops at the window's edge); the
GPT sees each window alone, as its context. Every step of every model is
``jbp.train_step``, compiled ``EVAL_EVERY`` steps at a time in one ``lax.scan``; the
autodiff LSTM passes ``loss_and_grad=jax.value_and_grad(net.loss, has_aux=True)``.
Optimizer: Adam (lr 2e-3) after clipping by global norm 1, float32.

The models take turns, ``EVAL_EVERY`` steps each, so that a shared machine's load
falls on all of them alike; steps per second is ``EVAL_EVERY`` over the median time of a
chunk (the first, which compiles, left out). A fourth run, the hand-derived LSTM with
every initial weight moved up by one float32 ulp (``jnp.nextafter``), measures the noise
floor of float32 training: how far two runs that differ only by rounding drift apart
over the steps (Adam's trajectory amplifies any difference). The hand-derived and the
autodiff LSTM compute the same gradient with different rounding, so their gap is to be
compared with that floor.

Validation loss: the mean cross-entropy (nats per character) on the first ``VAL_WINDOWS``
windows of ``T`` characters of the validation text, each from a zero state (what the
GPT sees too); for the LSTMs also streamed (``VAL_STREAMS`` streams of the validation
text, the state carried across their windows). Samples: :func:`jbp.models.generate`, 300 characters
after a newline at temperature 0.8, seed 0.

    python experiments/char_models.py [--quick]

Prints the table, the largest ``|Δloss|`` between the hand-derived and the autodiff LSTM
(and the noise floor) and the samples; writes ``out/char_models.md``, the losses in
``out/char_models.npz`` and ``figures/char_models.png`` (``--quick``: ``out/char_models_quick.*``).
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp
from common import FIGURES, out_dir, write_table
from jbp.datasets import text
from jbp.layers import LSTM, Embedding, FusedLMHead
from jbp.models import generate, gpt

T, BATCH, LR, CLIP = 64, 16, 2e-3, 1.0
HIDDEN, FEATURES = 128, 64  # the LSTM: Embedding(V, 64), LSTM(128), FusedLMHead(V)
GPT_BLOCKS, GPT_HEADS, GPT_FEATURES = 2, 4, 64
VAL_WINDOWS, VAL_STREAMS = 256, 16
SAMPLE_TOKENS, TEMPERATURE = 300, 0.8


def lstm_net(vocab: int) -> jbp.Sequential:
    return jbp.Sequential((T,), [Embedding(vocab, FEATURES), LSTM(HIDDEN), FusedLMHead(vocab)],
                          loss="cross_entropy")


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def train_chunk(net, optimizer, loss_and_grad, params, opt_state, state, x, y):
    """``jbp.train_step`` over the chunk's batches ``x``, ``y`` ``(steps, BATCH, T)``, in
    one ``lax.scan``; the state carried from step to step when there is one."""

    def one(carry, batch):
        params, opt_state, state = carry
        if state is None:
            params, opt_state, loss = jbp.train_step(net, optimizer, params, opt_state, *batch,
                                                     loss_and_grad=loss_and_grad)
        else:
            params, opt_state, loss, state = jbp.train_step(net, optimizer, params, opt_state, *batch,
                                                            loss_and_grad=loss_and_grad, state=state)
        return (params, opt_state, state), loss

    (params, opt_state, state), losses = jax.lax.scan(one, (params, opt_state, state), (x, y))
    return params, opt_state, state, losses


@functools.partial(jax.jit, static_argnums=0)
def val_loss(net, params, x, y):
    return net.loss(params, x, y)


@functools.partial(jax.jit, static_argnums=0)
def streamed_val_loss(net, params, x, y):
    """The mean loss over consecutive windows ``x``, ``y`` ``(windows, streams, T)``, the
    state carried across them."""
    def one(state, batch):
        loss, state = net.loss(params, *batch, state=state)
        return state, loss

    _, losses = jax.lax.scan(one, net.init_state(x.shape[1], jnp.float32), (x, y))
    return jnp.mean(losses)


def autodiff_loss_and_grad(net):
    """``jax.value_and_grad`` of the network's loss: ``((loss, state), grads)`` (``mode``:
    the step's ``key`` and ``train``)."""
    return jax.value_and_grad(lambda params, x, y, state, **mode: net.loss(params, x, y, state=state, **mode),
                              has_aux=True)


class Model:
    """One model's run: its network, step function and state, and what it measured."""

    def __init__(self, name, net, loss_and_grad, stateful, val, perturb=False):
        self.name, self.net, self.loss_and_grad, self.stateful = name, net, loss_and_grad, stateful
        self.optimizer = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))
        params = net.init(jax.random.key(0), jnp.float32)
        if perturb:  # one float32 ulp up in every weight: the noise floor of float32 training
            params = jax.tree.map(lambda a: jnp.nextafter(a, jnp.inf), params)
        self.params, self.opt_state = params, self.optimizer.init(params)
        self.state = net.init_state(BATCH, jnp.float32) if stateful else None
        self.curve, self.train, self.chunk_seconds = [(0, 0.0, float(val_loss(net, params, *val)))], [], []

    def chunk(self, x, y, val, end):
        t0 = time.perf_counter()
        self.params, self.opt_state, self.state, losses = train_chunk(
            self.net, self.optimizer, self.loss_and_grad, self.params, self.opt_state, self.state, x, y)
        losses = np.asarray(losses)
        dt = time.perf_counter() - t0
        self.chunk_seconds.append(dt)
        self.train += losses.tolist()
        self.curve.append((end, self.curve[-1][1] + dt, float(val_loss(self.net, self.params, *val))))
        print(f"{self.name}: step {end}, train {losses.mean():.4f}, val {self.curve[-1][2]:.4f}, {dt:.1f} s",
              flush=True)

    def finish(self, val_streams, vocab, eval_every):
        """The streamed validation loss, the sample, and the median steps per second
        over the chunks after the first (which compiles)."""
        self.streamed = float(streamed_val_loss(self.net, self.params, *val_streams)) if self.stateful else None
        self.sample = vocab.decode(generate(self.net, self.params, vocab.encode("\n"), SAMPLE_TOKENS,
                                            key=jax.random.key(0), temperature=TEMPERATURE))
        timed = self.chunk_seconds[1:] or self.chunk_seconds
        self.steps_per_s = eval_every / float(np.median(timed))
        self.curve, self.train = np.asarray(self.curve), np.asarray(self.train)


def figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for r, style in zip(results, ("-", "--", "-")):
        c = r["curve"]
        axes[0].plot(c[:, 0], c[:, 2], style, marker="o", ms=3, label=r["name"])
        axes[1].plot(c[:, 0] / r["steps_per_s"], c[:, 2], style, marker="o", ms=3, label=r["name"])
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("seconds at the median chunk's speed (steps / steps per second)")
    axes[0].set_ylabel("validation loss (nats per character)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Shakespeare, batch {BATCH} x {T} characters, the same batches")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a dry run: 40 steps, validation every 20")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=200)
    args = parser.parse_args()
    steps, eval_every = (40, 20) if args.quick else (args.steps, args.eval_every)

    data = text.shakespeare()
    vocab = data.vocab
    x, y = text.streams(data.train, BATCH, T)
    if steps * BATCH > len(x):
        raise SystemExit(f"{steps} steps need {steps * BATCH} windows; the text has {len(x)}")
    batches = tuple(jnp.asarray(a[: steps * BATCH].reshape(steps, BATCH, T)) for a in (x, y))
    xv, yv = text.windows(data.val, T)
    val = jnp.asarray(xv[:VAL_WINDOWS]), jnp.asarray(yv[:VAL_WINDOWS])
    xs, ys = text.streams(data.val, VAL_STREAMS, T)
    n_streamed = VAL_WINDOWS // VAL_STREAMS
    val_streams = tuple(jnp.asarray(a[: n_streamed * VAL_STREAMS].reshape(n_streamed, VAL_STREAMS, T))
                        for a in (xs, ys))

    lstm = lstm_net(vocab.size)
    transformer = gpt(vocab.size, T, GPT_BLOCKS, GPT_HEADS, GPT_FEATURES)
    models = [Model("LSTM, hand-derived BPTT", lstm, None, True, val),
              Model("LSTM, jax.value_and_grad", lstm, autodiff_loss_and_grad(lstm), True, val),
              Model("GPT, hand-derived", transformer, None, False, val),
              Model("LSTM, hand-derived, weights + 1 ulp", lstm, None, True, val, perturb=True)]
    x, y = batches
    for start in range(0, steps, eval_every):  # the models take turns, chunk by chunk, so that
        chunk = slice(start, start + eval_every)  # the machine's load falls on all of them alike
        for m in models:
            m.chunk(x[chunk], y[chunk], val, start + eval_every)
    for m in models:
        m.finish(val_streams, vocab, eval_every)

    hand, auto, _, nudged = models
    first = slice(0, eval_every)
    gap = lambda a, b, part=slice(None): float(np.max(np.abs(a.train[part] - b.train[part])))
    d_val = float(np.max(np.abs(hand.curve[:, 2] - auto.curve[:, 2])))
    d_val_floor = float(np.max(np.abs(hand.curve[:, 2] - nudged.curve[:, 2])))
    np.savez(out_dir() / ("char_models_quick.npz" if args.quick else "char_models.npz"),
             **{f"{k}_{n}": getattr(m, k) for n, m in enumerate(models) for k in ("train", "curve", "steps_per_s")})
    rows = [[m.name, f"{sum(int(np.prod(a.shape)) for a in jax.tree.leaves(m.params)):,}",
             f"{m.curve[-1, 2]:.4f}", "-" if m.streamed is None else f"{m.streamed:.4f}",
             f"{m.train[-eval_every:].mean():.4f}", f"{m.steps_per_s:.1f}", f"{m.curve[-1, 1]:.0f}"]
            for m in models]
    write_table(
        "char_models",
        f"Shakespeare, {steps} steps of batch {BATCH} x {T} characters, Adam {LR:g}, clip {CLIP:g}. "
        f"Hand vs autodiff LSTM: max |Δ training loss| {gap(hand, auto, first):.1e} over the first "
        f"{eval_every} steps, {gap(hand, auto):.1e} over all; max |Δ validation loss| {d_val:.1e}. "
        f"Float32 noise floor (hand vs hand with weights + 1 ulp): {gap(hand, nudged, first):.1e} over the "
        f"first {eval_every} steps, {gap(hand, nudged):.1e} over all; validation {d_val_floor:.1e}.",
        ["model", "parameters", "validation loss", "validation, streamed", "training loss (last chunk)",
         "steps/s (median chunk)", "seconds"], rows)
    results = [{"name": m.name, "sample": m.sample, "curve": m.curve, "steps_per_s": m.steps_per_s}
               for m in models[:3]]
    for r in results:
        print(f"--- {r['name']} ---\n{r['sample']}\n")
    path = out_dir() / "char_models_quick.png" if args.quick else FIGURES / "char_models.png"
    figure(results, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
