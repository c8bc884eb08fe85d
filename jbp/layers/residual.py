"""Skip connections: :class:`Residual`, ``y = x + block(x)``."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax

from jbp import _validate
from jbp._validate import describe
from jbp.layers import args, chain, per_example, protocol
from jbp.layers.activation import as_layer
from jbp.layers.params import Layer

Array = jax.Array


@dataclasses.dataclass(frozen=True, init=False)
class Residual:
    """``y = x + block(x)``, the block a chain of layers whose output has the input's shape.

    Forward: ``h_0 = x``, ``h_i = layer_i(h_{i-1})``, ``y = x + h_n``. Backward: ``x``
    reaches ``y`` along two paths, the skip (``∂y/∂x = I``) and the block, and the chain
    rule adds them::

        dh_n = dy;  (dparams_i, dh_{i-1}) = layer_i.backward(params_i, residuals_i, dh_i)
        dx = dy + dh_0

    Params (and ``dparams``): a tuple, one entry per inner layer. Residuals: a tuple, one
    per inner layer. With a ``key``, inner layer ``i`` gets ``jax.random.fold_in(key, i)``.

    Args:
      layers: the block, a sequence of layers (an activation name, ``"relu"``, is an
        activation layer; see :func:`jbp.layers.as_layer`).
    """

    layers: tuple

    def __init__(self, layers):
        if isinstance(layers, str) or not isinstance(layers, (tuple, list)):
            raise TypeError(f"Residual's layers must be a tuple or list of layers, got {describe(layers)}")
        if not layers:
            raise ValueError("Residual's layers must hold at least one layer, got an empty sequence")
        object.__setattr__(self, "layers", tuple(as_layer(l, f"Residual's layers[{i}]") for i, l in enumerate(layers)))

    @property
    def stochastic(self) -> bool:
        """Whether an inner layer draws from its key (a layer that does not say is assumed to)."""
        return any(getattr(layer, "stochastic", True) for layer in self.layers)

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[tuple, tuple]:
        """``(params, input_shape)``: each inner layer's init with its own key
        (``jax.random.split``); the block must give back the input's shape."""
        _validate.prng_key("Residual.init's key", key)
        input_shape = args.input_shape(self, input_shape, None, "the input's shape")
        shape, params = input_shape, []
        for layer, k in zip(self.layers, jax.random.split(key, len(self.layers))):
            p, shape = layer.init(k, shape, dtype)
            params.append(p)
        if tuple(shape) != input_shape:
            raise ValueError(
                f"Residual's block must keep the input's shape {input_shape} (y = x + block(x)), "
                f"but its layers give {tuple(shape)}"
            )
        return tuple(params), input_shape

    def forward(self, params: tuple, x: Array, *, key: Optional[Array] = None, train: bool = False):
        """``(x + block(x), residuals)``: the block by the one forward loop (:mod:`jbp.layers.chain`)."""
        outputs, residuals = chain.forward(self.layers, params, x, key=key, train=train)
        return x + outputs[-1], residuals

    def per_example_sq_norms(self, params: tuple, residuals: tuple, dy: Array) -> Array:
        """``‖dparams_i‖²`` per example, ``(B,)``: the inner layers' shares, each from the
        ``dy`` it receives in the block's backward (:mod:`jbp.layers.per_example`)."""
        _, _, dys = chain.backward(self.layers, params, residuals, dy)
        return per_example.sq_norms(self.layers, params, residuals, dys, "Residual's layers")

    def kronecker_operands(self, params: tuple, residuals: tuple, dy: Array) -> tuple:
        """BP5's operands of the inner layers' weight blocks, in the order K-FAC finds the
        blocks in ``params`` (:mod:`jbp.layers.protocol`): each inner layer's
        ``weight_grad_operands`` (``jbp.Layer`` params) or ``kronecker_operands``, from the
        ``dy`` it receives in the block's backward."""
        _, _, dys = chain.backward(self.layers, params, residuals, dy)
        operands = []
        for i, (layer, p, r, d) in enumerate(zip(self.layers, params, residuals, dys)):
            if not protocol.weight_blocks(p):
                continue
            if isinstance(p, Layer):
                method = getattr(layer, "weight_grad_operands", None)
                found = None if method is None else (method(p, r, d),)
            else:
                method = getattr(layer, "kronecker_operands", None)
                found = None if method is None else tuple(method(p, r, d))
            if found is None:
                raise TypeError(f"Residual's layers[{i}] ({type(layer).__name__}) has weight blocks but no "
                                "weight_grad_operands or kronecker_operands method (see jbp.layers.protocol)")
            operands.extend(found)
        return tuple(operands)

    def backward(self, params: tuple, residuals: tuple, dy: Array) -> tuple[tuple, Array]:
        """``(dparams, dy + dh_0)``: both paths summed; the block by the one backward loop."""
        dparams, dh, _ = chain.backward(self.layers, params, residuals, dy)
        return dparams, dy + dh
