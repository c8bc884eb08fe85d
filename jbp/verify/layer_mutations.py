"""The classic mistakes planted in a network of layers (:class:`jbp.Sequential`).

For a :class:`jbp.MLP`, :func:`jbp.mutation_test` swaps parts of jbp's backward
(:class:`jbp.verify.grads.Equations`). A network of layers has no such parts: there each
mistake is planted by wrapping jbp's dense or activation layers in :class:`Mutated`,
whose backward runs the layer's own and then makes the mistake. The per-layer view of
:func:`jbp.check_grads` reports a wrapped layer with the equations of the layer it wraps.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import jax

Array = jax.Array

#: The mistakes :class:`Mutated` can make: ``(name, equation, description, layer type)``.
LAYER_MUTATIONS = (
    ("missing f'(z)", "BP4", "dL/dx = dL/dy, the activation's derivative left out", "ActivationLayer"),
    ("bias averaged", "BP6", "db = mean of delta over the batch instead of the sum", "Dense"),
    ("sign flip in dx", "BP3", "dL/dx = -(delta @ W)", "Dense"),
    ("transposed W", "BP3", "dL/dx = delta @ W.T where W is square", "Dense"),
)


@dataclasses.dataclass(frozen=True)
class Mutated:
    """``layer`` with the classic mistake ``mistake`` (a name of :data:`LAYER_MUTATIONS`)
    made in its backward. Its forward, parameters and shapes are the layer's own."""

    wraps: Any
    mistake: str

    def init(self, key: Array, input_shape: tuple, dtype=None):
        return self.wraps.init(key, input_shape, dtype)

    def forward(self, params, x: Array, *, key=None, train: bool = False):
        return self.wraps.forward(params, x, key=key, train=train)

    def backward(self, params, residuals, dy: Array):
        dparams, dx = self.wraps.backward(params, residuals, dy)
        if self.mistake == "missing f'(z)":
            dx = dy  # BP4 without f'
        elif self.mistake == "bias averaged":
            dparams = dparams._replace(b=dparams.b / dy.shape[0])  # BP6 as a mean
        elif self.mistake == "sign flip in dx":
            dx = -dx  # BP3 negated
        elif self.mistake == "transposed W" and params.W.shape[0] == params.W.shape[1]:
            dx = dy @ params.W.T  # BP3 with W transposed
        return dparams, dx


def plant(net, mistake: str):
    """``net`` with every layer of the mistake's type wrapped in :class:`Mutated`."""
    kind = next(m[3] for m in LAYER_MUTATIONS if m[0] == mistake)
    layers = tuple(
        Mutated(layer, mistake)
        if type(layer).__name__ == kind and type(layer).__module__.startswith("jbp.layers") else layer
        for layer in net.layers
    )
    # the same shapes and parameters: a copy of the frozen network with the layers swapped
    mutated = copy.copy(net)
    object.__setattr__(mutated, "layers", layers)
    return mutated
