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
