"""XOR with the seed's algorithm: epochs of full-batch gradient descent (BP7) until the
loss reaches tol, for sigmoid vs tanh hidden units, over many initialisations at once
(one compiled call: jbp.fit under jax.vmap).

    python experiments/xor.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp
from common import write_table

SEEDS, EPOCHS, TOL, LR = 50, 20_000, 1e-3, 0.5
x = jnp.asarray([[0, 0], [0, 1], [1, 0], [1, 1]], jnp.float32)
y = jnp.asarray([[0], [1], [1], [0]], jnp.float32)

rows = []
for hidden in ("sigmoid", "tanh"):
    net = jbp.MLP((2, 4, 1), activation=hidden, output_activation="sigmoid", loss="mse")
    sgd = optax.sgd(LR)

    def train(key):
        params, history = jbp.fit(net, net.init(key), x, y, optimizer=sgd, epochs=EPOCHS, tol=TOL)
        return history.epoch, history.stop_reason, net.predict(params, x)

    epochs, reason, pred = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), SEEDS))
    solved = np.asarray(reason) == 1
    correct = np.all(np.round(np.asarray(pred)) == np.asarray(y), axis=(1, 2))
    e = np.asarray(epochs)[solved]
    rows.append([
        hidden, f"{solved.sum()}/{SEEDS}", f"{correct.sum()}/{SEEDS}",
        int(np.median(e)) if len(e) else "-", f"{e.min()}-{e.max()}" if len(e) else "-",
    ])

write_table(
    "xor",
    f"XOR, 2-4-1, sigmoid output, MSE (½‖ŷ−y‖², batch mean), full-batch SGD lr {LR}, "
    f"tol {TOL:g}, at most {EPOCHS:,} epochs, {SEEDS} initialisations (Glorot uniform)",
    ["hidden", "reached tol", "all 4 correct", "median epochs to tol", "range"],
    rows,
)
