"""Digits: learning rates and optimizers compared (test accuracy and final training loss).

All seeds of one setting train in one compiled call (jbp.fit under jax.vmap), each on its
own stratified split.

    python experiments/optimizers.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp
from common import mean_std, write_table
from jbp import datasets

SEEDS, EPOCHS, BATCH = 4, 100, 32
splits = [datasets.load("digits", seed=s) for s in range(SEEDS)]
stack = lambda f: jnp.stack([jnp.asarray(f(d)) for d in splits])
x_train, y_train = stack(lambda d: d.x_train), stack(lambda d: d.y_train)
x_test, y_test = stack(lambda d: d.x_test), stack(lambda d: d.y_test)
keys = jax.random.split(jax.random.key(0), SEEDS)
net = jbp.MLP((64, 256, 10), activation="relu", loss="cross_entropy", init="he_normal")

SETTINGS = [
    ("sgd", optax.sgd, (0.03, 0.1, 0.3)),
    ("momentum 0.9", lambda lr: optax.sgd(lr, momentum=0.9), (0.01, 0.05, 0.1)),
    ("adam", optax.adam, (3e-4, 1e-3, 3e-3)),
]
rows = []
for name, make, lrs in SETTINGS:
    for lr in lrs:
        optimizer = make(lr)

        def run(key, x, y, xt, yt):
            params, history = jbp.fit(net, net.init(key), x, y, optimizer=optimizer, epochs=EPOCHS,
                                      batch_size=BATCH, key=jax.random.fold_in(key, 1))
            return net.accuracy(params, xt, yt), history.loss[-1]

        accuracy, final_loss = jax.jit(jax.vmap(run))(keys, x_train, y_train, x_test, y_test)
        rows.append([name, f"{lr:g}", mean_std(accuracy), f"{float(np.mean(final_loss)):.2e}"])

write_table(
    "optimizers",
    f"digits, 64-256-10 relu/softmax, batch {BATCH}, {EPOCHS} epochs; mean ± std over {SEEDS} seeds "
    "(each its own split), trained together under jax.vmap",
    ["optimizer", "lr", "test accuracy", "final mean training loss"],
    rows,
)
