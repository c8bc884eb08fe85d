"""The backward pass (BP3-BP6): the chain rule, layer by layer, from the output down.

With ``delta^(l) = dL/dz^(l)`` (``(batch, n_l)``, one row per example) the seed's
equations read, for a batch whose loss is a sum over rows:

- BP3 ``dL/dx^(l-1) = delta^(l) @ W^(l)``           (:func:`jbp.layers.dense.input_grad`)
- BP4 ``delta^(l-1) = dL/dx^(l-1) · f'(z^(l-1))``    (:meth:`jbp.model.activations.Activation.delta`)
- BP5 ``dL/dW^(l) = delta^(l).T @ x^(l-1)``         (:func:`jbp.layers.dense.weight_grad`)
- BP6 ``dL/db^(l) = Σ_batch delta^(l)``             (:func:`jbp.layers.dense.bias_grad`)

BP5 and BP6 sum the per-example products over the batch; the ``1/B`` of a mean loss is
already inside the output delta (see :mod:`jbp.model.losses`). BP3, BP5 and BP6 live
with the dense layer, in :mod:`jbp.layers.dense`; they are imported here, so
``jbp.model.backward_pass.input_grad`` (and ``weight_grad``, ``bias_grad``) still name
them and this module's passes look them up here.
"""

from __future__ import annotations

from typing import Sequence

import jax

from jbp import _validate
from jbp.layers.dense import bias_grad, input_grad, weight_grad  # BP6, BP3, BP5
from jbp.model.activations import Activation, get_activation
from jbp.model.forward_pass import Cache
from jbp.model.params import Layer, Params

Array = jax.Array


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
