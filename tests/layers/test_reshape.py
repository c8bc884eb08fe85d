"""Flatten: a reshape forward, the reshape back backward."""

import jax
import jax.numpy as jnp
import pytest

from jbp.layers import Flatten
from layer_cases import assert_backwards_match_vjp


def test_backward_matches_vjp():
    (y,) = assert_backwards_match_vjp([(Flatten(), (3, 2, 2), 2)])
    assert y.shape == (2, 12)


def test_init_gives_the_flat_shape():
    assert Flatten().init(jax.random.key(0), (4, 4, 3), jnp.float32) == ((), (48,))


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match=r"Flatten.init's input_shape\[1\] must be >= 1, got 0"):
        Flatten().init(jax.random.key(0), (4, 0), jnp.float32)
