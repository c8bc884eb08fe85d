"""Training mode for networks with stochastic layers (dropout): one fresh key per step.

A network with stochastic layers (its ``stochastic`` is true) trains with
``train=True`` and a PRNG key per step. :func:`step_key` derives that key from
:func:`jbp.fit`'s ``key`` as a pure function of ``(key, epoch, step)``, so a run that is
stopped and resumed (``start_epoch``, ``opt_state``) draws exactly the masks of an
uninterrupted one. The keys come from their own stream: the shuffles use
``fold_in(key, epoch)``, the steps ``fold_in(fold_in(fold_in(key, STREAM), epoch), step)``
with ``STREAM`` above every epoch index, so the two never coincide.
"""

from __future__ import annotations

import jax

Array = jax.Array

#: ``fold_in`` data of the per-step keys' stream; epochs are int32, so no epoch is it.
STREAM = 2**32 - 1


def step_key(key: Array, epoch: Array, step: Array) -> Array:
    """The key of step ``step`` of epoch ``epoch`` (both absolute indices)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, STREAM), epoch), step)
