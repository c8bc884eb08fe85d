"""A long dependency: the adding problem (Hochreiter & Schmidhuber 1997), an Elman RNN
against an LSTM, with the gradient's path through time measured by the hand backward.

Each example is ``T`` steps of two inputs: a number drawn uniformly in [0, 1], and a
marker that is 1 at two steps (one in the first half, one in the second) and 0
elsewhere. The target is the sum of the two marked numbers, so the first one must be
kept for at least ``T / 2`` steps. Predicting the mean, 1, gives a mean squared error of
1/6 ≈ 0.167; a model counts as *solved* below a test MSE of 0.01.

Networks ``[RNN(32) or LSTM(32), last state only] -> Dense(1)``, MSE, trained by
``jbp.fit`` with Adam (lr 3e-3) after clipping by global norm 1
(``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))``), mini-batches of 64.
For every ``T`` the table gives the test MSE and the ratio ``‖dL/dh_1‖ / ‖dL/dh_T‖`` at
the start of training (:func:`jbp.layers.gradient_through_time`, on one batch of
256 test examples): how much of the gradient reaching the last state comes back to the
first. The figure plots ``‖dL/dh_t‖`` against ``t`` for each ``T``, at the start and at
the end of training.

    python experiments/long_dependency.py [--epochs 20] [--train 8192] [--lengths 10,50,100]

Writes ``out/long_dependency.md`` and ``figures/long_dependency.png``.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp
from common import FIGURES, write_table
from jbp.layers import LSTM, RNN, Dense, gradient_through_time

HIDDEN, BATCH, LR, CLIP, SOLVED = 32, 64, 3e-3, 1.0, 0.01
CELLS = {"RNN": RNN, "LSTM": LSTM}


def adding_problem(n: int, T: int, seed: int):
    """``x`` ``(n, T, 2)`` float32 (numbers, markers) and ``y`` ``(n, 1)``, their marked sum."""
    rng = np.random.default_rng(seed)
    numbers = rng.uniform(size=(n, T))
    half = max(T // 2, 1)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, T, size=n) if T > 1 else first
    markers = np.zeros((n, T))
    markers[np.arange(n), first] = 1
    markers[np.arange(n), second] = 1
    x = np.stack([numbers, markers], axis=-1).astype(np.float32)
    y = (numbers * markers).sum(axis=1, keepdims=True).astype(np.float32)
    return x, y


def norms_over_time(net, params, x, y):
    _, _, norms = jax.jit(gradient_through_time, static_argnums=0)(net, params, x, y)
    return np.asarray(norms[0])  # (T,): the recurrent layer's ‖dL/dh_t‖


def run(cell: str, T: int, epochs: int, n_train: int):
    net = jbp.Sequential((T, 2), [CELLS[cell](HIDDEN, return_sequences=False), Dense(1)], loss="mse")
    x, y = adding_problem(n_train, T, seed=0)
    x_test, y_test = adding_problem(1024, T, seed=1)
    params = net.init(jax.random.key(0), jnp.float32)
    start = norms_over_time(net, params, x_test[:256], y_test[:256])
    optimizer = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))
    params, history = jbp.fit(net, params, x, y, optimizer=optimizer, epochs=epochs, batch_size=BATCH,
                              key=jax.random.key(1))
    end = norms_over_time(net, params, x_test[:256], y_test[:256])
    mse = 2 * float(net.loss(params, x_test, y_test))  # jbp's mse is ½ mean of squares
    return mse, start, end


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=8192, help="training examples")
    parser.add_argument("--lengths", default="10,50,100")
    args = parser.parse_args(argv)
    lengths = [int(t) for t in args.lengths.split(",")]
    results = {(cell, T): run(cell, T, args.epochs, args.train) for T in lengths for cell in CELLS}
    rows = []
    for (cell, T), (mse, start, end) in results.items():
        rows.append((T, cell, f"{mse:.4f}", "solved" if mse < SOLVED else "unsolved",
                     f"{start[0] / start[-1]:.2g}", f"{end[0] / end[-1]:.2g}"))
    write_table(
        "long_dependency",
        f"Adding problem, {args.train} training examples, {args.epochs} epochs of mini-batches of {BATCH}, "
        f"hidden {HIDDEN}, Adam {LR:g} after clipping by global norm {CLIP:g}; test MSE on 1024 examples "
        f"(predicting the mean: 0.167; solved: < {SOLVED:g}); ‖dL/dh_1‖ / ‖dL/dh_T‖ on 256 test examples",
        ("T", "model", "test MSE", "", "‖dL/dh_1‖ / ‖dL/dh_T‖ at the start", "at the end"), rows,
    )
    plot(results, lengths)


def plot(results, lengths):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(lengths), figsize=(4 * len(lengths), 3.2), squeeze=False)
    for ax, T in zip(axes[0], lengths):
        for cell, color in (("RNN", "tab:red"), ("LSTM", "tab:blue")):
            _, start, end = results[(cell, T)]
            t = np.arange(1, T + 1)
            ax.semilogy(t, start, color=color, linestyle="--", label=f"{cell}, start")
            ax.semilogy(t, end, color=color, label=f"{cell}, end")
        ax.set_title(f"T = {T}")
        ax.set_xlabel("step t")
    axes[0][0].set_ylabel("‖dL/dh_t‖")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    FIGURES.mkdir(exist_ok=True)
    fig.savefig(FIGURES / "long_dependency.png", dpi=110)


if __name__ == "__main__":
    main()
