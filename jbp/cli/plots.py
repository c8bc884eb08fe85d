"""The run's figures, written into ``--out``.

- ``loss.png``: the mean training loss per epoch and the test loss at the end of each
  chunk of epochs (``--chunk``; and at epoch 0), on a log scale. A loss of exactly 0 is
  drawn at a floor below the smallest positive value (the legend says so); a run that
  completed no epoch (diverged at once) says so in the frame.
- ``decision_boundary.png`` (2-D classification): the predicted regions, the training
  points (circles) and the test points (triangles), with axes and a legend.
- ``prediction.png`` (regression): the network's prediction against the target: along the
  input for 1-D data (with the training points), else predicted against true values.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from jbp.cli import rundir


def _import_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def preload() -> threading.Thread:
    """Imports matplotlib in a background thread while JAX compiles and trains (XLA
    releases the GIL): its import is a sizeable part of a short run. :func:`plots`
    imports it again, which waits for this one to finish."""
    thread = threading.Thread(target=_import_matplotlib, name="jbp-import-matplotlib", daemon=True)
    thread.start()
    return thread


def plots(out: str, net, params, data, train_loss: list, test_curve=(), val_loss=None, kept_epoch=None) -> list:
    """Writes the figures, each atomically; their file names. ``test_curve``: ``[(epoch,
    test loss), ...]``; ``val_loss``: the validation loss per epoch, when the run has a
    validation split; ``kept_epoch``: the epoch whose parameters the run keeps (marked)."""
    _import_matplotlib()
    import matplotlib.pyplot as plt

    figures = {"loss.png": loss_figure(plt, net, data, train_loss, test_curve, val_loss, kept_epoch)}
    if data.n_features == 2 and data.is_classification:
        figures["decision_boundary.png"] = boundary_figure(plt, net, params, data)
    if not data.is_classification and hasattr(data, "x_test"):  # a streamed run has no test arrays here
        figures["prediction.png"] = prediction_figure(plt, net, params, data)
    for name, fig in figures.items():
        fig.tight_layout()
        save(fig, os.path.join(out, name))
        plt.close(fig)
    return list(figures)


def save(fig, path: str) -> None:
    """``fig.savefig(path)``, atomically: an interrupt never leaves half a PNG."""
    with rundir.write_atomic(path) as tmp:
        fig.savefig(tmp, dpi=100)


def loss_figure(plt, net, data, train_loss, test_curve, val_loss=None, kept_epoch=None):
    train = [(i + 1, v) for i, v in enumerate(train_loss) if math.isfinite(v)]
    test = [(e, v) for e, v in test_curve if math.isfinite(v)]
    val = [(i + 1, v) for i, v in enumerate(val_loss or []) if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.set(xlabel="epoch", ylabel=f"mean loss ({net.loss_name})", title=f"{data.name}: loss")
    values = [v for _, v in train + test + val]
    if not train:  # diverged in its first epoch, or stopped at once: say so, not an empty frame
        ax.text(0.5, 0.5, "no training epoch completed\n(the run diverged in its first epoch)", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_xlim(-0.5, 1.5)
    if values:
        positive = [v for v in values if v > 0]
        floor = min(positive) / 10 if positive else 1e-12
        zero = any(v <= 0 for v in values)
        lift = lambda points: ([e for e, _ in points], [max(v, floor) for _, v in points])
        if train:
            ax.plot(*lift(train), label="training (per epoch)")
        if val:
            ax.plot(*lift(val), label="validation (per epoch)")
        if test:
            ax.plot(*lift(test), "o-", ms=3, label="test (end of each chunk)")
        if kept_epoch is not None and kept_epoch >= 1:
            ax.axvline(kept_epoch, color="k", ls=":", lw=1, label=f"kept epoch {kept_epoch} (lowest validation loss)")
        ax.set_yscale("log")
        if zero:
            ax.plot([], [], " ", label=f"a loss of 0 is drawn at {floor:.1g}")
        ax.legend(fontsize=8)
    return fig


def _labels(net, params, x) -> np.ndarray:
    p = np.asarray(net.predict(params, np.asarray(x, params[0].W.dtype)))
    return p.argmax(1) if p.shape[1] > 1 else (p[:, 0] > 0.5).astype(int)


def _targets(y) -> np.ndarray:
    y = np.asarray(y)
    return y if y.ndim == 1 else (y[:, 0] > 0.5).astype(int)


def boundary_figure(plt, net, params, data):
    both = np.concatenate([data.x_train, data.x_test])
    lo, hi = both.min(0) - 0.3, both.max(0) + 0.3
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([g0.ravel(), g1.ravel()], 1)
    classes = max(data.n_outputs, 2)
    cmap = plt.get_cmap("viridis", classes)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.contourf(g0, g1, _labels(net, params, grid).reshape(g0.shape), levels=np.arange(classes + 1) - 0.5,
                alpha=0.3, cmap=cmap)
    kw = dict(cmap=cmap, vmin=-0.5, vmax=classes - 0.5, edgecolors="k", linewidths=0.3)
    ax.scatter(data.x_train[:, 0], data.x_train[:, 1], c=_targets(data.y_train), s=10, marker="o", **kw)
    ax.scatter(data.x_test[:, 0], data.x_test[:, 1], c=_targets(data.y_test), s=22, marker="^", **kw)
    handles = [plt.Line2D([], [], ls="", marker="s", ms=7, color=cmap(k), label=f"class {k}") for k in range(classes)]
    handles += [plt.Line2D([], [], ls="", marker="o", mfc="w", mec="k", label="training point"),
                plt.Line2D([], [], ls="", marker="^", mfc="w", mec="k", label="test point")]
    ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.8)
    ax.set(title=f"{data.name}: decision regions", xlabel="x[0]", ylabel="x[1]")
    return fig


def prediction_figure(plt, net, params, data):
    """The prediction against the target, in the target's own units (``data.y_scaling`` undone)."""
    y_hat, y_test = np.asarray(net.predict(params, data.x_test)), np.asarray(data.y_test)
    y_train = np.asarray(data.y_train)
    scaling = getattr(data, "y_scaling", None)
    if scaling is not None:
        y_hat, y_test, y_train = scaling.invert(y_hat), scaling.invert(y_test), scaling.invert(y_train)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if data.n_features == 1:
        order = np.argsort(data.x_test[:, 0])
        ax.scatter(data.x_train[:, 0], y_train[:, 0], s=6, c="0.6", label="training points")
        ax.plot(data.x_test[order, 0], y_test[order, 0], "k-", lw=1.5, label="target (test)")
        ax.plot(data.x_test[order, 0], y_hat[order, 0], "C1--", lw=1.5, label="prediction")
        ax.set(xlabel="x (standardised)" if getattr(data, "x_scaling", None) is not None else "x", ylabel="y")
    else:
        ax.scatter(y_test.ravel(), y_hat.ravel(), s=6)
        lo, hi = float(y_test.min()), float(y_test.max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="prediction = target")
        ax.set(xlabel="target (test)", ylabel="prediction")
    rmse = float(np.sqrt(np.mean((y_hat - y_test) ** 2)))
    # two short lines: a long dataset name must not push the title out of the frame
    ax.set_title(f"{data.name}\nprediction against target, test RMSE {rmse:.3g}", fontsize=10)
    ax.legend(fontsize=8)
    return fig
