"""The network description :class:`MLP` and its pure methods.

An ``MLP`` holds no arrays: it is a frozen, hashable description (sizes, activation
names, loss name, init scheme) that ``jax.jit`` treats as static. Parameters are a
separate pytree made by :meth:`MLP.init` and passed to every method.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.model.activations import HIDDEN_ACTIVATIONS, get_activation
from jbp.model.backward_pass import backward_unchecked
from jbp.model.base import Network, init_compiled
from jbp.model.forward_pass import Cache, forward_unchecked
from jbp.model.initializers import INITIALIZERS, init_weight
from jbp.model.losses import get_loss, output_head
from jbp.model.params import Layer, Params

Array = jax.Array


@dataclasses.dataclass(frozen=True, init=False)
class MLP(Network):
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
    output_activation: str
    loss_name: str
    init_name: str

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
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "hidden_activations", hidden)
        object.__setattr__(self, "output_activation", output_activation)
        object.__setattr__(self, "loss_name", loss)
        object.__setattr__(self, "init_name", init)

    @property
    def activations(self) -> tuple:
        """One activation name per layer, the output layer's last."""
        return self.hidden_activations + (self.output_activation,)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def init(self, key: Array, dtype=None) -> Params:
        """Draws parameters: ``W^(l)`` by the init scheme, ``b^(l) = 0``.

        Args:
          key: a PRNG key (``jax.random.key``).
          dtype: floating dtype; default float32, or float64 when x64 is enabled.

        Returns:
          A tuple of :class:`jbp.Layer`, ``W`` ``(n_out, n_in)`` and ``b`` ``(n_out,)``.
        """
        _validate.prng_key("key", key)
        return init_compiled(self, key, _validate.float_dtype("dtype", dtype))

    def init_unchecked(self, key: Array, dtype) -> Params:
        keys = jax.random.split(key, self.n_layers)
        return tuple(
            Layer(
                W=init_weight(self.init_name, k, n_in, n_out, dtype),
                b=jnp.zeros((n_out,), dtype),
            )
            for k, n_in, n_out in zip(keys, self.sizes[:-1], self.sizes[1:])
        )

    def forward(self, params: Params, x: Array) -> tuple[Array, Cache]:
        """The forward pass (BP1, BP2): ``(output, cache)``; see :func:`jbp.forward`."""
        x = _validate.inputs(self, params, x)
        return forward_unchecked(params, x, self.activations)

    def predict(self, params: Params, x: Array) -> Array:
        """The network's output after the output activation, ``(batch, n_L)``."""
        return self.forward(params, x)[0]

    def loss(self, params: Params, x: Array, y: Array) -> Array:
        """The loss, a scalar: the mean over the batch (see :mod:`jbp.model.losses`)."""
        x, y = _validate.inputs_and_targets(self, params, x, y)
        _, cache = forward_unchecked(params, x, self.activations)
        return get_loss(self.loss_name).value(cache.zs[-1], cache.xs[-1], y)

    def output_delta(self, cache: Cache, y: Array) -> Array:
        """``dL/dz^(L)``, the output layer's delta that starts the backward pass."""
        return self._output_delta(*_validate.cache_and_targets(self, cache, y))

    def _output_delta(self, cache: Cache, y: Array) -> Array:
        return get_loss(self.loss_name).delta(
            get_activation(self.output_activation), cache.zs[-1], cache.xs[-1], y
        )

    def loss_and_grad(self, params: Params, x: Array, y: Array) -> tuple[Array, Params]:
        """The loss and its hand-derived gradient (no autodiff).

        Returns:
          ``(loss, grads)``; ``grads`` has exactly the structure, shapes and dtypes of
          ``params``.
        """
        x, y = _validate.inputs_and_targets(self, params, x, y)
        _, cache = forward_unchecked(params, x, self.activations)
        loss = get_loss(self.loss_name).value(cache.zs[-1], cache.xs[-1], y)
        grads = backward_unchecked(params, cache, self._output_delta(cache, y), self.activations)
        return loss, grads

    def accuracy(self, params: Params, x: Array, y: Array) -> Array:
        """Fraction of correct predictions, for classification losses.

        ``cross_entropy``: argmax of the output vs the label (or the one-hot row's
        argmax). ``binary_cross_entropy``: output > 0.5 vs target > 0.5.
        """
        if self.loss_name == "mse":
            raise ValueError("accuracy needs a classification loss, but this network's loss is 'mse'")
        x, y = _validate.inputs_and_targets(self, params, x, y)
        p = forward_unchecked(params, x, self.activations)[0]
        if self.loss_name == "cross_entropy":
            labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
            return jnp.mean(jnp.argmax(p, axis=-1) == labels)
        return jnp.mean((p > 0.5) == (y > 0.5))
