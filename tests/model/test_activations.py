"""Each activation's hand-written derivative (BP4) against jax.grad of its forward rule (BP2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.model.activations import get_activation

ELEMENTWISE = [a for a in jbp.ACTIVATIONS if a != "softmax"]
Z = np.array([[-30.0, -3.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 30.0]])


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_autodiff(name):
    act = get_activation(name)
    z = jnp.asarray(Z)
    x = act.f(z)
    want = jax.vmap(jax.vmap(jax.grad(act.f)))(z)
    np.testing.assert_allclose(act.df(z, x), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_delta_is_dL_dx_times_derivative(name):
    act = get_activation(name)
    z = jnp.asarray(Z)
    dx = jnp.linspace(-2.0, 2.0, Z.size).reshape(Z.shape)
    np.testing.assert_allclose(act.delta(z, act.f(z), dx), dx * act.df(z, act.f(z)), rtol=1e-15)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("scale", [1e3, -1e3])
def test_saturating_inputs_stay_finite(name, scale):
    act = get_activation(name)
    z = jnp.full((1, 3), scale)
    x = act.f(z)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(act.df(z, x)))


def test_softmax_delta_is_the_jacobian_vector_product():
    act = get_activation("softmax")
    z = jnp.asarray([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0]])
    dx = jnp.asarray([[0.3, -1.0, 2.0, 0.1], [1.0, 2.0, 3.0, 4.0]])
    _, vjp = jax.vjp(act.f, z)
    np.testing.assert_allclose(act.delta(z, act.f(z), dx), vjp(dx)[0], rtol=1e-12, atol=1e-15)


def test_softmax_is_stable_at_extreme_logits():
    x = get_activation("softmax").f(jnp.asarray([[1e4, -1e4, 0.0]]))
    np.testing.assert_allclose(x, [[1.0, 0.0, 0.0]])


def test_named_values():
    """Spot values that pin down the conventions (slope, alpha, the exact GELU)."""
    z = jnp.asarray([[-1.0, 0.0, 2.0]])
    np.testing.assert_allclose(get_activation("leaky_relu").f(z), [[-0.01, 0.0, 2.0]])
    np.testing.assert_allclose(get_activation("elu").f(z), [[np.expm1(-1.0), 0.0, 2.0]])
    # exact GELU: z * Phi(z); Phi(-1) = 0.15865525393145707
    np.testing.assert_allclose(get_activation("gelu").f(z)[0, 0], -0.15865525393145707, rtol=1e-14)
    np.testing.assert_allclose(get_activation("relu").df(z, z), [[0.0, 0.0, 1.0]])


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of identity, sigmoid"):
        get_activation("swish")
    with pytest.raises(TypeError, match="activation must be a name"):
        get_activation(3)


def _saturating_softmax_point():
    """Logits with a margin of 8-14 on one class per row (1 - p_max from 1e-3 to 1e-6;
    nothing underflows float32) and a cotangent g, in float32."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 10))
    z[np.arange(64), rng.integers(0, 10, 64)] += rng.uniform(8, 14, 64)
    return z.astype(np.float32), rng.normal(size=(64, 10)).astype(np.float32)


def _textbook_softmax_product(x, g):
    return x * (g - jnp.sum(g * x, axis=-1, keepdims=True))


def _softmax_product_float64(x, g):
    """``x_i Σ_j x_j (g_i - g_j)``: the Jacobian product with no cancellation (uses
    ``Σ_j x_j = 1``), in float64, as the reference."""
    return x * np.sum(x[:, None, :] * (g[:, :, None] - g[:, None, :]), axis=-1)


def test_softmax_delta_keeps_float32_precision_where_softmax_saturates():
    """The textbook x (g - <g, x>) loses u / (1 - p_max) there; the shifted form does not."""
    z32, g32 = _saturating_softmax_point()
    act = get_activation("softmax")
    x32 = act.f(jnp.asarray(z32))
    want = _softmax_product_float64(np.asarray(act.f(jnp.asarray(z32, np.float64))), g32.astype(np.float64))
    rel = lambda got: np.max(np.abs(np.asarray(got, np.float64) - want), axis=1) / np.max(np.abs(want), axis=1)
    assert rel(_textbook_softmax_product(x32, g32)).max() > 1e-3  # the loss of precision the fix is for
    assert rel(act.delta(jnp.asarray(z32), x32, jnp.asarray(g32))).max() <= 1e-5


def test_softmax_delta_rows_sum_to_zero_where_softmax_saturates():
    """Softmax ignores a constant added to z, so each row of dL/dz sums to zero."""
    z32, g32 = _saturating_softmax_point()
    act = get_activation("softmax")
    x32 = act.f(jnp.asarray(z32))
    row_sums = lambda d: np.max(np.abs(np.sum(np.asarray(d, np.float64), axis=1)) / np.max(np.abs(np.asarray(d, np.float64)), axis=1))
    assert row_sums(_textbook_softmax_product(x32, g32)) > 1e-3
    assert row_sums(act.delta(jnp.asarray(z32), x32, jnp.asarray(g32))) <= 1e-6
