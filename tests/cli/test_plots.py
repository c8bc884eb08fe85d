"""The run's figures: log scale with zero losses, a frame that says why it is empty, the
test curve, and what each 2-D or regression plot marks."""

import jax
import numpy as np
import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import jbp  # noqa: E402
from jbp import datasets  # noqa: E402
from jbp.cli import plots  # noqa: E402


@pytest.fixture(scope="module")
def xor():
    data = datasets.load("xor")
    net = jbp.MLP((2, 4, 1), activation="tanh", loss=data.loss)
    return net, net.init(jax.random.key(0), dtype=np.float32), data


def _texts(ax):
    return [t.get_text() for t in ax.texts] + [t.get_text() for t in ax.get_legend().get_texts()]


def test_a_loss_of_zero_stays_on_the_log_scale(xor):
    net, _, data = xor
    fig = plots.loss_figure(plt, net, data, [0.5, 0.01, 0.0], [[0, 0.7], [3, 0.0]])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    train, test = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    assert list(train) == [0.5, 0.01, pytest.approx(0.001)] and list(test) == [0.7, pytest.approx(0.001)]
    assert "a loss of 0 is drawn at 0.001" in _texts(ax)
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["training (per epoch)", "test (end of each chunk)"]
    plt.close(fig)


def test_a_run_with_nothing_to_draw_says_so(xor):
    net, _, data = xor
    for test_curve in ([[0, float("nan")]], [[0, 7.5]]):
        fig = plots.loss_figure(plt, net, data, [], test_curve)
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert texts == ["no training epoch completed\n(the run diverged in its first epoch)"]
        plt.close(fig)


def test_decision_boundary_marks_test_points_with_ticks_and_a_legend():
    data = datasets.load("moons")
    net = jbp.MLP((2, 4, 2), activation="tanh", loss=data.loss)
    fig = plots.boundary_figure(plt, net, net.init(jax.random.key(0), dtype=np.float32), data)
    ax = fig.axes[0]
    sizes = sorted(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets") and len(c.get_offsets()))
    assert sizes[-2:] == [len(data.x_test), len(data.x_train)]
    assert len(ax.get_xticks()) > 1 and len(ax.get_yticks()) > 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["class 0", "class 1", "training point", "test point"]
    plt.close(fig)


def test_regression_gets_a_prediction_against_target_plot(tmp_path):
    data = datasets.load("sine")
    net = jbp.MLP((1, 4, 1), activation="tanh", loss=data.loss)
    written = plots.plots(str(tmp_path), net, net.init(jax.random.key(0), dtype=np.float32), data, [0.4, 0.3], [[0, 0.5], [2, 0.3]])
    assert written == ["loss.png", "prediction.png"]
    assert (tmp_path / "prediction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plots.prediction_figure(plt, net, net.init(jax.random.key(0), dtype=np.float32), data)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["training points", "target (test)", "prediction"]
    assert fig.axes[0].get_title().startswith("sine\nprediction against target, test RMSE ")
    # the title fits in the figure (it was cut off at the right)
    fig.tight_layout()
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width
    plt.close(fig)


def test_the_kept_epoch_of_early_stopping_is_marked():
    data = datasets.load("moons")
    net = jbp.MLP((2, 4, 2), activation="tanh", loss=data.loss)
    fig = plots.loss_figure(plt, net, data, [0.6, 0.5, 0.45, 0.44], [[0, 0.7]], val_loss=[0.6, 0.5, 0.52, 0.55],
                            kept_epoch=2)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "kept epoch 2 (lowest validation loss)" in labels
    plt.close(fig)
