"""The dense layer: the seed's BP1, BP3, BP5 and BP6, each in one function.

Batch convention: data is ``(batch, features)``, so ``z = x @ W.T + b`` is the seed's
``z_j = Σ_i w_ji x_i + b_j`` for every row, and BP5/BP6 sum the per-example products
over the batch (a mean loss puts its ``1/B`` into the output delta).

:class:`Dense` is the layer; :func:`dense`, :func:`input_grad`, :func:`weight_grad` and
:func:`bias_grad` are the equations it is made of, also used by :class:`jbp.MLP`'s
forward and backward pass (:mod:`jbp.model.forward_pass`, :mod:`jbp.model.backward_pass`).
:func:`weight_grad_sq_norms` and :func:`bias_grad_sq_norms` are BP5 and BP6 of each
example alone, squared, for per-example clipping (:mod:`jbp.model.per_example`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.layers import args
from jbp.layers.activations import ACTIVATIONS, get_activation
from jbp.layers.initializers import INITIALIZERS, init_weight
from jbp.layers.params import Layer

Array = jax.Array


def dense(layer: Layer, x: Array) -> Array:
    """BP1: ``z_j = Σ_i w_ji x_i + b_j``, i.e. ``z = x @ W.T + b`` for a batch.

    Args:
      layer: ``W`` ``(n_out, n_in)`` and ``b`` ``(n_out,)``.
      x: ``(batch, n_in)``.

    Returns:
      ``z``, ``(batch, n_out)``.
    """
    return x @ layer.W.T + layer.b


def input_grad(delta: Array, W: Array) -> Array:
    """BP3: ``dL/dx_i^(l-1) = Σ_k dL/dz_k^(l) w_ki^(l)``, i.e. ``delta @ W``.

    Args:
      delta: ``dL/dz^(l)``, ``(batch, n_out)``.
      W: ``W^(l)``, ``(n_out, n_in)``.

    Returns:
      ``dL/dx^(l-1)``, ``(batch, n_in)``.
    """
    return delta @ W


#: Largest ``dW`` (``n_out · n_in`` entries) that BP5 computes from ``delta.T`` on CPU.
#: Measured as whole training steps (docs/performance.md): faster for the small
#: network's 128 x 64, slower for the residual MLP's 256 x 256 and the medium network's
#: 512 x 512 and 512 x 784.
CPU_TRANSPOSED_BP5_MAX_SIZE = 2**14


def weight_grad(delta: Array, x_prev: Array) -> Array:
    """BP5: ``dL/dw_ji = dL/dz_j · x_i``, summed over the batch: ``delta.T @ x_prev``.

    The product sums over the batch, the first axis of both operands. XLA's CPU
    backend hands a product contracted over its left operand's first axis to a
    generic matrix multiply (Eigen), whose fixed cost dominates small layers. With
    ``delta.T`` written out first, the same sum is the row-major ``(n_out, batch) @
    (batch, n_in)`` that its other library (YNNPACK) takes: on the benchmark's machine
    5-10% off the whole training step of its tiny and small networks, but 3-4% slower
    on the medium one's (512 x 512 and 512 x 784 weights) and 25% on the residual MLP's
    (256 x 256), hence the size limit
    :data:`CPU_TRANSPOSED_BP5_MAX_SIZE`. GPU and TPU libraries take either layout,
    where the transpose would only add a kernel, so only the CPU lowering uses it.

    Args:
      delta: ``dL/dz^(l)``, ``(batch, n_out)``.
      x_prev: ``x^(l-1)``, ``(batch, n_in)``.

    Returns:
      ``dL/dW^(l)``, ``(n_out, n_in)``, the shape of ``W``.
    """
    if delta.shape[1] * x_prev.shape[1] > CPU_TRANSPOSED_BP5_MAX_SIZE:
        return delta.T @ x_prev
    return jax.lax.platform_dependent(
        delta,
        x_prev,
        # The barrier keeps XLA from folding the transpose back into the product.
        cpu=lambda delta, x_prev: jax.lax.optimization_barrier(delta.T) @ x_prev,
        default=lambda delta, x_prev: delta.T @ x_prev,
    )


def bias_grad(delta: Array) -> Array:
    """BP6: ``dL/db_j = dL/dz_j``, summed over the batch.

    Args:
      delta: ``dL/dz^(l)``, ``(batch, n_out)``.

    Returns:
      ``dL/db^(l)``, ``(n_out,)``.
    """
    return delta.sum(axis=0)


def weight_grad_sq_norms(delta: Array, x_prev: Array) -> Array:
    """BP5 per example, squared: ``‖dL_i/dW‖² = ‖delta_i‖² ‖x_i‖²``.

    Example ``i``'s BP5 is the outer product ``delta_i x_iᵀ``, whose Frobenius norm is
    the product of the two vectors' norms (Goodfellow 2015).

    Args:
      delta: ``dL_i/dz^(l)`` of each example's own loss, ``(B, n_out)``.
      x_prev: ``x^(l-1)``, ``(B, n_in)``.

    Returns:
      ``(B,)``: the squared norm of each example's ``dL_i/dW^(l)``.
    """
    return jnp.sum(delta**2, axis=1) * jnp.sum(x_prev**2, axis=1)


def bias_grad_sq_norms(delta: Array) -> Array:
    """BP6 per example, squared: ``‖dL_i/db‖² = ‖delta_i‖²``.

    Args:
      delta: ``dL_i/dz^(l)`` of each example's own loss, ``(B, n_out)``.

    Returns:
      ``(B,)``: the squared norm of each example's ``dL_i/db^(l)``.
    """
    return jnp.sum(delta**2, axis=1)


@dataclasses.dataclass(frozen=True, init=False)
class Dense:
    """A dense layer, ``z = x @ W.T + b``: the seed's layer without its activation.

    Forward (BP1), with ``x`` ``(batch, n_in)``, or a sequence ``(batch, T, n_in)`` (any
    leading axes: the layer applies to the last one, at every position)::

        z = x @ W.T + b                      z_j = Σ_i w_ji x_i + b_j

    Backward, from ``delta = dL/dz`` ``(batch, features)`` (the ``dy`` of the protocol):
    the chain rule through ``z_j = Σ_i w_ji x_i + b_j`` gives ``∂z_j/∂x_i = w_ji``,
    ``∂z_j/∂w_ji = x_i`` and ``∂z_j/∂b_j = 1``, so, summed over the rows of the batch::

        dx = delta @ W                       BP3  dL/dx_i  = Σ_j dL/dz_j w_ji
        dW = delta.T @ x                     BP5  dL/dw_ji = Σ_batch dL/dz_j x_i
        db = delta.sum(0)                    BP6  dL/db_j  = Σ_batch dL/dz_j

    For a sequence ``W`` and ``b`` are shared by every position, so BP5 and BP6 sum over
    the batch *and* the positions: the backward flattens the leading axes into one of
    ``batch · T`` rows and applies the same equations.

    Residuals: ``x`` (for BP5). Params: ``jbp.Layer(W, b)``, ``W`` ``(features, n_in)``
    (the seed's ``w_ji``), ``b`` ``(features,)``.

    Args:
      features: ``n_out``, the number of outputs.
      init: the weight initialisation scheme (see :mod:`jbp.layers.initializers`; biases
        start at zero). Stored as :attr:`init_name`, since :meth:`init` is the method.
    """

    features: int
    init_name: str

    #: The field of the params that BP3 multiplies by: what a learning rule replaces.
    weights = "W"

    #: Whether the forward pass draws from its key in training mode.
    stochastic = False

    def __init__(self, features: int, init: str = "glorot_uniform"):
        object.__setattr__(self, "features", _validate.positive_int("Dense's features", features))
        object.__setattr__(self, "init_name", _validate.name("Dense's init", init, tuple(INITIALIZERS)))

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[Layer, tuple]:
        """``(Layer(W, b), (..., features))`` for inputs ``(batch, ..., n_in)``;
        ``input_shape = (n_in,)`` or ``(T, n_in)``."""
        key, shape, dtype = args.init_args(self, key, input_shape, dtype, None, "(n_in,) or (T, n_in), the features last")
        W = init_weight(self.init_name, key, shape[-1], self.features, dtype)
        return Layer(W=W, b=jnp.zeros((self.features,), dtype)), (*shape[:-1], self.features)

    def forward(self, params: Layer, x: Array, *, key=None, train: bool = False) -> tuple[Array, Array]:
        """``(z, x)``: BP1, keeping the input for BP5."""
        return dense(params, x), x

    def backward(self, params: Layer, x: Array, dy: Array) -> tuple[Layer, Array]:
        """``(Layer(dW, db), dx)`` from ``dy = delta = dL/dz``: BP5, BP6 and BP3 (BP5 and
        BP6 summed over the rows of every leading axis)."""
        delta, x_rows = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
        return Layer(W=weight_grad(delta, x_rows), b=bias_grad(delta)), input_grad(dy, params.W)

    def per_example_sq_norms(self, params: Layer, x: Array, dy: Array) -> Array:
        """``‖dW_i‖² + ‖db_i‖² = ‖delta_i‖² (‖x_i‖² + 1)`` per example, ``(B,)``: BP5 and BP6
        of row ``i`` alone, by the outer-product identity, never forming ``dW_i``.

        For a sequence, example ``i``'s ``dW_i = Σ_t delta_it x_itᵀ`` is a sum of outer
        products, whose squared norm is ``Σ_{t,s} (delta_it · delta_is)(x_it · x_is)``
        (the ghost norm, ``O(T²)`` per example), and ``db_i = Σ_t delta_it``."""
        return sq_norms(dy, x)

    def weight_grad_operands(self, params: Layer, x: Array, dy: Array) -> tuple[Array, Array]:
        """BP5's two operands, ``(x, delta)`` as ``(B, T, n_in)`` and ``(B, T, n_out)``:
        ``dW = Σ_b Σ_t delta_btᵀ x_bt`` (``T = 1`` for ``(batch, features)``, the positions
        of a sequence otherwise; what K-FAC's factors read, :mod:`jbp.curvature`)."""
        return x.reshape(x.shape[0], -1, x.shape[-1]), dy.reshape(dy.shape[0], -1, dy.shape[-1])


class PerceptronResiduals(NamedTuple):
    """What :class:`Perceptron`'s forward keeps: the seed's ``x^(l-1)``, ``z^(l)`` and ``x^(l)``."""

    x_prev: Array  # (batch, n_in), for BP5
    z: Array  # (batch, n_out), for BP4
    x: Array  # (batch, n_out), for BP4


@dataclasses.dataclass(frozen=True, init=False)
class Perceptron:
    """The seed's layer ``l``: a dense layer and its activation, ``x = f(W x_prev + b)``.

    Forward, BP1 then BP2::

        z = x_prev @ W.T + b                 BP1
        x = f(z)                             BP2

    Backward from ``dy = dL/dx``, BP4 then the dense layer's BP5, BP6 and BP3::

        delta = dy · f'(z)                   BP4  dL/dz_j  = dL/dx_j f'(z_j)
        dW = delta.T @ x_prev                BP5
        db = delta.sum(0)                    BP6
        dx_prev = delta @ W                  BP3

    It is :class:`Dense` followed by :class:`jbp.layers.ActivationLayer`, as one layer whose
    parameters are one :class:`jbp.Layer`: :class:`jbp.MLP` is a chain of them.

    Args:
      features: ``n_out``.
      activation: one of :data:`jbp.ACTIVATIONS` (softmax too: it is the output layer's
        when :func:`jbp.forward` runs the seed's layers with it).
      init: the weight initialisation scheme, as :class:`Dense`'s. Stored as :attr:`init_name`.
    """

    features: int
    activation: str
    init_name: str

    #: The field of the params that BP3 multiplies by: what a learning rule replaces.
    weights = "W"

    #: Whether the forward pass draws from its key in training mode.
    stochastic = False

    def __init__(self, features: int, activation: str, init: str = "glorot_uniform"):
        object.__setattr__(self, "features", _validate.positive_int("Perceptron's features", features))
        object.__setattr__(self, "activation", _validate.name("Perceptron's activation", activation,
                                                              tuple(ACTIVATIONS)))
        object.__setattr__(self, "init_name", _validate.name("Perceptron's init", init, tuple(INITIALIZERS)))

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[Layer, tuple]:
        """``(Layer(W, b), (features,))``, drawn as :class:`Dense` draws them."""
        return Dense(self.features, self.init_name).init(key, input_shape, dtype)

    def forward(self, params: Layer, x: Array, *, key=None, train: bool = False):
        """``(x^(l), residuals)``: BP1, BP2."""
        z = dense(params, x)  # BP1
        out = get_activation(self.activation).f(z)  # BP2: x = f(z)
        return out, PerceptronResiduals(x, z, out)

    def delta(self, r: PerceptronResiduals, dy: Array) -> Array:
        """BP4: ``delta = dL/dz = dy · f'(z)``."""
        return get_activation(self.activation).delta(r.z, r.x, dy)  # BP4

    def backward(self, params: Layer, r: PerceptronResiduals, dy: Array) -> tuple[Layer, Array]:
        """``(Layer(dW, db), dx_prev)``: BP4, then BP5, BP6 and BP3."""
        delta = self.delta(r, dy)  # BP4
        return Layer(W=weight_grad(delta, r.x_prev), b=bias_grad(delta)), input_grad(delta, params.W)

    def per_example_sq_norms(self, params: Layer, r: PerceptronResiduals, dy: Array) -> Array:
        """``‖delta_i‖² (‖x_prev_i‖² + 1)`` per example, as :meth:`Dense.per_example_sq_norms`."""
        delta = self.delta(r, dy)  # BP4
        return sq_norms(delta, r.x_prev)

    def weight_grad_operands(self, params: Layer, r: PerceptronResiduals, dy: Array) -> tuple[Array, Array]:
        """BP5's two operands, ``(x_prev, delta)`` as ``(B, 1, n_in)`` and ``(B, 1, n_out)``,
        ``delta`` by BP4 from ``dy = dL/dx``, as :meth:`Dense.weight_grad_operands`."""
        return r.x_prev[:, None, :], self.delta(r, dy)[:, None, :]  # BP4


def sq_norms(delta: Array, x_prev: Array) -> Array:
    """``‖dW_i‖² + ‖db_i‖²`` per example, ``(B,)``, for a dense layer's delta and input:
    by the outer-product identity for ``(batch, features)``, by the ghost norm for a
    sequence ``(batch, ..., features)`` (see :meth:`Dense.per_example_sq_norms`)."""
    if delta.ndim == 2:
        return weight_grad_sq_norms(delta, x_prev) + bias_grad_sq_norms(delta)
    delta = delta.reshape(delta.shape[0], -1, delta.shape[-1])
    x_rows = x_prev.reshape(x_prev.shape[0], -1, x_prev.shape[-1])
    gram = lambda a: jnp.einsum("bti,bsi->bts", a, a)
    db = jnp.sum(delta, axis=1)
    return jnp.sum(gram(delta) * gram(x_rows), axis=(1, 2)) + jnp.sum(db * db, axis=1)
