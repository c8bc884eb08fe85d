"""The multi-layer perceptron :class:`MLP`: a :class:`jbp.Sequential` of the seed's layers.

An ``MLP`` is a network of layers like any other, built here: hidden layer ``l`` is a
:class:`jbp.layers.Perceptron` (``z = W x + b`` and ``x = f(z)``, BP1 and BP2; its
backward BP4, BP5, BP6 and BP3), the output layer a :class:`jbp.layers.Dense` whose
activation is the network's output head. Every capability runs on it through the one
loop of :mod:`jbp.layers.chain`. What is the MLP's own is only its description
(``sizes``, ``activations``), the seed's draw of the initial weights, and the seed's
view of the forward cache, :class:`jbp.Cache` (``zs``, ``xs``), in its public methods.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.layers.dense import Dense, Perceptron, PerceptronResiduals
from jbp.model.activations import HIDDEN_ACTIVATIONS
from jbp.model.forward_pass import Cache
from jbp.model.initializers import INITIALIZERS
from jbp.model.losses import output_head
from jbp.model.params import Params
from jbp.model.sequential import Sequential, SequentialCache

Array = jax.Array


@dataclasses.dataclass(frozen=True, init=False)
class MLP(Sequential):
    """A multi-layer perceptron trained by hand-derived backpropagation.

    Example::

      net = jbp.MLP(sizes=(2, 8, 1), activation="tanh", output_activation="sigmoid", loss="mse")
      params = net.init(jax.random.key(0))
      loss, grads = net.loss_and_grad(params, x, y)

    Args:
      sizes: layer widths ``(n_0, n_1, ..., n_L)``: inputs, hidden layers, outputs.
      activation: the hidden layers' activation, one name for all or one per hidden
        layer. One of ``jbp.model.activations.HIDDEN_ACTIVATIONS``.
      output_activation: the output layer's activation; by default the loss's natural
        one (``identity`` for ``mse``, ``softmax`` for ``cross_entropy``, ``sigmoid``
        for ``binary_cross_entropy``).
      loss: ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"`` (see
        :mod:`jbp.model.losses`). Stored as :attr:`loss_name`; :meth:`loss` is the method.
      init: weight initialisation scheme (see :mod:`jbp.model.initializers`). Stored as
        :attr:`init_name`; :meth:`init` is the method.

    Attributes:
      sizes: the layer widths, as given.
      hidden_activations: a tuple of activation names, one per hidden layer.
      output_activation: the output layer's activation name.
      loss_name: the loss's name (the constructor's ``loss``).
      init_name: the init scheme's name (the constructor's ``init``).
    """

    sizes: tuple
    hidden_activations: tuple

    def __init__(
        self,
        sizes: Sequence[int],
        activation: Union[str, Sequence[str]] = "tanh",
        output_activation: Optional[str] = None,
        loss: str = "mse",
        init: str = "glorot_uniform",
    ):
        sizes = _validate.sizes(sizes)
        names = _validate.activation_names(activation)
        for name in names:
            if name == "softmax":
                raise ValueError(
                    "activation='softmax' is not allowed: softmax is only for the output layer "
                    "(output_activation='softmax'); hidden layers take one of "
                    + ", ".join(HIDDEN_ACTIVATIONS)
                )
            _validate.name("activation", name, HIDDEN_ACTIVATIONS)
        n_hidden = len(sizes) - 2
        hidden = names * n_hidden if isinstance(activation, str) else names
        if len(hidden) != n_hidden:
            raise ValueError(
                f"activation has {len(hidden)} names but sizes={sizes} has {n_hidden} "
                "hidden layers; give one name, or one per hidden layer"
            )
        output_activation = output_head(loss, output_activation, sizes[-1], "sizes[-1]")
        _validate.name("init", init, tuple(INITIALIZERS))
        layers = tuple(Perceptron(n, a, init) for n, a in zip(sizes[1:-1], hidden)) + (Dense(sizes[-1], init),)
        super().__init__((sizes[0],), layers, loss, output_activation, init)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "hidden_activations", hidden)

    def __repr__(self) -> str:
        return (f"MLP(sizes={self.sizes}, hidden_activations={self.hidden_activations}, "
                f"output_activation={self.output_activation!r}, loss_name={self.loss_name!r}, "
                f"init_name={self.init_name!r})")

    @property
    def activations(self) -> tuple:
        """One activation name per layer, the output layer's last."""
        return self.hidden_activations + (self.output_activation,)

    #: How errors name the output's width.
    output_name = "sizes[-1]"

    def init_unchecked(self, key: Array, dtype) -> Params:
        """The seed's draw: layer ``l``'s ``W`` from the ``l``-th of ``split(key, L)``, ``b = 0``."""
        keys = jax.random.split(key, self.n_layers)
        return tuple(layer.init(k, (n_in,), dtype)[0] for layer, k, n_in in zip(self.layers, keys, self.sizes))

    # --- The seed's view of the forward cache, jbp.Cache. ------------------------------

    def cache_view(self, cache: SequentialCache) -> Cache:
        """The :class:`jbp.Cache` (``zs``, ``xs``) of a forward pass's cache."""
        hidden = cache.residuals[:-1]
        x = hidden[0].x_prev if hidden else cache.residuals[0]  # the input x^(0)
        return Cache(tuple(r.z for r in hidden) + (cache.z,), (x,) + tuple(r.x for r in hidden) + (cache.out,))

    def layers_cache(self, cache: Cache) -> SequentialCache:
        """The layers' cache of a :class:`jbp.Cache`: each layer's residuals from it."""
        zs, xs = cache.zs, cache.xs
        hidden = tuple(PerceptronResiduals(xs[l], zs[l], xs[l + 1]) for l in range(self.n_layers - 1))
        return SequentialCache(hidden + (xs[-2],), zs[-1], xs[-1])

    def forward(self, params: Params, x: Array, *, key: Optional[Array] = None,
                train: bool = False) -> tuple[Array, Cache]:
        """The forward pass (BP1, BP2): ``(output, cache)``; see :func:`jbp.forward`."""
        out, cache = super().forward(params, x, key=key, train=train)
        return out, self.cache_view(cache)

    def backward(self, params: Params, cache: Cache, delta_out: Array) -> tuple:
        """The backward pass from ``delta_out = dL/dz^(L)``: ``(grads, dL/dx^(0))``; see
        :meth:`jbp.Sequential.backward`. ``cache`` is :meth:`forward`'s :class:`jbp.Cache`."""
        _validate.params(self, params)
        cache = _validate.mlp_cache(self, cache)
        _validate.same_tree("delta_out", delta_out, "cache.zs[-1]", cache.zs[-1])
        return self.backward_unchecked(params, self.layers_cache(cache), delta_out)

    def output_delta(self, cache: Cache, y: Array) -> Array:
        """``dL/dz^(L)``, the output layer's delta that starts the backward pass."""
        cache, y = _validate.cache_and_targets(self, cache, y)
        return self.output_delta_unchecked(SequentialCache((), cache.zs[-1], cache.xs[-1]), y)

    # --- The MLP's own argument checks, in the seed's names. ---------------------------

    def leaf_names(self, params) -> tuple:
        """The checkpoint's name of each leaf: ``params/{l}/W``, ``params/{l}/b``."""
        return tuple(f"params/{l}/{leaf}" for l in range(self.n_layers) for leaf in ("W", "b"))

    def description(self, layer_description=None) -> dict:
        """The JSON-ready description a checkpoint keeps: the MLP's constructor arguments."""
        return {
            "sizes": list(self.sizes),
            "activation": list(self.hidden_activations),
            "output_activation": self.output_activation,
            "loss": self.loss_name,
            "init": self.init_name,
        }

    def check_key(self, key) -> None:
        """An MLP has no stochastic layers: it takes no key."""
        if key is not None:
            raise ValueError(
                "key is for networks with stochastic layers (jbp.Sequential); "
                "MLP takes none, leave key=None"
            )

    def check_params(self, value) -> object:
        """Checks a tuple of :class:`jbp.Layer` of the sizes' shapes; returns its dtype."""
        return _validate.mlp_params(self, value)

    def check_input_shape(self, x: Array) -> None:
        """Checks ``x`` ``(batch, sizes[0])``."""
        _validate.mlp_input_shape(self, x)
