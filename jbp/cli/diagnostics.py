"""``jbp train``'s learning rule (``--rule``) and per-layer statistics (``layers.png``).

With ``--out`` the run trains with ``fit(..., monitor=True)`` when its network is a chain
of dense layers (``--hidden``, or ``--layers`` of dense, activation, flatten and dropout
items); the statistics of its chunks are concatenated, kept in the checkpoint (so
``--resume`` continues them) and written to ``metrics.json`` as
``{name: [[per dense layer] per epoch]}``, ``null`` for NaN. A rule other than backprop
needs such a network too.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import jax
import numpy as np

from jbp.cli.common import UsageError, usage
from jbp.cli.plots import save
from jbp.model import rules
from jbp.training import monitor
from jbp.training.monitor import LAYER_STATS

#: What the run's seed is folded with to make the feedback weights' key.
FEEDBACK_STREAM = 1
#: ``--rule`` names, as in :data:`jbp.rules.RULES`.
RULE_NAMES = {"bp": "backprop", "fa": "feedback alignment", "ss": "sign symmetry",
              "dfa": "direct feedback alignment"}


def rule(name: str, seed: int) -> rules.Rule:
    """The rule ``--rule name``; FA's and DFA's feedback weights come from the run's seed
    (a stream of its own: the init and shuffle keys are unchanged)."""
    return rules.by_name(name, jax.random.fold_in(jax.random.key(seed), FEEDBACK_STREAM))


def check(rule: rules.Rule, net, spec: Optional[str]) -> None:
    """A one-line :class:`UsageError` when ``rule`` cannot train ``net``, naming the
    ``--layers`` item (``spec``) that stands in the way."""
    try:
        rules.check_network(rule, net)
    except TypeError as e:
        i = rules.first_unweighted(net)
        if spec is None or i is None:
            raise UsageError(f"--rule {rule.name}: {e}") from None
        raise UsageError(
            f"--rule {rule.name} needs every layer with parameters to have weights (--hidden, or --layers "
            f"of dense and conv items with parameter-free items between them), but --layers item "
            f"{spec.split(',')[i].strip()!r} is a {type(net.layers[i]).__name__}"
        ) from None


def recordable(net) -> bool:
    """Whether ``fit(..., monitor=True)`` can record ``net``'s per-layer statistics."""
    try:
        monitor.layers_of(net)
    except TypeError:
        return False
    return True


def start(rule: rules.Rule, net, params, saved) -> tuple:
    """``(feedback, stats)`` a run starts from: a resumed run's (``saved``, its feedback
    checked against ``rule``), else the rule's fresh feedback and no statistics yet."""
    if saved is None:
        return rule.init(net, params), None
    return usage(rules.check_feedback, rule, net, params, saved.feedback), saved.extra.get("layer_stats")


def extend(stats: Optional[dict], layer_stats: dict, done: int) -> dict:
    """``stats`` (JSON-ready, ``None`` for NaN) with a chunk's first ``done`` epochs added."""
    stats = {name: [] for name in LAYER_STATS} if stats is None else stats
    for name in LAYER_STATS:
        rows = np.asarray(layer_stats[name][:done], np.float64).tolist()
        stats[name] += [[None if math.isnan(v) else v for v in row] for row in rows]
    return stats


def written(out: str, stats: Optional[dict], rule_name: str) -> list:
    """``[layers.png]`` once written, or ``[]`` where there are no statistics (no monitor,
    or the first epoch diverged)."""
    return [plot(out, stats, rule_name)] if stats is not None and stats["delta_norm"] else []


def plot(out: str, stats: dict, rule_name: str) -> str:
    """Writes ``layers.png``: each layer's speed of learning ``‖dL/db‖`` over the epochs,
    and beside it the alignment angle when the rule is not backprop. Returns its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = np.array(stats["delta_norm"], dtype=float)  # None -> nan
    epochs = np.arange(1, len(speed) + 1)
    with_angle = rule_name != "bp"
    fig, axes = plt.subplots(1, 2 if with_angle else 1, figsize=(9 if with_angle else 5, 3.2), squeeze=False)
    ax = axes[0, 0]
    for l in range(speed.shape[1]):
        ax.plot(epochs, speed[:, l], label=f"layer {l + 1}" + (" (output)" if l == speed.shape[1] - 1 else ""))
    ax.set(xlabel="epoch", ylabel="‖dL/db‖ at the epoch's last step", title="speed of learning per layer")
    if np.all(speed[np.isfinite(speed)] > 0) and np.isfinite(speed).any():
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    if with_angle:
        angle = np.array(stats["alignment"], dtype=float)
        ax = axes[0, 1]
        for l in range(angle.shape[1] - 1):  # the output layer's update is the gradient
            ax.plot(epochs, angle[:, l], label=f"layer {l + 1}")
        ax.axhline(90, color="gray", lw=0.5, ls="--")
        ax.set(xlabel="epoch", ylabel="degrees", title=f"{RULE_NAMES[rule_name]}: angle to the gradient")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, os.path.join(out, "layers.png"))
    plt.close(fig)
    return "layers.png"
