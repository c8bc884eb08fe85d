"""Activation layers, ``x = f(z)`` (BP2) with ``dL/dz = dL/dx · f'(z)`` (BP4), built on
:mod:`jbp.layers.activations`, where each activation's rule and derivative live.

A name in a list of layers (``"relu"``) becomes an :class:`ActivationLayer` by
:func:`as_layer`; softmax is only for the output layer (a network's
``output_activation``), so :func:`as_layer` refuses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jbp import _validate
from jbp.layers import args
from jbp.layers.protocol import check_layer_object
from jbp.layers.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS, Activation, get_activation

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ActivationLayer:
    """An activation as a layer: ``y = f(x)`` elementwise (softmax: row by row, over the
    last axis), without parameters.

    Forward (BP2): ``y = f(x)``. Backward (BP4): with ``dy = dL/dy``, the chain rule
    through ``y_j = f(x_j)`` gives ``dL/dx_j = dL/dy_j f'(x_j)``,
    i.e. :meth:`jbp.layers.activations.Activation.delta` (for softmax the product with its
    Jacobian ``diag(y) - y yᵀ``).

    Residuals: only what the derivative reads (:attr:`Activation.reads`): the output
    ``y`` for identity, sigmoid (``y (1 - y)``), tanh (``1 - y²``), relu (``y > 0``),
    leaky_relu, elu and softmax; the input for softplus and gelu. ``dparams`` is ``()``.

    Args:
      name: one of :data:`jbp.ACTIVATIONS` (``"relu"``, ``"tanh"``, ...), or an
        :class:`jbp.Activation`.
    """

    name: str

    #: Whether the forward pass draws from its key in training mode.
    stochastic = False

    def __post_init__(self):
        if not isinstance(self.name, Activation):  # an Activation of one's own passes as is
            _validate.name("ActivationLayer's name", self.name, tuple(ACTIVATIONS))

    @property
    def activation(self) -> str:
        """The activation's name (what the monitor reads, as a :class:`jbp.layers.Perceptron`'s)."""
        return get_activation(self.name).name

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[tuple, tuple]:
        """``((), input_shape)``: no parameters; the output has the input's shape."""
        _, shape, _ = args.init_args(self, key, input_shape, dtype, None, "the input's shape")
        if self.name == "softmax" and shape[-1] < 2:
            raise ValueError(f"softmax needs at least 2 features on its last axis, got input_shape {shape}")
        return (), shape

    def forward(self, params: tuple, x: Array, *, key=None, train: bool = False) -> tuple[Array, Array]:
        """``(f(x), r)``: BP2; ``r`` is ``f(x)`` or ``x``, whichever ``f'`` reads."""
        y = get_activation(self.name).f(x)  # BP2
        return y, (y if get_activation(self.name).reads == "x" else x)

    def backward(self, params: tuple, residual: Array, dy: Array) -> tuple[tuple, Array]:
        """``((), dx)`` with ``dx = dy · f'``: BP4."""
        activation = get_activation(self.name)
        z, x = (None, residual) if activation.reads == "x" else (residual, None)
        return (), activation.delta(z, x, dy)  # BP4: dL/dz = dL/dx * f'(z)


def as_layer(spec: Any, arg: str = "layer") -> Any:
    """A hidden layer from ``spec``: an activation name becomes an
    :class:`ActivationLayer`, a layer passes through (checked: see
    :func:`jbp.layers.protocol.check_layer_object`).

    Softmax is refused, as a name or as ``ActivationLayer("softmax")``: it is only for the
    output layer (a network's ``output_activation``).

    Args:
      spec: a name in :data:`jbp.layers.activations.HIDDEN_ACTIVATIONS` or a layer.
      arg: how to name ``spec`` in errors (``"layers[2]"``).
    """
    if isinstance(spec, str):
        if spec == "softmax":
            raise ValueError(_softmax_refused(arg, repr(spec)))
        return ActivationLayer(_validate.name(arg, spec, HIDDEN_ACTIVATIONS))
    if isinstance(spec, ActivationLayer) and spec.name == "softmax":
        raise ValueError(_softmax_refused(arg, repr(spec)))
    return check_layer_object(arg, spec)


def _softmax_refused(arg, got) -> str:
    return (
        f"{arg} must be a hidden layer, got {got}: softmax is only for the output layer "
        f"(output_activation='softmax'); hidden activations are {', '.join(HIDDEN_ACTIVATIONS)}"
    )
