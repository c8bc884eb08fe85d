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

BP3's transport is a parameter: ``feedback`` replaces the matrices ``W^(2..L)`` that it
multiplies by, and ``direct`` makes every hidden layer's BP3 take the output delta.
That is how a learning rule other than backprop (:mod:`jbp.rules`) changes the
backward pass without copying it; the result is then an update direction, not the
gradient.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax

from jbp import _validate
from jbp.layers.dense import bias_grad, input_grad, weight_grad  # BP6, BP3, BP5
from jbp.model.activations import Activation, get_activation
from jbp.model.forward_pass import Cache
from jbp.model.params import Layer, Params

Array = jax.Array


def deltas(
    params: Params,
    cache: Cache,
    delta_out: Array,
    activations: Sequence[str | Activation],
    *,
    feedback: Optional[Sequence[Array]] = None,
    direct: bool = False,
) -> tuple:
    """Every layer's ``delta^(l) = dL/dz^(l)``, by BP3 then BP4 from the output down.

    Args:
      params: one :class:`Layer` per layer.
      cache: the :class:`Cache` from :func:`jbp.forward`.
      delta_out: ``dL/dz^(L)`` of the output layer, ``(batch, n_L)`` (see
        :meth:`jbp.MLP.output_delta`).
      activations: one activation per layer, as given to :func:`jbp.forward`.
      feedback: the matrices BP3 multiplies by in place of ``W^(2), ..., W^(L)``
        (``feedback[k]`` replaces ``params[k + 1].W``); ``None`` (default) uses the
        ``W``'s: backprop. A learning rule's transport (see :mod:`jbp.rules`).
      direct: every hidden layer's BP3 takes the output delta ``delta^(L)`` in place of
        the delta of the layer above (direct feedback alignment); ``feedback[k]`` is
        then ``(n_L, n_(k+1))``.

    Returns:
      ``(delta^(1), ..., delta^(L))``.
    """
    cache, delta_out = _validate.backward_inputs(params, cache, delta_out, activations)
    feedback = _validate_transport(params, feedback, direct)
    return _deltas(params, cache, delta_out, activations, feedback, direct)


def transport(delta: Array, W: Array, B: Optional[Array] = None, delta_out: Optional[Array] = None) -> Array:
    """BP3 under a learning rule: ``dL/dx^(l-1)`` as the rule carries it down from layer ``l``.

    ``delta @ W`` (backprop), ``delta @ B`` (``B`` in place of ``W``: feedback
    alignment, sign symmetry), or ``delta_out @ B`` (direct: the output delta, as direct
    feedback alignment sends it). The one place where a rule changes the backward pass,
    for :class:`jbp.MLP` (:func:`deltas`) and :class:`jbp.Sequential`
    (:func:`jbp.model.dense_stack.backward`) alike.

    Args:
      delta: ``delta^(l) = dL/dz^(l)``, ``(batch, n_l)``.
      W: ``W^(l)``, ``(n_l, n_(l-1))``.
      B: the matrix BP3 multiplies by in place of ``W`` (``None``: ``W``).
      delta_out: the output layer's delta ``delta^(L)``, sent in place of ``delta``
        (``B`` is then ``(n_L, n_(l-1))``); ``None`` sends ``delta``.

    Returns:
      ``dL/dx^(l-1)`` (under a rule other than backprop, the rule's stand-in for it),
      ``(batch, n_(l-1))``.
    """
    return input_grad(delta if delta_out is None else delta_out, W if B is None else B)  # BP3


def _deltas(params, cache, delta_out, activations, feedback=None, direct=False) -> tuple:
    """:func:`deltas` on arguments already checked."""
    ds = [delta_out]
    for l in range(len(params) - 1, 0, -1):
        B = None if feedback is None else feedback[l - 1]
        dL_dx = transport(ds[-1], params[l].W, B, delta_out if direct else None)  # BP3, through the rule's B
        activation = get_activation(activations[l - 1])
        ds.append(activation.delta(cache.zs[l - 1], cache.xs[l], dL_dx))  # BP4
    return tuple(reversed(ds))


def _validate_transport(params, feedback, direct) -> Optional[tuple]:
    """Checks ``feedback`` against the shapes BP3 needs (see :func:`deltas`)."""
    _validate.flag("direct", direct)
    if feedback is None:
        if direct and len(params) > 2:
            raise ValueError(
                "direct=True needs feedback, one (n_L, n_l) matrix per hidden layer, but got "
                f"feedback=None and {len(params) - 1} hidden layers"
            )
        return None
    feedback = tuple(feedback)
    n_L = params[-1].W.shape[0]
    want = [
        (n_L, params[k].W.shape[0]) if direct else tuple(params[k + 1].W.shape)
        for k in range(len(params) - 1)
    ]
    if len(feedback) != len(want):
        raise ValueError(
            f"feedback has {len(feedback)} matrices but the network has {len(want)} "
            "hidden layers, one matrix each"
        )
    for k, (B, shape) in enumerate(zip(feedback, want)):
        if not hasattr(B, "shape") or tuple(B.shape) != shape:
            raise ValueError(
                f"feedback[{k}] must have shape {shape}"
                + (" (n_L, n_l)" if direct else f" (that of params[{k + 1}].W)")
                + f", got {_validate.describe(B)}"
            )
    return feedback


def backward(
    params: Params,
    cache: Cache,
    delta_out: Array,
    activations: Sequence[str | Activation],
    *,
    feedback: Optional[Sequence[Array]] = None,
    direct: bool = False,
) -> Params:
    """The seed's backward pass: ``dL/dW`` and ``dL/db`` of every layer.

    Args:
      params: one :class:`Layer` per layer.
      cache: the :class:`Cache` from :func:`jbp.forward`.
      delta_out: ``dL/dz^(L)`` of the output layer, ``(batch, n_L)``.
      activations: one activation per layer, as given to :func:`jbp.forward`.
      feedback: the matrices BP3 multiplies by in place of ``W^(2), ..., W^(L)``
        (``feedback[k]`` replaces ``params[k + 1].W``); ``None`` (default) uses the
        ``W``'s: backprop. A learning rule's transport (see :mod:`jbp.rules`).
      direct: every hidden layer's BP3 takes the output delta ``delta^(L)`` in place of
        the delta of the layer above (direct feedback alignment); ``feedback[k]`` is
        then ``(n_L, n_(k+1))``.

    Returns:
      Gradients (with ``feedback`` or ``direct``: the rule's update direction) with
      exactly the structure, shapes and dtypes of ``params``.
    """
    cache, delta_out = _validate.backward_inputs(params, cache, delta_out, activations)
    feedback = _validate_transport(params, feedback, direct)
    return backward_unchecked(params, cache, delta_out, activations, feedback, direct)


def backward_unchecked(params, cache, delta_out, activations, feedback=None, direct=False) -> Params:
    """:func:`backward` on arguments already checked (by it, or by :class:`jbp.MLP`)."""
    ds = _deltas(params, cache, delta_out, activations, feedback, direct)
    return tuple(
        Layer(W=weight_grad(delta, x_prev), b=bias_grad(delta))  # BP5, BP6
        for delta, x_prev in zip(ds, cache.xs)
    )
