"""Per-example gradients from the hand-derived backward pass.

The batch's forward pass (BP1, BP2) and deltas (BP3, BP4) are already one row per
example: BP3 and BP4 never mix rows. Only BP5 and BP6 sum over the batch, so mapping
them over the rows instead gives every example's own gradient. The output delta of a
mean loss carries a ``1/B``; scaling it by ``B`` makes row ``i`` the delta of example
``i``'s own loss, so the mean of the per-example gradients is the batch gradient.

As layers may sum over more than the batch (convolutions over positions too),
:func:`per_example_grads` runs the hand-derived ``loss_and_grad`` on each example alone,
under ``jax.vmap`` (evaluation mode: dropout off).

The norms and the clipped sum never form the per-example gradients:
:func:`per_example_norms` takes them from each layer's input and delta (BP5 and BP6 per
example: :func:`jbp.layers.dense.weight_grad_sq_norms`,
:func:`jbp.layers.dense.bias_grad_sq_norms` for dense layers; each layer's rule in
:mod:`jbp.layers.per_example`), and :func:`clipped_grad` is BP5 and BP6 again on the
deltas rescaled by the clip factors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.model import base
from jbp.layers import chain, per_example as layers_per_example
from jbp.model.losses import get_loss
from jbp.layers.params import Params

Array = jax.Array


def per_example_grads(net, params: Params, x: Array, y: Array) -> Params:
    """Each example's gradient of its own loss, by the hand-derived backward pass.

    Args:
      net: the network (:class:`jbp.MLP` or :class:`jbp.Sequential`).
      params: its parameters.
      x: inputs ``(B, *input_shape)`` (``(B, sizes[0])`` for an MLP).
      y: targets for ``net``'s loss, one row per example.

    Returns:
      The structure of ``params`` with a leading batch axis on every leaf:
      ``grads[l].W`` is ``(B, n_out, n_in)``, ``grads[l].b`` is ``(B, n_out)``; entry
      ``i`` is the gradient of the loss of example ``i`` alone, so the mean over the
      batch axis is ``net.loss_and_grad(params, x, y)[1]``.
    """
    base.network(net)
    x, y = base.inputs_and_targets(net, params, x, y)
    one = lambda xi, yi: net.loss_and_grad_unchecked(params, xi[None], yi[None])[1]  # each example's own pass
    return jax.vmap(one)(x, y)


def clip_factors(norms: Array, clip_norm) -> Array:
    """``c_i = min(1, C / ‖g_i‖)``: the factor that clips example ``i``'s gradient to norm ``C``.

    Args:
      norms: ``‖g_i‖``, ``(B,)``.
      clip_norm: ``C > 0``.

    Returns:
      ``(B,)``; 1 where ``‖g_i‖ <= C`` (a zero gradient included), so ``c_i g_i`` has
      norm ``min(‖g_i‖, C)``.
    """
    return jnp.where(norms > clip_norm, clip_norm / jnp.where(norms > clip_norm, norms, 1), 1)


def _norms_and_deltas(net, params, x, y, key=None, train=False):
    """``(‖g_i‖² (B,), z^(L), x^(L), clipped)``: one forward and one backward pass of
    each example's own loss; ``clipped(c)`` is ``Σ_i c_i g_i`` from what they kept."""
    _, cache = net.forward_unchecked(params, x, key, train)
    # The mean loss's output delta has a 1/B; times B, row i is example i's own delta.
    delta_out = x.shape[0] * net.output_delta_unchecked(cache, y)
    _, _, dys = chain.backward(net.layers, params, cache.residuals, delta_out)  # the one backward loop
    sq = layers_per_example.sq_norms(net.layers, params, cache.residuals, dys)
    return sq, cache.z, cache.out, lambda c: layers_per_example.clipped(net.layers, params, cache.residuals, dys, c)


def per_example_norms(net, params: Params, x: Array, y: Array) -> Array:
    """The norm of each example's whole gradient, from the deltas, without forming it.

    One forward and one backward pass (evaluation mode: dropout off), and each layer's
    share from its input and output delta: for the seed's dense layers
    ``‖delta_i^(l)‖² (‖x_i^(l-1)‖² + 1)`` (BP5 and BP6 per example, so
    ``‖g_i‖ = sqrt(Σ_l ‖delta_i^(l)‖² (‖x_i^(l-1)‖² + 1))`` for an MLP: no
    ``(B, n_out, n_in)`` array is ever made), the ghost norm or a direct per-example BP5
    for convolutions (whichever takes fewer flops), exact per-example ``dγ``, ``dβ`` for
    ``LayerNorm``, a layer's own ``per_example_sq_norms`` method, else ``jax.vmap`` of
    that layer's backward over the batch (see :mod:`jbp.layers.per_example`).

    Args:
      net: the network (:class:`jbp.MLP` or :class:`jbp.Sequential`).
      params: its parameters.
      x: inputs ``(B, sizes[0])`` (``(B, *input_shape)`` for a Sequential).
      y: targets for ``net``'s loss, one row per example.

    Returns:
      ``(B,)`` in the params' dtype: ``‖g_i‖``, the norm of ``per_example_grads``'s
      row ``i`` taken over all its leaves.
    """
    base.network(net)
    x, y = base.inputs_and_targets(net, params, x, y)
    return jnp.sqrt(_norms_and_deltas(net, params, x, y)[0])


def clipped_grad_sum(net, params: Params, x: Array, y: Array, clip_norm, weights: Array, key=None,
                     train: bool = False):
    """The weighted sums of the per-example losses and clipped gradients, unchecked.

    The core of :func:`clipped_grad` and of DP-SGD in :func:`jbp.fit`, on arguments
    already checked (it runs inside ``jit``).

    Args:
      net, params, x, y: as :func:`clipped_grad`.
      clip_norm: ``C > 0``.
      weights: ``(B,)``, each row's weight ``m_i`` (0/1: the mask).
      key, train: for a :class:`jbp.Sequential`, the forward pass's PRNG key and
        training mode (dropout: each example's gradient is then that of its own loss
        under the mask drawn for its row); ignored for an MLP.

    Returns:
      ``(Σ_i m_i L_i, Σ_i m_i c_i g_i)``, the second with the structure of ``params``.
    """
    sq, z, out, clipped = _norms_and_deltas(net, params, x, y, key, train)
    c = weights * clip_factors(jnp.sqrt(sq), clip_norm)
    loss = get_loss(net.loss_name)
    # Each example's own loss: the loss of a batch of one, row by row.
    losses = jax.vmap(lambda z, out, t: loss.value(z[None], out[None], t[None]))(z, out, y)
    return jnp.sum(jnp.where(weights > 0, weights * losses, 0)), clipped(c)


def clipped_grad(net, params: Params, x: Array, y: Array, clip_norm, *, mask=None):
    """The mean of the per-example gradients, each clipped to norm ``clip_norm``.

    ``(1/N) Σ_i m_i c_i g_i`` with ``c_i = min(1, C / ‖g_i‖)`` (:func:`clip_factors`),
    ``g_i`` being the gradient of example ``i``'s own loss (:func:`per_example_grads`).
    One forward and one backward pass: the norms come from the deltas
    (:func:`per_example_norms`) and the clipped sum is BP5 and BP6 of the rescaled
    deltas ``c ⊙ delta`` (for a :class:`jbp.Sequential`, each layer's backward with its
    output delta's rows rescaled, of which only the parameter gradients are used).
    Where no example is clipped it is ``net.loss_and_grad``'s gradient.

    Args:
      net: the network (:class:`jbp.MLP` or :class:`jbp.Sequential`, the latter in
        evaluation mode: dropout off).
      params: its parameters.
      x: inputs ``(B, sizes[0])`` (``(B, *input_shape)`` for a Sequential).
      y: targets for ``net``'s loss, one row per example.
      clip_norm: ``C``, a real number ``> 0``.
      mask: ``(B,)`` of 0/1 (or bools), for variable-size batches padded to ``B``: rows
        with 0 count for nothing. The mean is then over the rows with 1,
        ``N = Σ_i m_i`` (the sum is returned as is where ``N = 0``: zero). Default: all
        rows, ``N = B``.

    Returns:
      ``(loss, grads)``: the mean of the (unmasked) examples' own losses, and the mean
      of their clipped gradients, with the structure, shapes and dtypes of ``params``.
    """
    base.network(net)
    x, y = base.inputs_and_targets(net, params, x, y)
    _validate.real("clip_norm", clip_norm, positive=True, finite=True)
    weights = jnp.ones(x.shape[0], x.dtype) if mask is None else _mask(mask, x.shape[0], x.dtype)
    loss_sum, grad_sum = clipped_grad_sum(net, params, x, y, jnp.asarray(clip_norm, x.dtype), weights)
    n = jnp.maximum(jnp.sum(weights), 1)
    return loss_sum / n, jax.tree.map(lambda g: g / n, grad_sum)


def _mask(mask, batch: int, dtype) -> Array:
    """Checks a 0/1 mask ``(batch,)``; returns it in ``dtype``."""
    if not (hasattr(mask, "shape") and hasattr(mask, "dtype")):
        mask = np.asarray(mask)
    if tuple(mask.shape) != (batch,):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but x has {batch} rows; expected ({batch},), "
            "one 0 or 1 per row"
        )
    if not (mask.dtype == np.bool_ or jnp.issubdtype(mask.dtype, jnp.number)):
        raise TypeError(f"mask must hold 0/1 or bools, got dtype {mask.dtype}")
    if _validate.is_concrete(mask):
        values = np.unique(np.asarray(mask, np.float64))
        if not set(values.tolist()) <= {0.0, 1.0}:
            raise ValueError(f"mask must hold only 0 and 1, got values {values[:5].tolist()}")
    return jnp.asarray(mask, dtype)
