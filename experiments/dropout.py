"""Dropout and overfitting: a wide MLP on a small slice of digits (300 training examples),
with and without dropout; train and test loss and accuracy at the end.

    python experiments/dropout.py
"""

import jax
import numpy as np
import optax

import jbp
from common import mean_std, write_table
from jbp import datasets
from jbp.layers import Dense, Dropout

SEEDS, EPOCHS, BATCH, N_TRAIN = 3, 150, 32, 300
optimizer = optax.adam(1e-3)
rows = []
for rate in (0.0, 0.3, 0.5):
    layers = [Dense(512), "relu", Dropout(rate), Dense(512), "relu", Dropout(rate), Dense(10)]
    net = jbp.Sequential((64,), layers, loss="cross_entropy", init="he_normal")
    metrics = {k: [] for k in ("train_loss", "test_loss", "train_acc", "test_acc")}
    for seed in range(SEEDS):
        data = datasets.load("digits", seed=seed)
        x, y = data.x_train[:N_TRAIN], data.y_train[:N_TRAIN]
        init_key, key = jax.random.split(jax.random.key(seed))
        params, _ = jbp.fit(net, net.init(init_key), x, y, optimizer=optimizer, epochs=EPOCHS,
                            batch_size=BATCH, key=key)
        metrics["train_loss"].append(float(net.loss(params, x, y)))  # evaluation mode
        metrics["test_loss"].append(float(net.loss(params, data.x_test, data.y_test)))
        metrics["train_acc"].append(float(net.accuracy(params, x, y)))
        metrics["test_acc"].append(float(net.accuracy(params, data.x_test, data.y_test)))
    gap = np.asarray(metrics["test_loss"]) - np.asarray(metrics["train_loss"])
    rows.append([f"{rate:g}", mean_std(metrics["train_loss"]), mean_std(metrics["test_loss"]),
                 mean_std(gap), mean_std(metrics["train_acc"]), mean_std(metrics["test_acc"])])

write_table(
    "dropout",
    f"digits, {N_TRAIN} training examples (360 test), 64-512-512-10 relu with dropout after each "
    f"hidden layer, adam 1e-3, batch {BATCH}, {EPOCHS} epochs; losses in evaluation mode; "
    f"mean ± std over {SEEDS} seeds; float32",
    ["dropout rate", "train loss", "test loss", "gap (test - train)", "train accuracy", "test accuracy"],
    rows,
)
