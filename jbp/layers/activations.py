"""Activation functions ``f`` (BP2) with their hand-written derivatives ``f'`` (BP4).

Each :class:`Activation` keeps the forward rule and its derivative side by side,
as micrograd does for its ops. The derivative takes both the pre-activation ``z``
and the stored activation ``x = f(z)`` so that it can use whichever is cheaper
and more accurate (``sigmoid' = x (1 - x)``, ``tanh' = 1 - x**2`` need no new
exponential).

Softmax is not elementwise: its Jacobian is ``diag(x) - x x^T``, so BP4 becomes a
Jacobian-vector product, ``dL/dz = x * (dL/dx - <dL/dx, x>)``, done row by row (in a
form that stays accurate where the softmax saturates; see :func:`_softmax_jacobian_product`).

Each derivative reads ``z`` or ``x``, not both (:attr:`Activation.reads`): an activation
layer (:mod:`jbp.layers.activation`) keeps only that one for its backward.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp


Array = jax.Array

LEAKY_RELU_SLOPE = 0.01
ELU_ALPHA = 1.0


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation ``x = f(z)`` and its derivative.

    Attributes:
      name: the name used by :class:`jbp.MLP` (``"tanh"``, ``"softmax"``, ...).
      f: BP2, ``z -> x``; ``z`` is ``(batch, n)``.
      df: ``(z, x) -> f'(z)``, elementwise, same shape as ``z``. ``None`` for
        activations whose Jacobian is not diagonal (softmax).
      jacobian_product: for non-elementwise activations, ``(z, x, dL_dx) -> dL_dz``, the
        product of ``dL/dx`` with the Jacobian ``dx/dz``.
      reads: which of ``z`` and ``x`` the derivative reads: ``"z"``, ``"x"``, or
        ``"zx"`` (both; the default for activations made elsewhere). The one it does not
        read may be passed as ``None``.
    """

    name: str
    f: Callable[[Array], Array]
    df: Optional[Callable[[Array, Array], Array]] = None
    jacobian_product: Optional[Callable[[Array, Array, Array], Array]] = None
    reads: str = "zx"

    @property
    def elementwise(self) -> bool:
        return self.df is not None

    def delta(self, z: Array, x: Array, dL_dx: Array) -> Array:
        """BP4: ``dL/dz = dL/dx · f'(z)`` (a Jacobian-vector product for softmax).

        Args:
          z: pre-activations ``(batch, n)``.
          x: activations ``f(z)``, ``(batch, n)``.
          dL_dx: gradient of the loss w.r.t. ``x``, ``(batch, n)``.

        Returns:
          ``dL/dz``, ``(batch, n)``.
        """
        if self.df is not None:
            return dL_dx * self.df(z, x)  # BP4: dL/dz = dL/dx * f'(z)
        return self.jacobian_product(z, x, dL_dx)


def _identity(z):
    return z


def _identity_prime(z, x):
    return jnp.ones_like(x)


def _sigmoid_prime(z, x):
    return x * (1 - x)


def _tanh_prime(z, x):
    return 1 - x * x


def _relu_prime(z, x):
    # x = max(z, 0) > 0 exactly where z > 0. The derivative at exactly 0 is taken as 0,
    # as jax.nn.relu's own rule does.
    return (x > 0).astype(x.dtype)


def _leaky_relu(z):
    return jnp.where(z >= 0, z, LEAKY_RELU_SLOPE * z)


def _leaky_relu_prime(z, x):
    # x has the sign of z.
    return jnp.where(x >= 0, 1, LEAKY_RELU_SLOPE).astype(x.dtype)


def _elu(z):
    # expm1 only of the non-positive part, so that large z never makes inf.
    z_neg = jnp.where(z > 0, 0, z)
    return jnp.where(z > 0, z, ELU_ALPHA * jnp.expm1(z_neg))


def _elu_prime(z, x):
    # x > 0 exactly where z > 0; for z <= 0, f'(z) = alpha * exp(z) = f(z) + alpha.
    return jnp.where(x > 0, 1, x + ELU_ALPHA).astype(x.dtype)


def _softplus(z):
    return jnp.logaddexp(z, 0)


def _softplus_prime(z, x):
    return jax.nn.sigmoid(z)


_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _normal_cdf(z):
    # erfc keeps Phi(z) accurate in the far left tail, where 1 + erf underflows.
    return 0.5 * jax.lax.erfc(-z * _SQRT_HALF)


def _gelu(z):
    """Exact GELU, ``z Φ(z)`` with the normal CDF (not the tanh approximation)."""
    return z * _normal_cdf(z)


def _gelu_prime(z, x):
    # d/dz [z Φ(z)] = Φ(z) + z φ(z)
    return _normal_cdf(z) + z * _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)


def _softmax(z):
    e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _softmax_jacobian_product(z, x, dL_dx):
    """``(diag(x) - x x^T) dL/dx`` row by row: ``x_i (g_i - <g, x>)`` with ``g = dL/dx``.

    Written as ``x_i ((g_i - g_m) - Σ_j x_j (g_j - g_m))`` with ``m`` the row's largest
    ``x``: the same value, since ``Σ_j x_j = 1``, but stable where the softmax
    saturates. There ``<g, x> ≈ g_m`` and the textbook form subtracts two nearly equal
    numbers: ``g_m - <g, x> = Σ_{j≠m} x_j (g_m - g_j)`` is of the order of ``1 - x_m``,
    while the rounding of ``<g, x>`` is of the order of ``u |g_m|`` (``u`` the unit
    roundoff), so float32 lost ``u / (1 - x_m)`` relative precision (1e-3 at ``1 - x_m ≈
    1e-4``). Shifted by ``g_m``, the ``m``-th term vanishes exactly and every other term
    is a small ``x_j`` times an ordinary difference: no cancellation is left beyond the
    problem's own. Any ``m`` gives the same value; ties pick the first.

    Then ``r = g - <g, x>`` is centred once more, ``r - Σ_j x_j r_j``: zero in exact
    arithmetic, but in floating point ``Σ_j x_j`` is not exactly 1, and the second
    centring makes each row of ``dL/dz`` sum to zero to rounding, as softmax's
    invariance to adding a constant to ``z`` requires. A bias gradient sums these rows
    over the batch, where they largely cancel, and would amplify a row-wise offset.
    """
    m = jnp.argmax(x, axis=-1, keepdims=True)
    d = dL_dx - jnp.take_along_axis(dL_dx, m, axis=-1)  # g_j - g_m; zero at j = m
    r = d - jnp.sum(x * d, axis=-1, keepdims=True)  # g - <g, x>
    return x * (r - jnp.sum(x * r, axis=-1, keepdims=True))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, _identity_prime, reads="x"),
        Activation("sigmoid", jax.nn.sigmoid, _sigmoid_prime, reads="x"),
        Activation("tanh", jnp.tanh, _tanh_prime, reads="x"),
        Activation("relu", jax.nn.relu, _relu_prime, reads="x"),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_prime, reads="x"),
        Activation("elu", _elu, _elu_prime, reads="x"),
        Activation("softplus", _softplus, _softplus_prime, reads="z"),
        Activation("gelu", _gelu, _gelu_prime, reads="z"),
        Activation("softmax", _softmax, jacobian_product=_softmax_jacobian_product, reads="x"),
    )
}

#: Activations allowed in hidden layers (softmax only makes sense at the output).
HIDDEN_ACTIVATIONS = tuple(n for n in ACTIVATIONS if n != "softmax")


def get_activation(name: str | Activation) -> Activation:
    """Returns the :class:`Activation` called ``name`` (an Activation passes through)."""
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name (str), got {type(name).__name__} {name!r}")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
