"""``jbp train``'s DP-SGD options: ``--dp-clip C`` with ``--dp-noise σ`` or ``--dp-epsilon ε``.

With them, :func:`jbp.fit` trains with :class:`jbp.DPSGD` (see
:mod:`jbp.training.privacy`); ``--dp-epsilon`` finds the smallest noise whose ``ε`` at
``--dp-delta`` after ``--epochs`` is within the budget, and that noise is saved with
the run's settings (a resumed run keeps it). The gradient check then runs on random
inputs and targets, so that nothing but DP-SGD touches the training data. The ``ε``
spent is printed and written to ``metrics.json``.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from jbp.cli.common import UsageError, usage
from jbp.training import privacy

#: ``--dp-delta``'s default.
DEFAULT_DELTA = 1e-5
#: The settings the options add to a run's (``RUN_SETTINGS``).
SETTINGS = ("dp_clip", "dp_noise", "dp_epsilon", "dp_delta", "dp_max_batch")


def add_options(p) -> None:
    g = p.add_argument_group("differential privacy (DP-SGD; README, \"Differential privacy\")")
    g.add_argument("--dp-clip", type=float, help="train with DP-SGD, clipping each example's gradient to this norm")
    g.add_argument("--dp-noise", type=float, help="noise multiplier σ: noise σ·clip is added to each step's sum")
    g.add_argument("--dp-epsilon", type=float, help="privacy budget ε: find the smallest noise that meets it")
    g.add_argument("--dp-delta", type=float, help=f"δ of the (ε, δ) guarantee (default {DEFAULT_DELTA:g})")
    g.add_argument("--dp-max-batch", type=int, help="the fixed maximum batch of Poisson sampling (default: overflow ≤ 1e-6 a step)")


def enabled(s: dict) -> bool:
    return any(s.get(k) is not None for k in SETTINGS)


def _accounting():
    if importlib.util.find_spec("dp_accounting") is None:
        raise UsageError("DP-SGD's accounting needs dp-accounting: pip install 'jbp[privacy]'")


def resolve(s: dict, n: int, batch_size: int, resumed: bool):
    """The run's :class:`jbp.DPSGD`, or ``None`` without ``--dp-*``. With
    ``--dp-epsilon`` (and no noise yet), finds the noise and stores it in ``s``."""
    if not enabled(s):
        return None
    _accounting()
    if not resumed and s.get("dp_epsilon") is not None and s.get("dp_noise") is not None:
        raise UsageError("give --dp-noise or --dp-epsilon, not both")
    if s.get("tol") is not None:
        raise UsageError("--tol cannot be used with DP-SGD: stopping on the training loss would release it")
    if s.get("dp_clip") is None:
        raise UsageError("DP-SGD needs --dp-clip C, the norm each example's gradient is clipped to")
    if s.get("dp_delta") is None:
        s["dp_delta"] = DEFAULT_DELTA
    if s.get("dp_epsilon") is None and s.get("dp_noise") is None:
        raise UsageError("DP-SGD needs --dp-noise σ or --dp-epsilon ε")
    if s.get("dp_epsilon") is not None and s.get("dp_noise") is None:
        bare = usage(privacy.DPSGD, s["dp_clip"], 0.0, s["dp_delta"], s.get("dp_max_batch"))
        s["dp_noise"] = usage(
            privacy.noise_multiplier, epsilon=s["dp_epsilon"], sample_rate=batch_size / n,
            steps=s["epochs"] * (n // batch_size), delta=s["dp_delta"], dataset_size=n,
            max_batch_size=bare.max_batch(n, batch_size),
        )
    return usage(privacy.DPSGD, s["dp_clip"], s["dp_noise"], s["dp_delta"], s.get("dp_max_batch"))


def random_batch(net, data, n: int, seed: int):
    """``n`` random inputs and targets shaped like ``data``'s, for a check that touches no data."""
    rng = np.random.default_rng(seed)
    # one example's shape: (n_features,), or a network of layers' input_shape (images)
    x = rng.normal(size=(n, *np.shape(data.x_train)[1:])).astype(data.x_train.dtype)
    n_out = net.output_shape[0]
    if net.loss_name == "cross_entropy":
        y = rng.integers(0, n_out, size=n).astype(data.y_train.dtype)
    elif net.loss_name == "binary_cross_entropy":
        y = rng.uniform(size=(n, n_out)).astype(data.y_train.dtype)
    else:
        y = rng.normal(size=(n, n_out)).astype(data.y_train.dtype)
    return x, y


def report(dp, n: int, batch_size: int, epochs: int) -> dict:
    """What ``metrics.json`` records of the privacy spent over ``epochs`` epochs."""
    steps = epochs * (n // batch_size)
    b_max = dp.max_batch(n, batch_size)
    spent = privacy.PrivacySpent(np.int32(steps), dp.noise_multiplier, dp.clip_norm, batch_size / n, n, b_max, dp.delta)
    return {
        "epsilon": spent.epsilon(), "delta": dp.delta, "noise_multiplier": dp.noise_multiplier,
        "clip_norm": dp.clip_norm, "sample_rate": batch_size / n, "expected_batch_size": batch_size,
        "max_batch_size": b_max, "dataset_size": n, "steps": steps,
        "accountant": "dp-accounting PLD, TruncatedSubsampledGaussianDpEvent (add/remove one)",
    }


def describe(r: dict) -> str:
    return (f"privacy: ε = {r['epsilon']:.3f} at δ = {r['delta']:g} (DP-SGD, clip {r['clip_norm']:g}, "
            f"noise σ {r['noise_multiplier']:g}, sample rate {r['sample_rate']:.4g}, {r['steps']} steps, "
            f"max batch {r['max_batch_size']}); the guarantee covers the parameters, not the training loss")

