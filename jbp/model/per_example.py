"""Per-example gradients from the hand-derived backward pass.

The batch's forward pass (BP1, BP2) and deltas (BP3, BP4) are already one row per
example: BP3 and BP4 never mix rows. Only BP5 and BP6 sum over the batch, so mapping
them over the rows instead gives every example's own gradient. The output delta of a
mean loss carries a ``1/B``; scaling it by ``B`` makes row ``i`` the delta of example
``i``'s own loss, so the mean of the per-example gradients is the batch gradient.

This direct batched form and ``jax.vmap`` of the whole backward pass over single
examples compile to the same matrix products; ``scripts/bench_per_example.py`` times
both and finds them equally fast on CPU, within the noise of the measurement. The
batched form is used: its compiled program has fewer operations (no layout copies).

For a :class:`jbp.Sequential`, whose layers may sum over more than the batch
(convolutions over positions too), the hand-derived ``loss_and_grad`` runs on each
example alone, under ``jax.vmap`` (evaluation mode: dropout off).
"""

from __future__ import annotations

import jax

from jbp import _validate
from jbp.model import backward_pass
from jbp.model.forward_pass import forward
from jbp.model.network import MLP
from jbp.model.params import Layer, Params

Array = jax.Array


def per_example_grads(net: MLP, params: Params, x: Array, y: Array) -> Params:
    """Each example's gradient of its own loss, by the hand-derived backward pass.

    Args:
      net: the network (:class:`jbp.MLP` or :class:`jbp.Sequential`).
      params: its parameters.
      x: inputs ``(B, sizes[0])`` (``(B, *input_shape)`` for a Sequential).
      y: targets for ``net``'s loss, one row per example.

    Returns:
      The structure of ``params`` with a leading batch axis on every leaf:
      ``grads[l].W`` is ``(B, n_out, n_in)``, ``grads[l].b`` is ``(B, n_out)``; entry
      ``i`` is the gradient of the loss of example ``i`` alone, so the mean over the
      batch axis is ``net.loss_and_grad(params, x, y)[1]``.
    """
    _validate.network(net)
    x, y = _validate.inputs_and_targets(net, params, x, y)
    if not isinstance(net, MLP):  # a network of layers: each example's own backward pass
        one = lambda xi, yi: net.loss_and_grad_unchecked(params, xi[None], yi[None])[1]
        return jax.vmap(one)(x, y)
    _, cache = forward(params, x, net.activations)  # BP1, BP2
    # The mean loss's output delta has a 1/B; times B, row i is example i's own delta.
    delta_out = x.shape[0] * net.output_delta(cache, y)
    ds = backward_pass.deltas(params, cache, delta_out, net.activations)  # BP3, BP4, row by row
    one_row_each = lambda a: a[:, None, :]  # (B, n) -> (B, 1, n): a batch of one per example
    return tuple(
        Layer(
            W=jax.vmap(backward_pass.weight_grad)(one_row_each(delta), one_row_each(x_prev)),  # BP5
            b=jax.vmap(backward_pass.bias_grad)(one_row_each(delta)),  # BP6
        )
        for delta, x_prev in zip(ds, cache.xs)
    )
