"""Per-example gradient norms and clipped sums, layer by layer (for :mod:`jbp.model.per_example`).

One forward pass and one backward pass of the batch (the one loop,
:mod:`jbp.layers.chain`), with the output delta scaled by ``B``: row ``i`` of every
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
``Residual``                           its inner layers, by the same rules (its     theirs
                                       ``per_example_sq_norms``)
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
with parameters adds one more BP5 and BP6 (a residual block's backward also runs its
inner BP3 again). On two small CNNs this measured 1.62x and 1.47x a plain gradient,
against 1.79x and 1.69x for a second whole backward pass from the rescaled output delta
(README, "Differential privacy").

No autodiff: every gradient here is a layer's hand-derived ``backward``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def sq_norms(layers: tuple, params: tuple, residuals: tuple, dys: tuple, where: str = "layers") -> Array:
    """``‖g_i‖²`` ``(B,)`` of a chain: the sum of its layers' :func:`layer_sq_norms`,
    from each layer's ``dy`` (the ``dys`` of :func:`jbp.layers.chain.backward`)."""
    return sum(
        layer_sq_norms(layer, p, r, d, f"{where}[{i}]")
        for i, (layer, p, r, d) in enumerate(zip(layers, params, residuals, dys, strict=True))
    )


def clipped(layers: tuple, params: tuple, residuals: tuple, dys: tuple, c: Array) -> tuple:
    """Each layer's ``Σ_i c_i dparams_i``: its backward on ``dy`` with rows scaled by ``c``."""
    return tuple(
        p if not jax.tree.leaves(p)  # nothing to differentiate: the params' own (empty) structure
        else layer.backward(p, r, rows_scaled(d, c))[0]  # BP5, BP6 of c ⊙ dy
        for layer, p, r, d in zip(layers, params, residuals, dys, strict=True)
    )
