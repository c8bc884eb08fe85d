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
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.layers.dense import Dense, Perceptron, PerceptronResiduals
from jbp.model import base, forward_pass
from jbp.layers.activations import HIDDEN_ACTIVATIONS
from jbp.model.forward_pass import Cache
from jbp.layers.initializers import INITIALIZERS
from jbp.model.losses import output_head
from jbp.layers.params import Params
from jbp.model.sequential import Sequential, SequentialCache, compiled

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
        layer. One of ``jbp.layers.activations.HIDDEN_ACTIVATIONS``.
      output_activation: the output layer's activation; by default the loss's natural
        one (``identity`` for ``mse``, ``softmax`` for ``cross_entropy``, ``sigmoid``
        for ``binary_cross_entropy``).
      loss: ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"`` (see
        :mod:`jbp.model.losses`). Stored as :attr:`loss_name`; :meth:`loss` is the method.
      init: weight initialisation scheme (see :mod:`jbp.layers.initializers`). Stored as
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
        sizes = check_sizes(sizes)
        names = check_activation_names(activation)
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
        base.params(self, params)
        cache = mlp_cache(self, cache)
        _validate.same_tree("delta_out", delta_out, "cache.zs[-1]", cache.zs[-1])
        return compiled(type(self).backward_unchecked, self, params, self.layers_cache(cache), delta_out)

    def output_delta(self, cache: Cache, y: Array) -> Array:
        """``dL/dz^(L)``, the output layer's delta that starts the backward pass."""
        cache, y = cache_and_targets(self, cache, y)
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
        return mlp_params(self, value)

    def check_input_shape(self, x: Array) -> None:
        """Checks ``x`` ``(batch, sizes[0])``."""
        mlp_input_shape(self, x)


# --- Argument checks at the boundary. ---------------------------------------------


def check_sizes(value: Any) -> tuple:
    """Checks layer widths: at least two positive ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or np.ndim(value) != 1:
        raise TypeError(
            f"sizes must be a sequence of layer widths like (2, 8, 1), got {value!r}"
        )
    if len(value) < 2:
        raise ValueError(
            f"sizes must have at least 2 entries (inputs and outputs), got {tuple(value)!r}"
        )
    return tuple(_validate.positive_int(f"sizes[{i}]", n) for i, n in enumerate(value))


def check_activation_names(value: Any) -> tuple:
    """``activation`` of :class:`jbp.MLP` as a tuple: one name, or a sequence of names."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list)):
        return tuple(value)
    raise TypeError(
        f"activation must be a name or a sequence of names (one per hidden layer), "
        f"got {_validate.describe(value)}"
    )


def mlp_params(net, value: Any) -> np.dtype:
    """:class:`jbp.MLP`'s params, in the seed's names: a tuple of :class:`jbp.Layer` of the
    sizes' shapes; returns their dtype."""
    if not isinstance(value, tuple):  # a list would not match the tuple of gradients
        raise TypeError(
            f"params must be a tuple of jbp.Layer (from net.init), got {type(value).__name__}"
        )
    if len(value) != net.n_layers:
        raise ValueError(
            f"params has {len(value)} layers but the network has {net.n_layers} "
            f"(sizes={net.sizes})"
        )
    dtypes = []
    for l, layer in enumerate(value):
        n_in, n_out = net.sizes[l], net.sizes[l + 1]
        for leaf, a, expected, where in zip(
            "Wb", forward_pass.layer_arrays(l, layer), ((n_out, n_in), (n_out,)),
            (f"(sizes[{l + 1}], sizes[{l}])", f"(sizes[{l + 1}],)"),
        ):
            if tuple(a.shape) != expected:
                raise ValueError(
                    f"params[{l}].{leaf} has shape {tuple(a.shape)} but the network expects "
                    f"{expected} {where} for layer {l + 1}"
                )
            dtypes.append(a.dtype)
    return _validate.one_dtype("params", dtypes)


def mlp_input_shape(net, x) -> None:
    """:class:`jbp.MLP`'s ``x``: ``(batch, sizes[0])``."""
    if x.ndim != 2:
        raise ValueError(
            f"x must be 2-D (batch, features) with {net.sizes[0]} features, got shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[1] != net.sizes[0]:
        raise ValueError(
            f"x has {x.shape[1]} features but the network expects {net.sizes[0]} (sizes[0])"
        )


def cache_and_targets(net, cache, y) -> tuple:
    """For :meth:`jbp.MLP.output_delta`: a cache of ``net.forward`` and targets for it;
    returns ``(cache, y)``, the cache as JAX arrays and ``y`` as for :func:`inputs_and_targets`."""
    cache = mlp_cache(net, cache)
    z = cache.zs[-1]
    y = base.targets(net, y, z.shape[0], z.dtype, like=("the cache (cache.zs[-1])", "the cache's arrays"))
    return cache, y


def mlp_cache(net, cache):
    """For :meth:`jbp.MLP.output_delta` and ``backward``: the :class:`jbp.Cache` of
    ``net.forward``, as JAX arrays."""
    zs, xs = forward_pass.cache_arrays(cache)
    if len(zs) != net.n_layers or len(xs) != net.n_layers + 1:
        raise ValueError(
            f"cache holds {len(zs)} zs and {len(xs)} xs but the network has {net.n_layers} "
            f"layers; use the cache of net.forward(params, x)"
        )
    z, out = zs[-1], xs[-1]
    if z.ndim != 2 or z.shape[1] != net.sizes[-1] or out.shape != z.shape:
        raise ValueError(
            f"cache.zs[-1] has shape {tuple(z.shape)} and cache.xs[-1] {tuple(out.shape)} but "
            f"the network's output is (batch, {net.sizes[-1]}) (sizes[-1])"
        )
    if not jnp.issubdtype(z.dtype, jnp.floating) or out.dtype != z.dtype:
        raise TypeError(f"cache must hold arrays of one floating dtype, got {z.dtype} and {out.dtype}")
    return forward_pass.as_jax(cache)
