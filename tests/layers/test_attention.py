"""CausalSelfAttention: the backward's equations, in both memory modes, against jax.vjp."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import AttentionParams, CausalSelfAttention
from jbp.layers import attention as attention_module
from layer_cases import assert_backwards_match_vjp, point


def test_backward_matches_vjp_in_both_modes():
    assert_backwards_match_vjp([
        (CausalSelfAttention(2), (7, 8), 2),
        (CausalSelfAttention(1), (1, 3), 2),
        (CausalSelfAttention(2, keep="lse", block=3), (7, 8), 2),  # blocks do not divide T
        (CausalSelfAttention(4, keep="lse", block=4), (8, 8), 1),
        (CausalSelfAttention(2, keep="lse", block=16), (5, 4), 2),  # one block longer than T
    ])


@pytest.mark.parametrize("keep", ["probs", "lse"])
def test_check_layer_float32(keep):
    report = jbp.check_layer(CausalSelfAttention(2, keep=keep, block=4), (6, 8), key=jax.random.key(2), batch=2)
    assert report.ok, str(report)


def test_the_two_modes_agree_and_match_a_direct_formula():
    probs, lse = CausalSelfAttention(2), CausalSelfAttention(2, keep="lse", block=2)
    params, x, dy = point(probs, (5, 4), batch=2)
    y, residuals = probs.forward(params, x)
    y_lse, residuals_lse = lse.forward(params, x)
    Q, K, V = (attention_module.split_heads(a, 2) for a in (x @ params.query.W.T + params.query.b,
                                                            x @ params.key.T, x @ params.value.W.T + params.value.b))
    S = jnp.einsum("bhid,bhjd->bhij", Q, K) / np.sqrt(2) + jnp.triu(jnp.full((5, 5), -jnp.inf), 1)
    O = attention_module.merge_heads(jax.nn.softmax(S, axis=-1) @ V)
    chex.assert_trees_all_close(y, O @ params.out.W.T + params.out.b, rtol=1e-12)
    chex.assert_trees_all_close(y_lse, y, rtol=1e-12)
    chex.assert_trees_all_close(lse.backward(params, residuals_lse, dy), probs.backward(params, residuals, dy),
                                rtol=1e-11)
    # the lse mode keeps no (T, T) array
    assert all(a.shape[-1] != 5 or a.ndim < 4 or a.shape[-2] != 5 for a in jax.tree.leaves(residuals_lse))


def test_the_future_does_not_reach_the_past():
    layer = CausalSelfAttention(2, keep="lse", block=2)
    params, x, _ = point(layer, (6, 4), batch=1)
    y, _ = layer.forward(params, x)
    later = x.copy()
    later[:, 4:] = 100.0
    y2, _ = layer.forward(params, later)
    chex.assert_trees_all_close(y[:, :4], y2[:, :4], rtol=1e-12)


def test_init_is_four_dense_layers():
    params, shape = CausalSelfAttention(2).init(jax.random.key(0), (5, 6), jnp.float32)
    assert shape == (5, 6) and isinstance(params, AttentionParams)
    assert all(p.W.shape == (6, 6) and p.b.shape == (6,) for p in (params.query, params.value, params.out))
    assert params.key.shape == (6, 6)  # no key bias: the softmax cancels it


@pytest.mark.parametrize("call, error, match", [
    (lambda: CausalSelfAttention(0), ValueError, "CausalSelfAttention's heads must be >= 1, got 0"),
    (lambda: CausalSelfAttention(2, keep="all"), ValueError, "unknown CausalSelfAttention's keep 'all'; expected one of probs, lse"),
    (lambda: CausalSelfAttention(3).init(jax.random.key(0), (5, 8), jnp.float32), ValueError,
     r"CausalSelfAttention's heads=3 must divide the features, got input_shape \(5, 8\) \(8 features\)"),
    (lambda: CausalSelfAttention(2).init(jax.random.key(0), (8,), jnp.float32), ValueError,
     r"CausalSelfAttention.init's input_shape must be \(T, features\)"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
