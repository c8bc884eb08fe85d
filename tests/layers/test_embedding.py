"""Embedding (integer ids, BP5 a scatter-add, no dx) and PositionEmbedding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import Embedding, EmbeddingParams, PositionEmbedding
from helpers import rel_errors
from layer_cases import RTOL64, assert_backwards_match_vjp


def test_embedding_backward_matches_vjp_float64():
    layer = Embedding(7, 3)
    rng = np.random.default_rng(0)
    table = rng.normal(size=(7, 3))
    x = rng.integers(0, 7, (4, 5))
    x[0, :3] = 2  # repeated ids: their rows add
    dy = rng.normal(size=(4, 5, 3))
    y, residuals = layer.forward(EmbeddingParams(table), x)
    grads, dx = layer.backward(EmbeddingParams(table), residuals, dy)
    _, vjp = jax.vjp(lambda p: layer.forward(p, x)[0], EmbeddingParams(table))
    assert dx is None and max(rel_errors(grads, vjp(dy))) <= RTOL64
    chex.assert_trees_all_close(y, table[x], rtol=0)


def test_check_layer_draws_valid_ids_and_checks_the_table():
    report = jbp.check_layer(Embedding(11, 4), (6,), key=jax.random.key(0))
    assert report.ok and [leaf.name for leaf in report.leaves] == ["params.table"], str(report)


def test_position_embedding_backward_matches_vjp():
    assert_backwards_match_vjp([(PositionEmbedding(8), (5, 3), 2), (PositionEmbedding(4), (4, 2), 3)])
    assert jbp.check_layer(PositionEmbedding(8), (6, 4), key=jax.random.key(1)).ok


def test_position_embedding_leaves_rows_beyond_T_untouched():
    layer = PositionEmbedding(6)
    params, _ = layer.init(jax.random.key(0), (4, 2), jnp.float64)
    grads, dx = layer.backward(params, None, jnp.ones((3, 4, 2)))
    chex.assert_trees_all_close(grads.table, jnp.concatenate([jnp.full((4, 2), 3.0), jnp.zeros((2, 2))]), rtol=0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: Embedding(0, 3), ValueError, "Embedding's vocab must be >= 1, got 0"),
    (lambda: Embedding(5, 2.0), TypeError, "Embedding's features must be an int, got float 2.0"),
    (lambda: PositionEmbedding(4).init(jax.random.key(0), (5, 3), jnp.float32), ValueError,
     "PositionEmbedding.init's input_shape has T=5 positions but its context is 4; T must be <= context"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
