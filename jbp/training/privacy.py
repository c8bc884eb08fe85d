"""Differentially private training (DP-SGD) and its accounting.

``jbp.fit(..., privacy=jbp.DPSGD(clip_norm=C, noise_multiplier=σ))`` replaces each
mini-batch step of :func:`jbp.fit` by a DP-SGD step (Abadi et al. 2016):

1. **Poisson subsampling.** Every example joins the step independently with
   probability ``q = batch_size / n``, so the batch has ``batch_size`` examples on
   average. Under ``jit`` shapes are fixed: the step takes a fixed maximum batch
   ``B_max`` (:meth:`DPSGD.max_batch`) with a 0/1 mask. If more than ``B_max``
   examples are drawn (an *overflow*; by default its probability is at most
   :data:`OVERFLOW_PROBABILITY` per step), a uniformly random ``B_max`` of them are
   kept. Each example draws 32 random bits per step: it joins when they are below
   ``floor(q · 2³²)``, and the ``B_max`` smallest win on overflow.
2. **Clipping.** Each example's gradient is clipped to norm ``C``
   (:func:`jbp.clipped_grad`'s one forward and one backward pass). A
   :class:`jbp.Sequential` runs in training mode, as in :func:`jbp.fit` without
   privacy: its stochastic layers (dropout) draw their masks from
   ``fold_in(step key, stochastic.STREAM)``, one mask per row, and each example's
   gradient is that of its own loss under its row's mask.
3. **Noise.** ``σ C ξ``, ``ξ ~ N(0, I)``, is added to the sum of the clipped gradients,
   and the result divided by the *expected* batch size ``q n = batch_size`` (not by the
   drawn size, which would depend on the data set). The optimizer then updates.

There are ``n // batch_size`` steps per epoch. Every random draw comes from
``jax.random.fold_in(key, epoch)``, so a resumed run repeats an uninterrupted one
exactly.

**Accounting.** The mechanism is exactly dp-accounting's
``TruncatedSubsampledGaussianDpEvent(n, q, B_max, σ)`` (Poisson sampling truncated to
a random subset of ``B_max``, then the Gaussian mechanism), self-composed over the
steps; :meth:`PrivacySpent.epsilon` asks its privacy-loss-distribution (PLD)
accountant for ``ε`` at ``δ``. With the default ``B_max``, ``ε`` equals that of plain
Poisson sampling (``PoissonSampledDpEvent``) to about four digits. :func:`epsilon` and
:func:`noise_multiplier` give the accounting on its own, for either event, with the
PLD or the RDP accountant. Neighbouring data sets differ by adding or removing one
example; ``n`` is treated as public. See the README, "Differential privacy", for what
this does and does not guarantee.

``dp_accounting`` and ``scipy`` are imported when first needed: ``import jbp`` does
not load them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.model.per_example import clipped_grad_sum
from jbp.model import rules
from jbp.training import stochastic
from jbp.training.update import step as one_step

Array = jax.Array

#: The default maximum batch ``B_max`` is the smallest with a per-step overflow
#: probability ``P(Binomial(n, q) > B_max)`` at most this.
OVERFLOW_PROBABILITY = 1e-6
#: The accountants :func:`epsilon` can use.
ACCOUNTANTS = ("pld", "rdp")
#: The PLD accountant's ``value_discretization_interval``. It rounds pessimistically, so
#: ``ε`` stays an upper bound; 1e-3 is ~10x faster than the library's 1e-4 on the
#: truncated event and moves ``ε`` by about 1e-4 relative (README, "Differential privacy").
PLD_DISCRETIZATION = 1e-3


@dataclasses.dataclass(frozen=True)
class DPSGD:
    """DP-SGD settings for :func:`jbp.fit` (see the module docstring for the mechanism).

    A frozen, hashable description: ``jit`` treats it as static.

    Args:
      clip_norm: ``C > 0``, the norm each example's gradient is clipped to.
      noise_multiplier: ``σ >= 0``; the noise added to the clipped sum has standard
        deviation ``σ C``. ``σ = 0`` trains with clipping only (``ε`` is infinite).
      delta: the ``δ`` at which ``history.epsilon()`` reports ``ε``, ``0 < δ < 1``
        (default ``1e-5``; take it well below ``1/n``).
      max_batch_size: ``B_max``, the fixed batch the step computes; default
        :meth:`max_batch`'s. Larger costs time, smaller truncates more often (the
        accounting follows either way).

    Example::

      dp = jbp.DPSGD(clip_norm=1.0, noise_multiplier=1.1)
      params, history = jbp.fit(net, params, x, y, optimizer=optax.adam(1e-3),
                                epochs=30, batch_size=64, key=key, privacy=dp)
      history.epsilon()  # ε at dp.delta for the 30 epochs' steps
    """

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5
    max_batch_size: Optional[int] = None

    def __post_init__(self):
        _validate.real("clip_norm", self.clip_norm, positive=True, finite=True)
        _noise("noise_multiplier", self.noise_multiplier)
        _delta(self.delta)
        if self.max_batch_size is not None:
            _validate.positive_int("max_batch_size", self.max_batch_size)
        for f in ("clip_norm", "noise_multiplier", "delta"):  # plain floats: hashable, static
            object.__setattr__(self, f, float(getattr(self, f)))

    def max_batch(self, n: int, batch_size: int) -> int:
        """``B_max`` for ``n`` examples and an expected batch of ``batch_size``.

        ``max_batch_size`` if given (at most ``n``), else the smallest ``B`` with
        ``P(Binomial(n, q) > B) <= OVERFLOW_PROBABILITY``, ``q = batch_size / n``.
        """
        if self.max_batch_size is not None:
            return min(self.max_batch_size, n)
        return default_max_batch(n, batch_size)


@functools.lru_cache(maxsize=None)
def default_max_batch(n: int, batch_size: int) -> int:
    """The smallest ``B`` with ``P(Binomial(n, batch_size / n) > B) <= OVERFLOW_PROBABILITY``."""
    from scipy import stats

    q = batch_size / n
    b = min(int(stats.binom.isf(OVERFLOW_PROBABILITY, n, q)), n)
    while b > 0 and stats.binom.sf(b - 1, n, q) <= OVERFLOW_PROBABILITY:
        b -= 1
    while stats.binom.sf(b, n, q) > OVERFLOW_PROBABILITY:
        b += 1
    return b


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["steps"],
    meta_fields=["noise_multiplier", "clip_norm", "sample_rate", "dataset_size", "max_batch_size", "delta"],
)
@dataclasses.dataclass(frozen=True)
class PrivacySpent:
    """What a DP-SGD run of :func:`jbp.fit` did, for its accounting (``history.privacy``).

    Attributes:
      steps: the noisy steps taken since epoch 0 (``start_epoch`` counts as that many
        epochs of the same mechanism; an epoch that diverged counts, as it touched
        the data), an int array.
      noise_multiplier, clip_norm, delta: from the :class:`DPSGD`.
      sample_rate: ``q = batch_size / n``.
      dataset_size: ``n``.
      max_batch_size: ``B_max``.
    """

    steps: Array
    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    dataset_size: int
    max_batch_size: int
    delta: float

    def epsilon(self, delta: Optional[float] = None) -> float:
        """``ε`` at ``delta`` (default the :class:`DPSGD`'s ``delta``) for these steps:
        dp-accounting's PLD accountant on the exact (truncated Poisson) mechanism."""
        return epsilon(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=int(self.steps),
            delta=self.delta if delta is None else delta,
            dataset_size=self.dataset_size,
            max_batch_size=self.max_batch_size,
        )


# ----------------------------------------------------------------------------- training


def fit_args(privacy, net, params, x, y, batch_size, key, tol, loss_and_grad, mesh) -> None:
    """The checks :func:`jbp.fit` adds when ``privacy`` is given (on checked ``net``,
    ``params``, ``x``, ``y`` and ``batch_size``)."""
    if not isinstance(privacy, DPSGD):
        raise TypeError(f"privacy must be a jbp.DPSGD or None, got {_validate.describe(privacy)}")
    if key is None:
        raise ValueError("privacy needs key for its Poisson sampling and noise; pass key=jax.random.key(seed)")
    if tol is not None:
        raise ValueError(
            "tol cannot be used with privacy: stopping on the training loss would release "
            "it, and it is not private; leave tol=None"
        )
    if loss_and_grad is not None:
        raise ValueError("loss_and_grad cannot be used with privacy: DP-SGD clips jbp's own per-example gradients")
    if mesh is not None:
        raise ValueError("mesh cannot be used with privacy: DP-SGD runs on one device")
    # Traces the step's per-example norms once, outside the compiled loop: a layer
    # they cannot handle is refused here, with its name (jbp.layers.per_example).
    b_max = privacy.max_batch(x.shape[0], batch_size)
    batch = lambda a: jax.ShapeDtypeStruct((b_max, *a.shape[1:]), a.dtype)
    jax.eval_shape(
        lambda p, xb, yb: clipped_grad_sum(net, p, xb, yb, jnp.ones((), x.dtype), jnp.ones(b_max, x.dtype),
                                           _layer_key(net, key), train=True),
        params, batch(x), batch(y),
    )


def _layer_key(net, key: Array):
    """The key of the forward pass's stochastic layers in a step with key ``key`` (a
    stream apart from the sampling's and the noise's, which split ``key``); ``None`` for a
    network without them."""
    return jax.random.fold_in(key, stochastic.STREAM) if net.stochastic else None


def sample(key: Array, n: int, batch_size: int, max_batch: int) -> tuple[Array, Array]:
    """Poisson sampling with rate ``q = batch_size / n``, truncated to ``max_batch``.

    Returns:
      ``(idx, mask)``, both ``(max_batch,)``: rows ``x[idx]`` and 1 where the row is in
      the batch. Example ``j`` is in it with probability ``floor(q 2³²) / 2³² <= q``
      (``q = 1``: always), independently of the others, unless more than
      ``max_batch`` are drawn: then a uniformly random ``max_batch`` of them.
    """
    bits = jax.random.bits(key, (n,), jnp.uint32)
    # The max_batch smallest draws (~bits: largest first); ties go to the lower index.
    top, idx = jax.lax.top_k(~bits, max_batch)
    if batch_size == n:
        return idx, jnp.ones((max_batch,), bool)
    threshold = math.floor(batch_size / n * 2**32)  # < 2**32 as batch_size < n
    return idx, ~top < jnp.uint32(threshold)


def noisy_clipped_grad(net, dp: DPSGD, batch_size: int, params, x: Array, y: Array, key: Array):
    """One DP-SGD gradient: sample, clip, sum, add ``σ C ξ``, divide by ``batch_size``.

    Returns:
      ``(loss, grads)``: the mean loss of the drawn examples (not private) and the noisy
      gradient, with the structure of ``params``.
    """
    n = x.shape[0]
    sample_key, noise_key = jax.random.split(key)
    idx, mask = sample(sample_key, n, batch_size, dp.max_batch(n, batch_size))
    weights = mask.astype(x.dtype)
    clip_norm = jnp.asarray(dp.clip_norm, x.dtype)
    loss_sum, grad_sum = clipped_grad_sum(net, params, x[idx], y[idx], clip_norm, weights,
                                          _layer_key(net, key), train=True)
    leaves, tree = jax.tree.flatten(grad_sum)
    noise_keys = jax.random.split(noise_key, len(leaves))
    scale = dp.noise_multiplier * dp.clip_norm
    noisy = [
        (g + jnp.asarray(scale, g.dtype) * jax.random.normal(k, g.shape, g.dtype)) / batch_size
        for g, k in zip(leaves, noise_keys)
    ]
    return loss_sum / jnp.maximum(jnp.sum(weights), 1), jax.tree.unflatten(tree, noisy)


def private_epoch(net, optimizer, dp: DPSGD, batch_size: int, params, opt_state, x, y, key):
    """One epoch of DP-SGD: ``n // batch_size`` noisy steps, keys split from ``key``; each
    is the one training step (:func:`jbp.training.update.step`) with the noisy clipped
    gradient of :func:`noisy_clipped_grad` in place of the backward pass's.

    Returns:
      ``(params, opt_state, loss)``, ``loss`` the mean of the steps' losses.
    """

    def step(carry, step_key):
        params, opt_state = carry
        noisy = lambda p, xs, ys, **mode: noisy_clipped_grad(net, dp, batch_size, p, xs, ys, step_key)
        params, opt_state, loss, _ = one_step(net, optimizer, rules.backprop(), params, opt_state, (), x, y,
                                              loss_and_grad=noisy)
        return (params, opt_state), loss

    steps = x.shape[0] // batch_size
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
    return params, opt_state, jnp.mean(losses)


def spent(dp: DPSGD, n: int, batch_size: int, epochs: Array) -> PrivacySpent:
    """The :class:`PrivacySpent` of ``epochs`` epochs (an array, inside ``jit``)."""
    return PrivacySpent(
        steps=epochs.astype(jnp.int32) * (n // batch_size),
        noise_multiplier=dp.noise_multiplier,
        clip_norm=dp.clip_norm,
        sample_rate=batch_size / n,
        dataset_size=n,
        max_batch_size=dp.max_batch(n, batch_size),
        delta=dp.delta,
    )


# ----------------------------------------------------------------------------- accounting


def _noise(arg: str, value) -> None:
    _validate.real(arg, value, finite=True)
    if float(value) < 0:
        raise ValueError(f"{arg} must be >= 0 (the noise's standard deviation over clip_norm), got {float(value)}")


def _delta(value) -> None:
    _validate.real("delta", value)
    if not 0 < float(value) < 1:
        raise ValueError(f"delta must lie in (0, 1), got {float(value)}")


def _event(noise_multiplier: float, sample_rate: float, steps: int, dataset_size, max_batch_size):
    import dp_accounting

    if max_batch_size is None:
        one = dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    else:
        one = dp_accounting.TruncatedSubsampledGaussianDpEvent(
            dataset_size, sample_rate, max_batch_size, noise_multiplier
        )
    return dp_accounting.SelfComposedDpEvent(one, steps)


def _accountant(name: str):
    from dp_accounting import pld, rdp

    if name == "pld":
        return pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    return rdp.RdpAccountant()


def _mechanism_args(sample_rate, steps, delta, dataset_size, max_batch_size, accountant) -> tuple:
    _validate.real("sample_rate", sample_rate)
    if not 0 < float(sample_rate) <= 1:
        raise ValueError(
            f"sample_rate must lie in (0, 1] (q = batch_size / n, a probability), got {float(sample_rate)}"
        )
    steps = _validate.integer("steps", steps, low=0)
    _delta(delta)
    _validate.name("accountant", accountant, ACCOUNTANTS)
    if (dataset_size is None) != (max_batch_size is None):
        raise ValueError(
            "dataset_size and max_batch_size go together (truncated Poisson sampling); "
            f"got dataset_size={dataset_size!r} and max_batch_size={max_batch_size!r}"
        )
    if max_batch_size is not None:
        dataset_size = _validate.positive_int("dataset_size", dataset_size)
        max_batch_size = _validate.positive_int("max_batch_size", max_batch_size)
        if accountant != "pld":
            raise ValueError(
                "accountant='rdp' has no truncated Poisson sampling; use accountant='pld' "
                "or leave out dataset_size and max_batch_size"
            )
    return float(sample_rate), steps, float(delta), dataset_size, max_batch_size


def epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    dataset_size: Optional[int] = None,
    max_batch_size: Optional[int] = None,
    accountant: str = "pld",
) -> float:
    """``ε`` of DP-SGD at ``δ``, by Google's dp-accounting library.

    The mechanism is ``steps`` self-compositions of the Gaussian mechanism (noise
    ``noise_multiplier`` times the sensitivity) on a Poisson sample of rate
    ``sample_rate``: ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``, or, with
    ``dataset_size`` and ``max_batch_size``, the sample truncated to at most
    ``max_batch_size`` as :func:`jbp.fit` does it,
    ``TruncatedSubsampledGaussianDpEvent(n, q, B_max, σ)`` (PLD only). Neighbouring
    data sets differ by adding or removing one example.

    Args:
      noise_multiplier: ``σ >= 0`` (0: no privacy, ``ε = inf``).
      sample_rate: ``q`` in ``(0, 1]``.
      steps: the number of steps, ``>= 0``.
      delta: ``δ`` in ``(0, 1)``.
      dataset_size, max_batch_size: ``n`` and ``B_max``, both or neither.
      accountant: ``"pld"`` (privacy loss distributions, the tighter; default) or
        ``"rdp"`` (Rényi DP).

    Returns:
      ``ε`` (``inf`` without noise).
    """
    _noise("noise_multiplier", noise_multiplier)
    q, steps, delta, n, b_max = _mechanism_args(sample_rate, steps, delta, dataset_size, max_batch_size, accountant)
    if steps == 0:  # nothing released (dp-accounting refuses to compose an event 0 times)
        return 0.0
    acc = _accountant(accountant)
    acc.compose(_event(float(noise_multiplier), q, steps, n, b_max))
    return float(acc.get_epsilon(delta))


#: :func:`noise_multiplier` searches up to this noise multiplier.
MAX_NOISE_MULTIPLIER = 1e4


def noise_multiplier(
    *,
    epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    dataset_size: Optional[int] = None,
    max_batch_size: Optional[int] = None,
    accountant: str = "pld",
) -> float:
    """The smallest noise multiplier whose :func:`epsilon` is at most ``epsilon``.

    dp-accounting's ``calibrate_dp_mechanism`` (Brent's method, to within ``1e-4``) on
    the same events as :func:`epsilon`; the result is rounded up to a multiple of
    ``1e-4``, and raised by ``1e-4`` steps until ``epsilon(noise_multiplier=result,
    ...) <= epsilon`` holds.

    Args:
      epsilon: the budget ``ε > 0``.
      sample_rate, steps, delta, dataset_size, max_batch_size, accountant: as
        :func:`epsilon` (``steps >= 1``).

    Raises:
      ValueError: a bad argument, or a budget no noise multiplier up to
        :data:`MAX_NOISE_MULTIPLIER` meets.
    """
    _validate.real("epsilon", epsilon, positive=True, finite=True)
    q, steps, delta, n, b_max = _mechanism_args(sample_rate, steps, delta, dataset_size, max_batch_size, accountant)
    if steps < 1:
        raise ValueError(f"steps must be >= 1 to calibrate the noise, got {steps}")
    import dp_accounting

    def eps(sigma):
        acc = _accountant(accountant)
        acc.compose(_event(sigma, q, steps, n, b_max))
        return acc.get_epsilon(delta)

    if eps(MAX_NOISE_MULTIPLIER) > epsilon:
        raise ValueError(
            f"epsilon={epsilon:g} cannot be met: even noise_multiplier={MAX_NOISE_MULTIPLIER:g} "
            f"gives ε = {eps(MAX_NOISE_MULTIPLIER):.3g} for {steps} steps at sample_rate={q:g}, delta={delta:g}"
        )
    sigma = dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant),
        lambda s: _event(s, q, steps, n, b_max),
        float(epsilon),
        delta,
        # From [0, 1], doubling the upper end until it meets the budget (met at MAX above).
        dp_accounting.LowerEndpointAndGuess(0.0, 1.0),
        tol=1e-4,
    )
    sigma = math.ceil(sigma * 1e4) / 1e4
    while eps(sigma) > epsilon:  # Brent's answer is within tol, maybe on the wrong side
        sigma += 1e-4
    return sigma
