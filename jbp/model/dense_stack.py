"""A network as the seed's chain of ``L`` dense layers: what the learning rules and the
per-layer statistics see.

A learning rule (:mod:`jbp.model.rules`) changes BP3 between dense layers, and
``fit(..., monitor=True)`` (:mod:`jbp.training.monitor`) records statistics of each dense
layer's ``W^(l)`` and ``b^(l)``. Both take a network as ``L`` dense layers with
elementwise layers between them:

- a :class:`jbp.MLP`: layer ``l`` is ``params[l - 1]``, followed by its activation;
- a :class:`jbp.Sequential` of :class:`jbp.layers.Dense`, activation layers,
  :class:`jbp.layers.Flatten` and :class:`jbp.layers.Dropout`: layer ``l`` is its
  ``l``-th ``Dense``, and the layers after it, up to the next ``Dense``, take the place
  of its activation (none: the identity; several: their composition; after the output
  layer, the network's output activation follows them). They act elementwise, so the
  delta between two dense layers keeps its shape ``(batch, n_l)`` and a rule's ``B^(l)``
  has ``W^(l)``'s: each sends the delta down by its own backward (BP4 for an activation;
  dropout scales it by the mask that scaled the activations; Flatten only reshapes, which
  matters only before the first ``Dense``). Nothing is sent below the first ``Dense``,
  as nothing is below an MLP's layer 1: the layers before it have no parameters.

The same network written either way (``MLP((4, 8, 3), "tanh")`` and
``Sequential((4,), [Dense(8), "tanh", Dense(3)])``, with the same weights) gives the same
rule updates and the same statistics. Any other layer (a convolution, pooling,
normalisation, a residual block, a layer of your own) is not an elementwise link between
dense layers: :func:`of` refuses it with a ``TypeError`` naming it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Sequence, Union

import jax

from jbp.layers.activation import ActivationLayer
from jbp.layers.dense import Dense
from jbp.layers.dropout import Dropout
from jbp.layers.reshape import Flatten
from jbp.model.activations import get_activation
from jbp.model.backward_pass import backward_unchecked, transport
from jbp.model.network import MLP
from jbp.model.params import Params

Array = jax.Array

#: The layers a :class:`jbp.Sequential` may hold besides ``Dense`` (exact types).
ELEMENTWISE = (ActivationLayer, Dropout, Flatten)
#: Where :func:`unit_outputs` reads the network's output activation (not a layer index).
OUTPUT = -1


class DenseStack(NamedTuple):
    """A network's dense layers, first to last (static: built from the network alone).

    Attributes:
      positions: ``params`` index of each dense layer (an MLP's ``0..L-1``).
      sizes: ``(n_0, n_1, ..., n_L)``, as :attr:`jbp.MLP.sizes`.
      inits: each dense layer's weight init scheme.
      activations: per dense layer, the activations after it up to the next dense layer,
        ``(where, name)`` pairs, first to last; ``where`` is a layer index
        (a :class:`jbp.Sequential`), ``l`` for an MLP's ``cache.xs[l]``, or :data:`OUTPUT`.
    """

    positions: tuple
    sizes: tuple
    inits: tuple
    activations: tuple

    def dense(self, params) -> tuple:
        """The dense layers' entries of ``params`` (or of a gradient), first to last."""
        return tuple(params[i] for i in self.positions)


def of(net, needed_by: str) -> DenseStack:
    """``net``'s dense layers; a ``TypeError`` if it is not a chain of dense layers.

    Args:
      net: a :class:`jbp.MLP` or :class:`jbp.Sequential`.
      needed_by: what needs them, for the error (``"rule 'fa'"``, ``"monitor=True"``).
    """
    found = _stack(net)
    if isinstance(found, DenseStack):
        return found
    raise TypeError(
        f"{needed_by} needs a network of dense layers with elementwise layers between them "
        "(a jbp.MLP, or a jbp.Sequential of Dense, activation, Flatten and Dropout layers), "
        f"but {found}"
    )


@functools.lru_cache(maxsize=256)
def _stack(net) -> Union[DenseStack, str]:
    """The :class:`DenseStack` of ``net``, or what is wrong with it (for :func:`of`)."""
    if isinstance(net, MLP):
        L = net.n_layers
        return DenseStack(tuple(range(L)), net.sizes, (net.init_name,) * L,
                          tuple(((l + 1, name),) for l, name in enumerate(net.activations)))
    layers = getattr(net, "layers", None)
    if layers is None:
        return f"got a {type(net).__name__}"
    other = first_other(net)
    if other is not None:
        return f"its layers[{other}] is a {type(layers[other]).__name__}"
    positions = tuple(i for i, layer in enumerate(layers) if type(layer) is Dense)
    if not positions:
        return "it has no Dense layer"
    first = positions[0]
    n_0 = (net.output_shapes[first - 1] if first else net.input_shape)[0]
    ends = positions[1:] + (len(layers),)
    activations = tuple(
        tuple((j, layers[j].name) for j in range(i + 1, end) if type(layers[j]) is ActivationLayer)
        for i, end in zip(positions, ends)
    )
    activations = activations[:-1] + (activations[-1] + ((OUTPUT, net.output_activation),),)
    return DenseStack(positions, (n_0,) + tuple(layers[i].features for i in positions),
                      tuple(layers[i].init_name for i in positions), activations)


def first_other(net) -> Optional[int]:
    """The index of ``net``'s first layer that is neither ``Dense`` nor elementwise
    (:data:`ELEMENTWISE`); ``None`` if there is none (or ``net`` is an MLP)."""
    layers = getattr(net, "layers", ())
    return next((i for i, layer in enumerate(layers)
                 if type(layer) is not Dense and type(layer) not in ELEMENTWISE), None)


def backward(net, stack: DenseStack, params: Params, cache, delta_out: Array,
             feedback: Optional[Sequence[Array]] = None, direct: bool = False) -> Params:
    """The backward pass from ``delta_out`` with BP3 as a rule carries it.

    For an MLP it is :func:`jbp.model.backward_pass.backward_unchecked`. For a Sequential,
    the chain of its layers' backward methods from the last layer down to the first
    ``Dense``, except that above the first dense layer BP3 is
    :func:`jbp.model.backward_pass.transport`: ``feedback[l - 2]`` in place of ``W^(l)``,
    and with ``direct`` the output layer's delta in place of the layer's own.

    Args:
      net, stack: the network and its :func:`of`.
      params: the parameters the forward pass ran with.
      cache: its forward pass's cache.
      delta_out: ``dL/dz^(L)``, the delta at the network's last layer.
      feedback, direct: as for :func:`jbp.backward` (``rule.transport(params, feedback)``).

    Returns:
      The rule's update direction (the gradient without ``feedback`` and ``direct``),
      with the structure of ``params``; ``()`` for the layers below the first ``Dense``.
    """
    if isinstance(net, MLP):
        return backward_unchecked(params, cache, delta_out, net.activations, feedback, direct)
    L, first = len(stack.positions), stack.positions[0]
    dense_index = {i: l for l, i in enumerate(stack.positions)}
    grads, dy, delta_L = [()] * len(params), delta_out, None
    for i in range(len(params) - 1, first - 1, -1):
        layer, r = net.layers[i], cache.residuals[i]
        grads[i], dx = layer.backward(params[i], r, dy)  # a Dense's BP5, BP6 (BP3 below); else BP4
        l = dense_index.get(i)
        if l is None:
            dy = dx
            continue
        delta_L = dy if l == L - 1 else delta_L  # the output layer's delta, for direct
        if l > 0:  # BP3 as the rule carries it (unused: the Dense's own, through W)
            B = None if feedback is None else feedback[l - 1]
            dy = transport(dy, params[i].W, B, delta_L if direct else None)
    return tuple(grads)


def unit_outputs(net, stack: DenseStack, cache, names: Sequence[str]) -> tuple:
    """Per dense layer, what its units pass on through the last activation named in
    ``names`` after it, ``(batch, n_l)``; ``None`` where no such activation follows it.

    For an MLP it is ``cache.xs[l]`` where layer ``l``'s activation is in ``names``; for a
    Sequential, the output of the last such activation layer before the next ``Dense``
    (for the output layer: the network's output activation, else the last such layer
    after it).
    """
    out = []
    for pairs in stack.activations:
        where, name = next(((w, n) for w, n in reversed(pairs) if n in names), (None, None))
        if where is None:
            out.append(None)
        elif isinstance(net, MLP):
            out.append(cache.xs[where])
        elif where == OUTPUT:
            out.append(cache.out)
        else:  # an activation layer's residual is its output where its derivative reads that
            activation, r = get_activation(name), cache.residuals[where]
            out.append(r if activation.reads == "x" else activation.f(r))
    return tuple(out)
