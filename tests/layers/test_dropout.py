"""Dropout: inverted, the identity when not training; the mask is its residual."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jbp.layers import Dropout
from layer_cases import assert_backwards_match_vjp

KEY = jax.random.key(7)


def test_backward_matches_vjp_training_and_not():
    cases = [(Dropout(0.3), (6,), 4), (Dropout(0.5), (2, 3), 3), (Dropout(0.0), (5,), 2)]
    assert_backwards_match_vjp(cases, key=KEY, train=True)
    assert_backwards_match_vjp(cases, key=None, train=False)


def test_keeps_the_expectation_and_drops_about_rate():
    x = jnp.ones((200, 50))
    y, mask = Dropout(0.25).forward((), x, key=KEY, train=True)
    assert mask.dtype == jnp.bool_
    np.testing.assert_array_equal(y, jnp.where(mask, 1 / 0.75, 0.0))
    assert abs(float(jnp.mean(y)) - 1.0) < 0.03 and abs(float(1 - jnp.mean(mask)) - 0.25) < 0.02


def test_identity_when_not_training():
    x = jnp.arange(6.0).reshape(2, 3)
    y, residual = Dropout(0.5).forward((), x, key=KEY)
    chex.assert_trees_all_equal(y, x)
    assert residual is None


def test_training_needs_a_key():
    with pytest.raises(ValueError, match=r"Dropout\(rate=0.5\).forward with train=True needs key=, a PRNG key"):
        Dropout(0.5).forward((), jnp.ones((2, 3)), train=True)


@pytest.mark.parametrize("rate, error", [(1.0, ValueError), (-0.1, ValueError), ("0.5", TypeError)])
def test_bad_rate_is_named(rate, error):
    with pytest.raises(error, match="Dropout's rate must be"):
        Dropout(rate)
