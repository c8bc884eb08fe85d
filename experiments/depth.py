"""Depth: a 20-layer MLP against the same depth with LayerNorm and Residual, on digits,
with their training-loss curves (experiments/figures/depth_loss.png).

    python experiments/depth.py
"""

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jbp  # noqa: E402
from common import FIGURES, mean_std, write_table  # noqa: E402
from jbp import datasets  # noqa: E402
from jbp.layers import Dense, LayerNorm, Residual  # noqa: E402

SEEDS, EPOCHS, BATCH, WIDTH, DEPTH = 3, 30, 32, 64, 20
NETS = {
    "plain": [Dense(WIDTH), "relu", *[layer for _ in range(DEPTH - 2) for layer in (Dense(WIDTH), "relu")],
              Dense(10)],
    "layernorm + residual": [Dense(WIDTH), *[Residual((LayerNorm(), Dense(WIDTH), "relu")) for _ in range(DEPTH - 2)],
                             Dense(10)],
}
optimizer = optax.adam(1e-3)
curves, accuracy, final = {}, {}, {}
for name, layers in NETS.items():
    net = jbp.Sequential((64,), layers, loss="cross_entropy", init="he_normal")
    curves[name], accuracy[name], final[name] = [], [], []
    for seed in range(SEEDS):
        data = datasets.load("digits", seed=seed)
        init_key, shuffle_key = jax.random.split(jax.random.key(seed))
        params, history = jbp.fit(net, net.init(init_key), data.x_train, data.y_train, optimizer=optimizer,
                                  epochs=EPOCHS, batch_size=BATCH, key=shuffle_key)
        curves[name].append(np.asarray(history.loss))
        final[name].append(float(history.loss[-1]))
        accuracy[name].append(float(net.accuracy(params, data.x_test, data.y_test)))

write_table(
    "depth",
    f"digits, {DEPTH} dense layers of width {WIDTH} (relu), adam 1e-3, batch {BATCH}, {EPOCHS} epochs; "
    f"mean ± std over {SEEDS} seeds; float32",
    ["network", "train loss, epoch 1", "train loss, last epoch", "test accuracy"],
    [[name, mean_std([c[0] for c in curves[name]]), mean_std(final[name]), mean_std(accuracy[name])]
     for name in NETS],
)
fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
for name in NETS:
    ax.semilogy(np.arange(1, EPOCHS + 1), np.mean(curves[name], axis=0), label=name)
ax.set(xlabel="epoch", ylabel="mean training loss", title=f"digits, {DEPTH} layers")
ax.legend()
fig.tight_layout()
FIGURES.mkdir(exist_ok=True)
fig.savefig(FIGURES / "depth_loss.png")
