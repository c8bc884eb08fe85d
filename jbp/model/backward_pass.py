"""The backward pass (BP3-BP6): the chain rule, layer by layer, from the output down.

With ``delta^(l) = dL/dz^(l)`` (``(batch, n_l)``, one row per example) the seed's
equations read, for a batch whose loss is a sum over rows:

- BP3 ``dL/dx^(l-1) = delta^(l) @ W^(l)``           (:func:`input_grad`)
- BP4 ``delta^(l-1) = dL/dx^(l-1) · f'(z^(l-1))``    (:meth:`jbp.model.activations.Activation.delta`)
- BP5 ``dL/dW^(l) = delta^(l).T @ x^(l-1)``         (:func:`weight_grad`)
- BP6 ``dL/db^(l) = Σ_batch delta^(l)``             (:func:`bias_grad`)

BP5 and BP6 sum the per-example products over the batch; the ``1/B`` of a mean loss is
already inside the output delta (see :mod:`jbp.model.losses`).
"""

from __future__ import annotations

from typing import Sequence

import jax

from jbp import _validate
from jbp.model.activations import Activation, get_activation
from jbp.model.forward_pass import Cache
from jbp.model.params import Layer, Params

Array = jax.Array


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
#: Measured on the benchmark's machine (README, "Performance"): faster up to 1M
#: entries, slower from 4M (2048 x 2048) on.
CPU_TRANSPOSED_BP5_MAX_SIZE = 2**21


def weight_grad(delta: Array, x_prev: Array) -> Array:
    """BP5: ``dL/dw_ji = dL/dz_j · x_i``, summed over the batch: ``delta.T @ x_prev``.

    The product sums over the batch, the first axis of both operands. XLA's CPU
    backend hands a product contracted over its left operand's first axis to a
    generic matrix multiply (Eigen), whose fixed cost dominates small layers. With
    ``delta.T`` written out first, the same sum is the row-major ``(n_out, batch) @
    (batch, n_in)`` that its other library (YNNPACK) takes: on the benchmark's machine
    5-10% off the whole training step of its tiny to medium networks, but 5-15% slower
    per product from 2048 x 2048 weights on, hence the size limit
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


def deltas(
    params: Params, cache: Cache, delta_out: Array, activations: Sequence[str | Activation]
) -> tuple:
    """Every layer's ``delta^(l) = dL/dz^(l)``, by BP3 then BP4 from the output down.

    Args:
      params: one :class:`Layer` per layer.
      cache: the :class:`Cache` from :func:`jbp.forward`.
      delta_out: ``dL/dz^(L)`` of the output layer, ``(batch, n_L)`` (see
        :meth:`jbp.MLP.output_delta`).
      activations: one activation per layer, as given to :func:`jbp.forward`.

    Returns:
      ``(delta^(1), ..., delta^(L))``.
    """
    cache, delta_out = _validate.backward_inputs(params, cache, delta_out, activations)
    return _deltas(params, cache, delta_out, activations)


def _deltas(params, cache, delta_out, activations) -> tuple:
    """:func:`deltas` on arguments already checked."""
    ds = [delta_out]
    for l in range(len(params) - 1, 0, -1):
        dL_dx = input_grad(ds[-1], params[l].W)  # BP3
        activation = get_activation(activations[l - 1])
        ds.append(activation.delta(cache.zs[l - 1], cache.xs[l], dL_dx))  # BP4
    return tuple(reversed(ds))


def backward(
    params: Params, cache: Cache, delta_out: Array, activations: Sequence[str | Activation]
) -> Params:
    """The seed's backward pass: ``dL/dW`` and ``dL/db`` of every layer.

    Args:
      params: one :class:`Layer` per layer.
      cache: the :class:`Cache` from :func:`jbp.forward`.
      delta_out: ``dL/dz^(L)`` of the output layer, ``(batch, n_L)``.
      activations: one activation per layer, as given to :func:`jbp.forward`.

    Returns:
      Gradients with exactly the structure, shapes and dtypes of ``params``.
    """
    cache, delta_out = _validate.backward_inputs(params, cache, delta_out, activations)
    return backward_unchecked(params, cache, delta_out, activations)


def backward_unchecked(params, cache, delta_out, activations) -> Params:
    """:func:`backward` on arguments already checked (by it, or by :class:`jbp.MLP`)."""
    return tuple(
        Layer(W=weight_grad(delta, x_prev), b=bias_grad(delta))  # BP5, BP6
        for delta, x_prev in zip(_deltas(params, cache, delta_out, activations), cache.xs)
    )
