"""Per-example gradient norms and clipped sums for a network of layers (:class:`jbp.Sequential`).

The MLP's recipe (:mod:`jbp.model.per_example`), layer by layer. One forward pass and one
backward pass of the batch, with the output delta scaled by ``B``: row ``i`` of every
layer's output delta ``dy`` is then that of example ``i``'s own loss, as no layer mixes
the rows of a batch. Each layer's share of ``‖g_i‖²`` comes from its residuals and its
``dy``, without forming ``g_i`` where a formula allows:

=====================================  ===========================================  =====================================
layer                                  ``‖dparams_i‖²`` by                           extra cost
=====================================  ===========================================  =====================================
``Dense``                              outer-product identity                       ``O(B (n_in + n_out))``
                                       ``‖delta_i‖² (‖x_i‖² + 1)``
``Conv1D``, ``Conv2D``                 ghost norm (Gram matrices over positions)    ``2 B T² (K C + F)`` or
                                       or direct per-example BP5, fewer flops       ``2 B T F K C`` flops
``LayerNorm``                          each example's ``dγ``, ``dβ`` (exact)        ``O(B · size)``
``Residual``                           its inner layers, by the same rules          theirs
no parameters (activations, pooling,   0                                            none
``Flatten``, ``Dropout``)
a layer with ``per_example_sq_norms``  that method (:mod:`jbp.layers.protocol`)     its own
any other layer with parameters        ``jax.vmap`` of its own ``backward`` over    its per-example ``dparams``:
                                       the batch, one example each                  ``B`` times its parameters
=====================================  ===========================================  =====================================

The clipped sum needs no second backward pass. Example ``i``'s gradient is linear in its
own row of ``dy`` (a backward is linear in ``dy``), so ``Σ_i c_i g_i`` of a layer is its
``backward`` with the rows of the ``dy`` kept from the first pass scaled by ``c_i``;
for ``Dense`` exactly ``(c ⊙ delta)ᵀ x`` and ``Σ_i c_i delta_i``. Only that call's
parameter gradients are used: under ``jit`` XLA drops its ``dx`` (BP3), so each layer
with parameters adds one more BP5 and BP6 (the walk goes into residual blocks, whose
inner layers' ``dy`` it kept too). On two small CNNs this measured 1.62x and 1.47x a
plain gradient, against 1.79x and 1.69x for a second whole backward pass from the
rescaled output delta (README, "Differential privacy").

No autodiff: every gradient here is a layer's hand-derived ``backward``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jbp.layers.residual import Residual

Array = jax.Array


def rows_scaled(dy: Array, c: Array) -> Array:
    """``dy`` with row ``i`` times ``c_i``, ``c`` ``(B,)``."""
    return dy * c.reshape(-1, *(1,) * (dy.ndim - 1)).astype(dy.dtype)


def layer_sq_norms(layer, params, residuals, dy: Array, where: str = "layer") -> Array:
    """``‖dparams_i‖²`` of one layer for every example, ``(B,)`` (the module docstring's table).

    Args:
      layer, params, residuals: the layer, its parameters and its forward's residuals.
      dy: its output delta of each example's own loss, ``(B, *output_shape)``.
      where: how to name the layer in errors (``"layers[2]"``).

    Raises:
      ValueError: a layer without ``per_example_sq_norms`` whose residuals do not all
        carry the batch axis first (its backward cannot be mapped over the batch).
    """
    batch = dy.shape[0]
    if not jax.tree.leaves(params):  # activations, pooling, Flatten, Dropout
        return jnp.zeros((batch,), dy.dtype)
    own = getattr(layer, "per_example_sq_norms", None)
    if callable(own):
        return own(params, residuals, dy)
    for leaf in jax.tree.leaves(residuals):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != batch:
            raise ValueError(
                f"{where} ({type(layer).__name__}) has parameters but no per_example_sq_norms method, and a "
                f"leaf of its residuals has shape {tuple(jnp.shape(leaf))}, without the batch axis ({batch}) "
                "first, so its backward cannot be mapped over the examples; give the layer a "
                "per_example_sq_norms(params, residuals, dy) method (see jbp.layers.protocol)"
            )

    def one(r, d):  # the layer's own backward on one example, a batch of one
        dparams, _ = layer.backward(params, jax.tree.map(lambda a: a[None], r), d[None])
        return sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(dparams))

    return jax.vmap(one)(residuals, dy).astype(dy.dtype)


def _walk(layers: tuple, params: tuple, residuals: tuple, dy: Array, where: str):
    """The backward pass from ``dy`` with each layer's share of ``‖g_i‖²``.

    Returns:
      ``(sq_norms (B,), dx, dys)``: ``dys`` one entry per layer, its ``dy``, or for a
      :class:`Residual` the inner layers' ``dys`` (its block, walked the same way).
    """
    sq, dys = jnp.zeros((dy.shape[0],), dy.dtype), []
    for i in reversed(range(len(layers))):
        layer, p, r, name = layers[i], params[i], residuals[i], f"{where}[{i}]"
        if type(layer) is Residual:  # y = x + block(x): into the block, then both paths
            block_sq, dh, inner = _walk(layer.layers, p, r, dy, f"{name}.layers")
            sq, dx = sq + block_sq, dy + dh
            dys.append(inner)
        else:
            sq = sq + layer_sq_norms(layer, p, r, dy, name)
            _, dx = layer.backward(p, r, dy)  # BP3 (and BP4); its dparams go unused
            dys.append(dy)
        dy = dx
    return sq, dy, tuple(reversed(dys))


def _clipped(layers: tuple, params: tuple, residuals: tuple, dys: tuple, c: Array) -> tuple:
    """Each layer's ``Σ_i c_i dparams_i``: its backward on ``dy`` with rows scaled by ``c``."""
    grads = []
    for layer, p, r, d in zip(layers, params, residuals, dys, strict=True):
        if not jax.tree.leaves(p):
            grads.append(p)  # nothing to differentiate: the params' own (empty) structure
        elif type(layer) is Residual:
            grads.append(_clipped(layer.layers, p, r, d, c))
        else:
            grads.append(layer.backward(p, r, rows_scaled(d, c))[0])  # BP5, BP6 of c ⊙ dy
    return tuple(grads)


def example_deltas(net, params, x: Array, y: Array, key=None, train: bool = False):
    """One forward and one backward pass with each example's own output delta.

    Returns:
      ``(sq_norms, cache, dys)``: ``‖g_i‖²`` ``(B,)``, the forward's
      :class:`jbp.model.sequential.SequentialCache`, and every layer's ``dy`` (nested
      for residual blocks), for :func:`clipped_grads`.
    """
    _, cache = net.forward_unchecked(params, x, key, train)
    # The mean loss's output delta has a 1/B; times B, row i is example i's own delta.
    delta_out = x.shape[0] * net.output_delta_unchecked(cache, y)
    sq, _, dys = _walk(net.layers, params, cache.residuals, delta_out, "layers")
    return sq, cache, dys


def clipped_grads(net, params, cache, dys: tuple, c: Array) -> tuple:
    """``Σ_i c_i g_i`` with the structure of ``params``, from :func:`example_deltas`'s
    ``cache`` and ``dys`` and the factors ``c`` ``(B,)``."""
    return _clipped(net.layers, params, cache.residuals, dys, c)
