"""The layer protocol: any object with init, forward and backward is a layer."""

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import LayerProtocol, StaticShape, check_layer_object

BUILT_IN = [
    jbp.layers.Dense(2), jbp.layers.ActivationLayer("relu"), jbp.layers.Conv1D(2, 3), jbp.layers.Conv2D(2, 3),
    jbp.layers.MaxPool1D(2), jbp.layers.MaxPool2D(2), jbp.layers.AvgPool1D(2), jbp.layers.AvgPool2D(2),
    jbp.layers.Flatten(), jbp.layers.Dropout(0.5), jbp.layers.LayerNorm(), jbp.layers.Residual(["relu"]),
]


@dataclasses.dataclass(frozen=True)
class Scale:
    """A user's layer that subclasses nothing: y = a x."""

    def init(self, key, input_shape, dtype):
        return jnp.ones((), dtype), input_shape

    def forward(self, params, x, *, key=None, train=False):
        return params * x, x

    def backward(self, params, x, dy):
        return jnp.sum(dy * x), params * dy


@pytest.mark.parametrize("layer", BUILT_IN + [Scale()], ids=lambda l: type(l).__name__)
def test_built_in_and_user_layers_are_layers_and_static_under_jit(layer):
    assert isinstance(layer, LayerProtocol)
    assert check_layer_object("layer", layer) is layer
    same = copy.deepcopy(layer)
    assert same is not layer and same == layer and hash(same) == hash(layer)
    assert jax.tree.leaves(layer) == [layer]  # no arrays inside: a leaf to jax, static to jit


class NoBackward:
    def init(self, key, input_shape, dtype):
        return (), input_shape

    def forward(self, params, x, *, key=None, train=False):
        return x, None


class Unhashable(NoBackward):
    def backward(self, params, residuals, dy):
        return (), dy

    def __eq__(self, other):  # defines equality without a hash, as a mutable dataclass does
        return isinstance(other, Unhashable)


@pytest.mark.parametrize("value, match", [
    (NoBackward(), r"layers\[2\] must be a layer .* got NoBackward .* without backward"),
    (Unhashable(), r"layers\[2\] must be a hashable layer .* got unhashable Unhashable; make it a frozen dataclass"),
    ("relu", r"layers\[2\] must be a layer .* got str 'relu' without init, forward, backward"),
])
def test_what_is_not_a_layer_is_named(value, match):
    with pytest.raises(TypeError, match=match):
        check_layer_object("layers[2]", value)


def test_a_static_shape_has_no_leaves_and_passes_through_jit():
    shape = StaticShape((3, 4))
    assert jax.tree.leaves(shape) == []
    out = jax.jit(lambda x: (x, StaticShape(x.shape)))(np.zeros((3, 4)))
    assert out[1] == shape
