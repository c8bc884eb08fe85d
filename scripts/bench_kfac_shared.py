"""K-FAC against Adam on networks whose weights are shared over positions: a small GPT and
an LSTM on characters of Shakespeare, and the digits CNN.

- ``gpt``: ``Embedding``, ``PositionEmbedding``, two pre-norm transformer blocks (width 32,
  2 heads), ``LayerNorm`` and a ``Dense`` head (one Kronecker block per projection of the
  attention and per ``Dense`` of the MLPs and the head; the embeddings and norms fall back
  to the diagonal or keep their gradient);
- ``lstm``: ``Embedding(V, 16)``, ``LSTM(64)`` (blocks ``W`` and ``U``), ``Dense(V)``;
- ``cnn``: the CLI's ``--model cnn`` on the 8x8 digits (KFC's convolution blocks).

The texts are windows of 32 characters of the first 200,000 of Shakespeare's works
(:func:`jbp.datasets.text.shakespeare`, read from the cache); the cross-entropy is averaged
over positions. Every optimizer starts from the same weights and sees the same batches
(``jbp.fit`` with the same key), in epochs of 25 batches over consecutive slices of the
windows (the digits' 1,437 training images cycle). Reported: the training loss (mean of
the last epoch's batches) after ``--steps`` steps, the validation loss on 64 held-out windows (the digits'
test split for the CNN), and ms per step with compilation excluded (a first fit of one
epoch compiles; the rest is timed). Run from the repository root:

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/bench_kfac_shared.py --steps 300
"""

import argparse
import datetime
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp
from jbp.cli import layers_spec
from jbp.datasets import text
from jbp.layers import LSTM, Dense, Embedding, LayerNorm, PositionEmbedding
from jbp.layers.transformer import transformer_block

CONTEXT, BATCH, CHUNK = 32, 32, 25


def text_task():
    data = text.shakespeare()
    x, y = text.windows(data.train[:200_000], CONTEXT)
    xv, yv = text.windows(data.val, CONTEXT)
    return data.vocab.size, (x, y), (xv[:64], yv[:64])


def gpt_net(vocab: int) -> jbp.Sequential:
    layers = [Embedding(vocab, 32), PositionEmbedding(CONTEXT)]
    for _ in range(2):
        layers += transformer_block(32, 2, keep="probs")
    return jbp.Sequential((CONTEXT,), [*layers, LayerNorm(), Dense(vocab)], loss="cross_entropy")


def lstm_net(vocab: int) -> jbp.Sequential:
    return jbp.Sequential((CONTEXT,), [Embedding(vocab, 16), LSTM(64), Dense(vocab)], loss="cross_entropy")


def cnn_task():
    d = jbp.datasets.load("digits")
    images = lambda a: a.reshape(-1, 8, 8, 1)
    net = jbp.Sequential((8, 8, 1), layers_spec.parse(layers_spec.MODELS["cnn"]), loss="cross_entropy")
    return net, (images(d.x_train), d.y_train), (images(d.x_test), d.y_test)


def train(net, params, train_xy, val_xy, optimizer, steps: int):
    """``(train loss, val loss, ms/step, steps, diverged)`` after about ``steps`` steps of
    ``BATCH`` rows, in epochs of ``CHUNK`` steps over consecutive slices of the training
    set (cycling): the first compiles, the rest are timed."""
    per_epoch, rows = CHUNK, CHUNK * BATCH
    slices = len(train_xy[0]) // rows
    key, state, epoch, seconds = jax.random.key(1), None, 0, 0.0
    while epoch * per_epoch < steps:
        x, y = (a[(epoch % slices) * rows:(epoch % slices + 1) * rows] for a in train_xy)
        start = time.perf_counter()
        params, h = jbp.fit(net, params, x, y, optimizer=optimizer, epochs=1, batch_size=BATCH, key=key,
                            opt_state=state, start_epoch=epoch)
        jax.block_until_ready(params)
        if epoch:
            seconds += time.perf_counter() - start
        state, epoch = h.opt_state, epoch + 1
        if h.diverged:
            break
    val = float(jax.jit(net.loss)(params, *val_xy))
    return float(h.loss[-1]), val, 1e3 * seconds / max(1, (epoch - 1) * per_epoch), epoch * per_epoch, bool(h.diverged)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tasks", default="gpt,lstm,cnn")
    args = parser.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, jax {jax.__version__}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, float32, batch {BATCH}")
    # K-FAC's (lr, damping) per network: the best of (0.1, 0.1), (0.1, 1), (0.3, 1), (0.03, 0.1)
    # after 75 steps (and (0.03, 1) for the CNN, where damping 0.1 diverges)
    settings = {"gpt": (0.03, 0.1), "lstm": (0.1, 0.1), "cnn": (0.03, 1.0)}
    print("| network | optimizer | steps | train loss | val loss | ms / step |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        if task == "cnn":
            net, train_xy, val_xy = cnn_task()
        else:
            vocab, train_xy, val_xy = text_task()
            net = gpt_net(vocab) if task == "gpt" else lstm_net(vocab)
        params = net.init(jax.random.key(0))
        lr, damping = settings[task]
        optimizers = {f"Adam lr {a:g}": optax.adam(a) for a in (3e-3, 1e-2)}
        for approximation in ("expand",) if task == "cnn" else ("expand", "reduce"):
            optimizers[f"K-FAC {approximation}, lr {lr:g}, damping {damping:g}"] = jbp.kfac(
                lr, damping=damping, approximation=approximation)
        for name, optimizer in optimizers.items():
            tr, val, ms, steps, diverged = train(net, params, train_xy, val_xy, optimizer, args.steps)
            print(f"| {task} | {name} | {steps} | {tr:.3f}{' (diverged)' if diverged else ''} | {val:.3f} | "
                  f"{ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
