"""Vanishing gradients (Nielsen, Neural Networks and Deep Learning, ch. 5), measured from
inside the compiled loop with ``jbp.fit(..., monitor=True)``.

Networks 64-[30]*d-10 for d = 1..4 hidden layers on digits, softmax + cross-entropy, plain
SGD (lr 0.1, mini-batches of 10, 30 epochs), as in the book's chapter 5 runs. For each
hidden activation (sigmoid, tanh, relu) and init (Glorot uniform, N(0, 1)) the table gives
each hidden layer's speed of learning ``‖dL/db‖`` (at the epoch's last step) in the
first and the last epoch, and the ratio first / last hidden layer. Two seeds run at once
(``jax.vmap`` of ``fit``); the figures are their means.

    python experiments/vanishing.py [sigmoid] [tanh] [relu]

Activations named on the command line run alone (in parallel processes, say) and write
``out/vanishing_<activations>.md`` and ``figures/vanishing_<activations>.png``.
"""

import sys

import jax
import numpy as np
import optax

import jbp
from common import FIGURES, write_table
from jbp import datasets

SEEDS, EPOCHS, BATCH, LR, WIDTH = 2, 30, 10, 0.1, 30
data = datasets.load("digits", seed=0)
optimizer = optax.sgd(LR)


def normal_init(net, key):
    """N(0, 1) weights and biases, the book's first initialisation."""
    keys = jax.random.split(key, 2 * net.n_layers)
    return tuple(
        jbp.Layer(W=jax.random.normal(keys[2 * l], (n_out, n_in)), b=jax.random.normal(keys[2 * l + 1], (n_out,)))
        for l, (n_in, n_out) in enumerate(zip(net.sizes[:-1], net.sizes[1:]))
    )


def run(activation, init, depth):
    net = jbp.MLP((64, *[WIDTH] * depth, 10), activation=activation, loss="cross_entropy", init="glorot_uniform")

    def train(key):
        init_key, shuffle_key = jax.random.split(key)
        params = net.init(init_key) if init == "glorot" else normal_init(net, init_key)
        params, h = jbp.fit(net, params, data.x_train, data.y_train, optimizer=optimizer, epochs=EPOCHS,
                            batch_size=BATCH, key=shuffle_key, monitor=True)
        return net.accuracy(params, data.x_test, data.y_test), h.layer_stats["delta_norm"]

    accuracy, speed = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), SEEDS))
    return np.asarray(accuracy), np.asarray(speed)  # (seeds,), (seeds, epochs, layers)


def fmt(values):
    return " / ".join(f"{v:.2g}" for v in values)


ACTIVATIONS = tuple(sys.argv[1:]) or ("sigmoid", "tanh", "relu")
NAME = "vanishing" if len(ACTIVATIONS) == 3 else "vanishing_" + "_".join(ACTIVATIONS)
rows, curves = [], {}
for activation in ACTIVATIONS:
    for init in ("glorot", "normal"):
        for depth in (1, 2, 3, 4):
            accuracy, speed = run(activation, init, depth)
            hidden = speed.mean(0)[:, :depth]  # (epochs, hidden layers), mean over seeds
            curves[activation, init, depth] = speed.mean(0)
            first, last = hidden[0], hidden[-1]
            rows.append([
                activation, "Glorot uniform" if init == "glorot" else "N(0, 1)", depth,
                fmt(first), f"{first[0] / first[-1]:.2g}", fmt(last), f"{last[0] / last[-1]:.2g}",
                f"{accuracy.mean():.3f}",
            ])
            print(" | ".join(map(str, rows[-1])), flush=True)

write_table(
    NAME,
    f"digits, 64-[{WIDTH}]*d-10, softmax/cross-entropy, SGD lr {LR}, batch {BATCH}, {EPOCHS} epochs; "
    f"‖dL/db‖ per hidden layer (layer 1 first) at the epoch's last step, mean over {SEEDS} seeds; float32",
    ["activation", "init", "hidden layers", "speed, epoch 1", "first/last, epoch 1",
     f"speed, epoch {EPOCHS}", f"first/last, epoch {EPOCHS}", "test accuracy"],
    rows,
)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, len(ACTIVATIONS), figsize=(1 + 3.4 * len(ACTIVATIONS), 3.2), sharey=True, squeeze=False)
axes = axes[0]
for ax, activation in zip(axes, ACTIVATIONS):
    speed = curves[activation, "glorot", 4]
    for l in range(4):
        ax.plot(np.arange(1, EPOCHS + 1), speed[:, l], label=f"hidden layer {l + 1}")
    ax.set(yscale="log", xlabel="epoch", title=f"{activation}, 4 hidden layers, Glorot")
axes[0].set_ylabel("speed of learning ‖dL/db‖")
axes[0].legend(fontsize=7)
fig.tight_layout()
FIGURES.mkdir(exist_ok=True)
fig.savefig(FIGURES / f"{NAME}.png", dpi=90)
print(f"wrote {FIGURES / f'{NAME}.png'}")
