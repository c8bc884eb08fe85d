"""The backward pass (BP3-BP6): the chain rule, layer by layer, from the output down.

With ``delta^(l) = dL/dz^(l)`` (``(batch, n_l)``, one row per example) the seed's
equations read, for a batch whose loss is a sum over rows:

- BP3 ``dL/dx^(l-1) = delta^(l) @ W^(l)``           (:func:`jbp.layers.dense.input_grad`)
- BP4 ``delta^(l-1) = dL/dx^(l-1) · f'(z^(l-1))``    (:meth:`jbp.layers.activations.Activation.delta`)
- BP5 ``dL/dW^(l) = delta^(l).T @ x^(l-1)``         (:func:`jbp.layers.dense.weight_grad`)
- BP6 ``dL/db^(l) = Σ_batch delta^(l)``             (:func:`jbp.layers.dense.bias_grad`)

BP5 and BP6 sum the per-example products over the batch; the ``1/B`` of a mean loss is
already inside the output delta (see :mod:`jbp.model.losses`). BP3, BP5 and BP6 live
with the dense layer, in :mod:`jbp.layers.dense`; they are imported here, so
``jbp.model.backward_pass.input_grad`` (and ``weight_grad``, ``bias_grad``) still name
them and this module's passes look them up here.

Both are views of the one backward loop (:func:`jbp.layers.chain.backward`) over the
seed's layers (:func:`jbp.model.forward_pass.seed_layers`), whose residuals are read off
the :class:`Cache`: the deltas are what each dense layer receives.

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
from jbp.layers import chain
from jbp.layers.dense import bias_grad, input_grad, weight_grad  # BP6, BP3, BP5
from jbp.model import forward_pass, rules
from jbp.layers.activations import Activation, get_activation
from jbp.model.forward_pass import Cache, seed_layers, seed_params
from jbp.layers.params import Params

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
    cache, delta_out = backward_inputs(params, cache, delta_out, activations)
    feedback = _validate_transport(params, feedback, direct)
    return _deltas(params, cache, delta_out, activations, feedback, direct)


def _chain(params, cache, delta_out, activations, feedback, direct):
    """The one backward loop over the seed's layers below the output activation, from
    ``delta_out``: ``(grads, dys)`` (a dense layer's ``dy`` is its delta)."""
    layers = seed_layers(params, activations)[:-1]  # delta_out is dL/dz^(L): past the output's f
    residuals = tuple(
        r
        for l, activation in enumerate(activations)
        for r in (cache.xs[l], cache.xs[l + 1] if get_activation(activation).reads == "x" else cache.zs[l])
    )[:-1]
    rule = None if feedback is None else rules.Rule("dfa" if direct else "fa")
    send = None if rule is None else rules.transport(
        rule, layers, seed_params(params)[:-1], residuals, feedback, tuple(range(0, len(layers), 2)))
    grads, _, dys = chain.backward(layers, seed_params(params)[:-1], residuals, delta_out, transport=send)
    return grads[0::2], dys[0::2]


def _deltas(params, cache, delta_out, activations, feedback=None, direct=False) -> tuple:
    """:func:`deltas` on arguments already checked."""
    return _chain(params, cache, delta_out, activations, feedback, direct)[1]


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
    cache, delta_out = backward_inputs(params, cache, delta_out, activations)
    feedback = _validate_transport(params, feedback, direct)
    return backward_unchecked(params, cache, delta_out, activations, feedback, direct)


def backward_unchecked(params, cache, delta_out, activations, feedback=None, direct=False) -> Params:
    """:func:`backward` on arguments already checked."""
    return _chain(params, cache, delta_out, activations, feedback, direct)[0]


# --- Argument checks at the boundary. ---------------------------------------------


def backward_inputs(params_, cache, delta_out, activations) -> tuple:
    """For :func:`jbp.deltas` and :func:`jbp.backward`: params, activations, a cache of
    ``jbp.forward`` with these params, and ``delta_out`` of the output layer's shape;
    returns ``(cache, delta_out)`` as JAX arrays, ``delta_out`` in the params' dtype."""
    dtype = forward_pass.params_and_activations(params_, activations)
    zs, xs = forward_pass.cache_arrays(cache)
    n = len(params_)
    if len(zs) != n or len(xs) != n + 1:
        raise ValueError(
            f"cache holds {len(zs)} zs and {len(xs)} xs but params has {n} layers; expected "
            f"{n} and {n + 1}: the cache of jbp.forward with these params"
        )
    batch = xs[0].shape[0] if xs[0].ndim == 2 else None
    expected = [("xs[0]", xs[0], params_[0].W.shape[1])] + [
        (f"{kind}[{l + i}]", a[l + i], params_[l].W.shape[0])
        for l in range(n) for kind, a, i in (("zs", zs, 0), ("xs", xs, 1))
    ]
    for where, a, width in expected:
        if tuple(a.shape) != (batch, width):
            raise ValueError(
                f"cache.{where} has shape {tuple(a.shape)} but params give "
                f"({batch}, {width}) (batch, width); use the cache of jbp.forward with these params"
            )
        if a.dtype != dtype:
            raise TypeError(f"cache.{where} has dtype {a.dtype} but params are {dtype}")
    delta_out = _validate.array("delta_out", delta_out)
    if tuple(delta_out.shape) != tuple(zs[-1].shape):
        raise ValueError(
            f"delta_out has shape {tuple(delta_out.shape)} but the output layer's z has "
            f"{tuple(zs[-1].shape)} (cache.zs[-1]): it must be dL/dz of the output layer"
        )
    return forward_pass.as_jax(cache), _validate.same_float("delta_out", delta_out, dtype)
