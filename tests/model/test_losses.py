"""Loss values and the output delta (the start of the backward pass) against jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jbp.model.activations import get_activation
from jbp.model.losses import get_loss


def _delta_vs_autodiff(loss_name, act_name, z, y):
    loss, act = get_loss(loss_name), get_activation(act_name)
    value = lambda z: loss.value(z, act.f(z), y)
    return loss.delta(act, z, act.f(z), y), jax.grad(value)(z)


@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "softmax"])
def test_mse_value_and_delta(act):
    z = jnp.asarray([[0.5, -1.0], [2.0, 0.1], [-0.3, 0.7]])
    y = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    x = get_activation(act).f(z)
    np.testing.assert_allclose(get_loss("mse").value(z, x, y), 0.5 * np.sum((x - y) ** 2) / 3)
    got, want = _delta_vs_autodiff("mse", act, z, y)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("one_hot", [False, True])
def test_cross_entropy_value_and_fused_delta(one_hot):
    z = jnp.asarray([[2.0, -1.0, 0.3], [0.0, 1.0, 5.0]])
    labels = jnp.asarray([0, 2])
    y = jax.nn.one_hot(labels, 3, dtype=z.dtype) if one_hot else labels
    p = jax.nn.softmax(z)
    want = -np.mean(np.log(p[np.arange(2), labels]))
    np.testing.assert_allclose(get_loss("cross_entropy").value(z, p, y), want, rtol=1e-12)
    got, want = _delta_vs_autodiff("cross_entropy", "softmax", z, y)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got, (p - jax.nn.one_hot(labels, 3)) / 2, rtol=1e-12)


def test_binary_cross_entropy_value_and_fused_delta():
    z = jnp.asarray([[2.0, -1.0], [0.0, 4.0], [-3.0, 0.2]])
    y = jnp.asarray([[1.0, 0.0], [0.3, 1.0], [0.0, 0.9]])
    p = jax.nn.sigmoid(z)
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(get_loss("binary_cross_entropy").value(z, p, y), want, rtol=1e-12)
    got, want = _delta_vs_autodiff("binary_cross_entropy", "sigmoid", z, y)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_heads_are_finite_at_extreme_logits(dtype):
    z = jnp.asarray([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype)
    labels = jnp.asarray([1, 0])
    ce = get_loss("cross_entropy")
    p = jax.nn.softmax(z)
    value, delta = ce.value(z, p, labels), ce.delta(get_activation("softmax"), z, p, labels)
    assert np.isfinite(value) and np.all(np.isfinite(delta))
    # -log p_label: 2e4 for row 0; 2e4 + log 2 for row 1 (two logits tie at the top)
    np.testing.assert_allclose(value, (4e4 + np.log(2)) / 2, rtol=1e-6)
    bce = get_loss("binary_cross_entropy")
    y = jnp.asarray([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype)
    s = jax.nn.sigmoid(z)
    value, delta = bce.value(z, s, y), bce.delta(get_activation("sigmoid"), z, s, y)
    assert np.isfinite(value) and np.all(np.isfinite(delta))
    # softplus(z) - y z: 1e4 for five entries, log 2 for the zero logit
    np.testing.assert_allclose(value, (5e4 + np.log(2)) / 6, rtol=1e-6)


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; expected one of mse, cross_entropy"):
        get_loss("hinge")
