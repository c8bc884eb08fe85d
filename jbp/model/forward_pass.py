"""The forward pass (BP1, BP2), keeping what the backward pass needs: the seed's view.

:func:`forward` runs the one forward loop (:func:`jbp.layers.chain.forward`) over the
seed's layers, a :class:`jbp.layers.Dense` (BP1, :func:`jbp.layers.dense.dense`; imported
here, so ``jbp.model.forward_pass.dense`` still names it) and an
:class:`jbp.layers.ActivationLayer` (BP2, :attr:`jbp.layers.activations.Activation.f`) per
layer, and reads the :class:`Cache` off their outputs.

Batch convention: data is ``(batch, features)``. Per layer, ``z = x @ W.T + b`` is the
seed's ``z_j = Σ_i w_ji x_i + b_j`` for every row of the batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.layers import chain
from jbp.layers.activation import ActivationLayer
from jbp.layers.dense import Dense, dense  # BP1 lives with the dense layer
from jbp.layers.activations import ACTIVATIONS, Activation
from jbp.layers.params import Params

Array = jax.Array


class Cache(NamedTuple):
    """Everything the forward pass computed, for the backward pass.

    Attributes:
      zs: ``z^(l)`` for ``l = 1..L``, each ``(batch, n_l)``.
      xs: ``x^(l)`` for ``l = 0..L``, each ``(batch, n_l)``; ``xs[0]`` is the input and
        ``xs[-1]`` the network's output.
    """

    zs: tuple
    xs: tuple


def forward(
    params: Params, x: Array, activations: Sequence[str | Activation]
) -> tuple[Array, Cache]:
    """The seed's forward pass: BP1 then BP2, layer after layer.

    Args:
      params: one :class:`Layer` per layer.
      x: inputs, ``(batch, n_0)``.
      activations: one activation (name or :class:`Activation`) per layer, the
        output layer's last.

    Returns:
      ``(out, cache)``: the output ``x^(L)``, ``(batch, n_L)``, and the :class:`Cache`
      of every ``z^(l)`` and ``x^(l)``.
    """
    return forward_unchecked(params, forward_inputs(params, x, activations), activations)


def seed_layers(params: Params, activations: Sequence[str | Activation]) -> tuple:
    """The seed's layers of ``params`` as a chain: ``Dense`` (BP1) then its activation
    (BP2) for each layer; with :func:`seed_params` they are what :func:`forward` runs."""
    return tuple(
        layer
        for p, activation in zip(params, activations, strict=True)
        for layer in (Dense(p.W.shape[0]), ActivationLayer(activation))
    )


def seed_params(params: Params) -> tuple:
    """``params`` for :func:`seed_layers`: each ``Layer`` followed by its activation's ``()``."""
    return tuple(entry for p in params for entry in (p, ()))


def forward_unchecked(params: Params, x: Array, activations: Sequence[str | Activation]) -> tuple[Array, Cache]:
    """:func:`forward` on arguments already checked."""
    outputs, _ = chain.forward(seed_layers(params, activations), seed_params(params), x)
    zs, xs = outputs[0::2], outputs[1::2]  # BP1's z and BP2's x, layer after layer
    return xs[-1], Cache(zs, (x,) + xs)


# --- Argument checks at the boundary. ---------------------------------------------


def params_and_activations(value: Any, activations: Any) -> np.dtype:
    """For the pure functions (no network): ``params`` that chain up, ``W^(l)``
    ``(n_l, n_{l-1})`` and ``b^(l)`` ``(n_l,)``, and one activation per layer."""
    if not isinstance(value, tuple):  # a list would not match the tuple of gradients
        raise TypeError(
            f"params must be a tuple of jbp.Layer (from net.init), got {type(value).__name__}"
        )
    if not value:
        raise ValueError("params has no layers; it needs at least one jbp.Layer")
    if isinstance(activations, str) or not isinstance(activations, (tuple, list)):
        raise TypeError(
            f"activations must be a sequence with one activation per layer (net.activations), "
            f"got {_validate.describe(activations)}"
        )
    if len(activations) != len(value):
        raise ValueError(
            f"activations has {len(activations)} entries but params has {len(value)} layers; "
            "give one activation per layer (net.activations)"
        )
    for l, a in enumerate(activations):
        if not isinstance(a, Activation):
            _validate.name(f"activations[{l}]", a, ACTIVATIONS)
    dtypes = []
    for l, layer in enumerate(value):
        W, b = layer_arrays(l, layer)
        if W.ndim != 2:
            raise ValueError(f"params[{l}].W must be 2-D (n_out, n_in), got shape {tuple(W.shape)}")
        if tuple(b.shape) != (W.shape[0],):
            raise ValueError(
                f"params[{l}].b has shape {tuple(b.shape)} but params[{l}].W has "
                f"{W.shape[0]} rows; expected ({W.shape[0]},)"
            )
        if l and W.shape[1] != value[l - 1].W.shape[0]:
            raise ValueError(
                f"params[{l}].W has {W.shape[1]} columns but layer {l} has "
                f"{value[l - 1].W.shape[0]} outputs (params[{l - 1}].W has shape "
                f"{tuple(value[l - 1].W.shape)})"
            )
        dtypes += [W.dtype, b.dtype]
    return _validate.one_dtype("params", dtypes)


def forward_inputs(params_, x, activations):
    """For :func:`jbp.forward`: params, activations and ``x`` ``(batch, n_0)``; returns
    ``x`` in the params' dtype."""
    dtype = params_and_activations(params_, activations)
    n_in = params_[0].W.shape[1]
    x = _validate.array("x", x)
    if x.ndim != 2:
        raise ValueError(
            f"x must be 2-D (batch, features) with {n_in} features (params[0].W.shape[1]), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[1] != n_in:
        raise ValueError(
            f"x has {x.shape[1]} features but params[0].W expects {n_in} (its shape is "
            f"{tuple(params_[0].W.shape)})"
        )
    return _validate.same_float("x", x, dtype)


def cache_arrays(cache) -> tuple:
    zs, xs = getattr(cache, "zs", None), getattr(cache, "xs", None)
    if (
        not isinstance(zs, (tuple, list)) or not isinstance(xs, (tuple, list))
        or not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in (*zs, *xs))
    ):
        raise TypeError(
            f"cache must be the jbp.Cache of arrays that jbp.forward returns, got "
            f"{type(cache).__name__}"
        )
    return zs, xs


def as_jax(cache):
    return cache._replace(zs=tuple(map(jnp.asarray, cache.zs)), xs=tuple(map(jnp.asarray, cache.xs)))


def layer_arrays(l: int, layer: Any) -> tuple:
    """``(W, b)`` of ``params[l]``, checked to be floating arrays."""
    W, b = getattr(layer, "W", None), getattr(layer, "b", None)
    if not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in (W, b)):
        raise TypeError(
            f"params[{l}] must be a jbp.Layer with arrays W and b, got {type(layer).__name__}"
        )
    for leaf, a in (("W", W), ("b", b)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"params[{l}].{leaf} must be floating, got dtype {a.dtype}")
    return W, b
