"""Weight initialisation schemes, keyed by an explicit PRNG key.

Each scheme draws ``W`` of shape ``(n_out, n_in)`` with variance ``scale / fan``:

=================  ==========================  ===========================
name               variance                    distribution
=================  ==========================  ===========================
``glorot_uniform`` ``2 / (n_in + n_out)``      uniform on ``[-a, a]``
``glorot_normal``  ``2 / (n_in + n_out)``      truncated normal (±2σ)
``he_uniform``     ``2 / n_in``                uniform
``he_normal``      ``2 / n_in``                truncated normal (±2σ)
``lecun_uniform``  ``1 / n_in``                uniform
``lecun_normal``   ``1 / n_in``                truncated normal (±2σ)
=================  ==========================  ===========================

Biases start at zero. References: Glorot & Bengio (2010), He et al. (2015),
LeCun et al. (1998). The truncated normal is rescaled so that its variance is the
one in the table, as in ``jax.nn.initializers.variance_scaling``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# Standard deviation of a unit normal truncated to [-2, 2].
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def _variance(name: str, n_in: int, n_out: int) -> float:
    if name.startswith("glorot"):
        return 2.0 / (n_in + n_out)
    if name.startswith("he"):
        return 2.0 / n_in
    return 1.0 / n_in


def _uniform(key, shape, variance, dtype):
    limit = jnp.sqrt(3.0 * variance).astype(dtype)
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def _truncated_normal(key, shape, variance, dtype):
    std = jnp.sqrt(variance).astype(dtype) / _TRUNCATED_NORMAL_STD
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


INITIALIZERS: dict[str, Callable] = {
    f"{family}_{dist}": draw
    for family in ("glorot", "he", "lecun")
    for dist, draw in (("uniform", _uniform), ("normal", _truncated_normal))
}


def init_weight(name: str, key: Array, n_in: int, n_out: int, dtype) -> Array:
    """Draws one layer's ``W``, ``(n_out, n_in)``, with the scheme ``name``."""
    return init_array(name, key, (n_out, n_in), n_in, n_out, dtype)


def init_array(name: str, key: Array, shape: tuple, fan_in: int, fan_out: int, dtype) -> Array:
    """Draws weights of any ``shape`` with the scheme ``name`` and the given fans (a
    convolution's ``W`` ``(F, C, *k)`` has ``fan_in = C · prod(k)``, ``fan_out = F · prod(k)``)."""
    return INITIALIZERS[name](key, shape, _variance(name, fan_in, fan_out), dtype)
