"""The run's figures, written into ``--out``."""

from __future__ import annotations

import os

import numpy as np


def plots(out: str, net, params, data, train_loss: list, val_loss: list | None = None) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(train_loss) + 1), train_loss, label="training")
    ax.set(xlabel="epoch", ylabel="mean training loss", title=f"{data.name}: {net.loss_name}")
    if val_loss:
        ax.plot(np.arange(1, len(val_loss) + 1), val_loss, label="validation")
        ax.set_ylabel("mean loss")
        ax.legend()
    if all(v > 0 for v in train_loss + list(val_loss or [])):
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=100)
    plt.close(fig)
    written.append("loss.png")

    if data.n_features == 2 and data.is_classification:
        lo, hi = data.x_train.min(0) - 0.3, data.x_train.max(0) + 0.3
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
        grid = np.stack([g0.ravel(), g1.ravel()], 1).astype(np.float32)
        p = np.asarray(net.predict(params, grid))
        label = p.argmax(1) if p.shape[1] > 1 else (p[:, 0] > 0.5).astype(int)
        y = data.y_train if data.y_train.ndim == 1 else (data.y_train[:, 0] > 0.5).astype(int)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.contourf(g0, g1, label.reshape(g0.shape), alpha=0.3, cmap="viridis")
        ax.scatter(data.x_train[:, 0], data.x_train[:, 1], c=y, s=8, cmap="viridis", edgecolors="k", linewidths=0.2)
        ax.set(title=f"{data.name}: decision regions", xticks=[], yticks=[])
        fig.tight_layout()
        fig.savefig(os.path.join(out, "decision_boundary.png"), dpi=100)
        plt.close(fig)
        written.append("decision_boundary.png")
    return written


