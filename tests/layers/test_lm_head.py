"""FusedLMHead: the cross-entropy and its gradient from the head's input, chunk by chunk,
against autodiff of the plain logits' cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import FusedLMHead
from jbp.model.losses import IGNORE, get_loss
from helpers import rel_errors
from layer_cases import RTOL64


def _point(batch, T, D, V, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = jbp.Layer(W=np.asarray(rng.normal(size=(V, D)), dtype), b=np.asarray(rng.normal(size=V), dtype))
    x = np.asarray(rng.normal(size=(batch, T, D)), dtype)
    y = rng.integers(0, V, (batch, T))
    y[0, T // 2:] = IGNORE  # padding
    return params, x, y


def _reference(params, x, y):
    """Autodiff of the cross-entropy of the full logits (the loss module's value)."""
    def loss(params, x):
        z = x @ params.W.T + params.b
        return get_loss("cross_entropy").value(z, jax.nn.softmax(z), jnp.asarray(y))
    return jax.value_and_grad(loss, argnums=(0, 1))(params, x)


@pytest.mark.parametrize("chunk", [1, 5, 64])  # one row, a chunk that does not divide 3*7, one chunk
def test_fused_loss_and_gradient_match_autodiff_float64(chunk):
    head = FusedLMHead(11, chunk=chunk)
    params, x, y = _point(3, 7, 4, 11, np.float64)
    loss, residuals = head.fused_loss(params, x, y)
    grads, dx = head.fused_loss_backward(params, residuals)
    want_loss, (want_grads, want_dx) = _reference(params, x, y)
    assert abs(float(loss) - float(want_loss)) <= RTOL64 * abs(float(want_loss))
    assert max(rel_errors((grads, dx), (want_grads, want_dx))) <= RTOL64


def test_fused_gradient_float32_within_rounding():
    head = FusedLMHead(13, chunk=4)
    params, x, y = _point(2, 6, 5, 13, np.float32, seed=1)
    grads = head.fused_loss_backward(params, head.fused_loss(params, x, y)[1])
    with jax.enable_x64(True):
        _, want = _reference(jax.tree.map(lambda a: np.asarray(a, np.float64), params), np.asarray(x, np.float64), y)
    assert max(rel_errors(grads, want)) <= 1e-5


def test_only_one_chunk_of_logits_in_the_compiled_program():
    """The compiled loss and gradient hold no (tokens, vocab) array: temp memory stays far
    below one copy of the logits."""
    head, N, D, V = FusedLMHead(4096, chunk=64), 2048, 16, 4096
    params = jbp.Layer(W=jnp.zeros((V, D), jnp.float32), b=jnp.zeros(V, jnp.float32))
    x, y = jnp.zeros((1, N, D), jnp.float32), jnp.zeros((1, N), jnp.int32)
    step = lambda p, x, y: head.fused_loss_backward(p, head.fused_loss(p, x, y)[1])
    temp = jax.jit(step).lower(params, x, y).compile().memory_analysis().temp_size_in_bytes
    logits = N * V * 4
    assert temp < logits / 8, (temp, logits)


def test_as_a_layer_it_is_dense_over_the_last_axis():
    report = jbp.check_layer(FusedLMHead(7), (5, 4), key=jax.random.key(0), batch=2)
    assert report.ok, str(report)


@pytest.mark.parametrize("call, error, match", [
    (lambda: FusedLMHead(0), ValueError, "FusedLMHead's vocab must be >= 1, got 0"),
    (lambda: FusedLMHead(5, chunk=0), ValueError, "FusedLMHead's chunk must be >= 1, got 0"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
