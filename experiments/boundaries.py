"""Decision regions of small networks on the generated 2-D datasets (one figure).

    python experiments/boundaries.py

Writes experiments/out/boundaries.png, and the copy the README shows in experiments/figures/.
"""

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax

import jbp
from common import FIGURES, out_dir, write_table
from jbp import datasets

EPOCHS = 1000
CASES = [("moons", (16,), "tanh"), ("moons", (16,), "relu"), ("spirals", (64, 64), "tanh"), ("spirals", (64, 64), "relu")]
fig, axes = plt.subplots(1, len(CASES), figsize=(3.2 * len(CASES), 3.2))
rows = []
for ax, (name, hidden, activation) in zip(axes, CASES):
    data = datasets.load(name)
    net = jbp.MLP((2, *hidden, data.n_outputs), activation=activation, loss=data.loss)
    params, _ = jbp.fit(net, net.init(jax.random.key(0)), data.x_train, data.y_train,
                        optimizer=optax.adam(1e-2), epochs=EPOCHS, batch_size=32, key=jax.random.key(1))
    accuracy = float(net.accuracy(params, data.x_test, data.y_test))
    rows.append([name, "-".join(map(str, net.sizes)), activation, f"{accuracy:.3f}"])
    lo, hi = data.x_train.min(0) - 0.3, data.x_train.max(0) + 0.3
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
    grid = np.stack([g0.ravel(), g1.ravel()], 1).astype(np.float32)
    regions = np.asarray(net.predict(params, grid)).argmax(1).reshape(g0.shape)
    ax.contourf(g0, g1, regions, alpha=0.3, cmap="viridis")
    ax.scatter(*data.x_test.T, c=data.y_test, s=6, cmap="viridis", edgecolors="k", linewidths=0.2)
    ax.set(title=f"{name}, {activation} {'-'.join(map(str, hidden))}\ntest acc {accuracy:.3f}", xticks=[], yticks=[])
fig.tight_layout()
for folder in (out_dir(), FIGURES):
    fig.savefig(folder / "boundaries.png", dpi=70)
write_table(
    "boundaries",
    f"2-D decision regions (figure: experiments/figures/boundaries.png); adam 1e-2, batch 32, {EPOCHS} epochs, seed 0",
    ["dataset", "network", "hidden activation", "test accuracy"],
    rows,
)
