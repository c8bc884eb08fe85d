"""The layer protocol: what a layer is, the extension point of jbp.

A layer is a frozen, hashable description (static under ``jax.jit``, holding no arrays)
with three pure methods. Shapes exclude the batch axis; data always carries one.

- ``init(key, input_shape, dtype) -> (params, output_shape)``: draws the layer's
  parameters for inputs of shape ``(batch, *input_shape)`` and says the shape of its
  outputs.
- ``forward(params, x, *, key=None, train=False) -> (y, residuals)``: the layer's
  output and what its backward needs, chosen to be cheap (an activation's output, a
  max pool's winners). ``key`` is a PRNG key for stochastic layers (dropout), used only
  when ``train`` is true.
- ``backward(params, residuals, dy) -> (dparams, dx)``: hand-derived, no autodiff.
  ``dy = dL/dy`` has the shape of ``y``; ``dparams = dL/dparams`` has exactly the
  structure, shapes and dtypes of ``params`` (``()`` for a layer without parameters)
  and ``dx = dL/dx`` those of ``x``.

One method is optional, for per-example clipping (:func:`jbp.per_example_norms`,
:func:`jbp.clipped_grad`, DP-SGD in :func:`jbp.fit`):

- ``per_example_sq_norms(params, residuals, dy) -> (B,)``: for each example ``i``,
  ``‖dparams_i‖²`` summed over the leaves, ``dparams_i`` being what ``backward`` gives
  for row ``i`` of ``dy`` alone. :class:`jbp.layers.Dense` (the outer-product
  identity), the convolutions (ghost norm or direct) and :class:`jbp.layers.LayerNorm`
  have it. A layer with parameters without it is handled by ``jax.vmap`` of its own
  ``backward`` over the batch, which forms every example's ``dparams`` (``B`` times
  its parameters in memory) and needs every residual leaf to carry the batch axis
  first. :func:`jbp.check_layer` checks the method against autodiff.

Two optional methods, for a network's last layer that computes the cross-entropy itself
(:class:`jbp.layers.FusedLMHead`, :class:`jbp.layers.TiedLM`); a :class:`jbp.Sequential`
with ``loss="cross_entropy"`` then uses them in ``loss`` and ``loss_and_grad``, and
never forms the last layer's output:

- ``fused_loss(params, x, y, *, key=None, train=False) -> (loss, residuals)``: the
  loss from the layer's input ``x`` and the integer targets ``y``;
- ``fused_loss_backward(params, residuals) -> (dparams, dx)``: its gradient.

Two optional methods make a layer stateful, its state carried from one window of a
long sequence to the next (truncated BPTT; :class:`jbp.layers.LSTM`, ``GRU``, ``RNN``).
Such a layer's ``forward`` also takes the pair ``(x, state)`` and its ``backward`` then
returns ``dx`` as ``(dx, dstate)``:

- ``init_state(batch, dtype) -> state``: the state a stream starts from (zeros);
- ``final_state(residuals) -> state``: the state after the window, from the forward's
  residuals, in the same structure: what the next window starts from.

A :class:`jbp.Sequential` hands each stateful layer its part of the network's state
(``state=`` of its ``forward``, ``loss``, ``loss_and_grad``) and drops ``dstate``: no
gradient crosses the window's edge.

A layer whose inputs are integer ids has the attribute ``input_vocab`` (ids lie in
``[0, input_vocab)``); its ``backward`` returns ``dx = None``.

Two optional attributes say what a layer is to the rest of jbp:

- ``weights``: the name of the field of its parameters (a NamedTuple) that BP3
  multiplies by, ``"W"`` for :class:`jbp.layers.Dense`, :class:`jbp.layers.Perceptron`
  and the convolutions. A learning rule (:mod:`jbp.rules`) replaces it in BP3, and the
  monitor records the layer. A layer with parameters but no ``weights`` trains under
  backprop only.
- ``stochastic``: whether its forward draws from its key in training mode (``True`` for
  :class:`jbp.layers.Dropout`). A layer without the attribute is assumed to be; a network
  none of whose layers is takes no key, and training passes it none.

One more optional method is for K-FAC (:mod:`jbp.curvature`), on a layer whose params are a
:class:`jbp.Layer` ``(W, b)``:

- ``weight_grad_operands(params, residuals, dy) -> (a, delta)``: BP5's two operands,
  ``a`` ``(B, T, n_in)`` and ``delta = dL/dz`` ``(B, T, n_out)`` over ``T`` positions
  that share the weights (1 for a dense layer), such that ``dW.reshape(n_out, n_in) =
  Σ_{b, t} delta[b, t]ᵀ a[b, t]`` and ``db = Σ_{b, t} delta[b, t]``. :class:`jbp.layers.Dense`,
  :class:`jbp.layers.Perceptron` and the convolutions have it.

A layer whose weights are several matrices, each shared by ``T`` positions (attention's
projections, a recurrent layer's ``W`` and ``U``, a block of layers), gives K-FAC one
Kronecker block per matrix in two parts:

- its params type (a NamedTuple class) declares the blocks, ``kronecker_blocks = ((weight_path,
  bias_path or None), ...)``, each path a tuple of field names from the params to a
  weight ``(n_out, n_in)`` and to its bias ``(n_out,)`` (:class:`jbp.layers.AttentionParams`,
  :class:`jbp.layers.recurrent.RecurrentParams`); a ``jbp.Layer`` is one block ``(W, b)``,
  and a plain tuple of params holds its entries' blocks, in order (:func:`weight_blocks`);
- the layer computes their operands, ``kronecker_operands(params, residuals, dy) ->
  ((a, delta), ...)``, one pair per block in :func:`weight_blocks`' order, each as
  ``weight_grad_operands``' (``dW = Σ_{b,t} delta[b, t]ᵀ a[b, t]``, ``db = Σ_{b,t} delta[b, t]``).
  :class:`jbp.layers.CausalSelfAttention`, the recurrent layers and
  :class:`jbp.layers.Residual` have it. Parameters in no block (a norm's gain, a GRU's
  ``b_h``) keep their plain gradient.

Per-example gradients assume that a layer treats the examples of a batch independently
(row ``i`` of ``y`` depends on row ``i`` of ``x`` only), as every built-in layer does.

This is :func:`jbp.check_vjp`'s ``forward``/``backward`` pair with ``params`` first, so
:func:`jbp.check_layer` checks any layer against ``jax.vjp`` of its forward. Any object
with these methods is a layer (:class:`LayerProtocol`, a ``typing.Protocol``); nothing
needs to subclass anything. Residuals are a pytree of arrays; a shape that the backward
needs is carried by :class:`StaticShape`, a pytree node with no leaves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax

from jbp.layers.params import Layer

Array = jax.Array

#: The methods every layer has.
METHODS = ("init", "forward", "backward")


@runtime_checkable
class LayerProtocol(Protocol):
    """A layer: ``init``, ``forward`` and ``backward`` (see the module docstring)."""

    def init(self, key: Array, input_shape: tuple, dtype: Any) -> tuple[Any, tuple]:
        """``(params, output_shape)`` for inputs of shape ``(batch, *input_shape)``."""
        ...

    def forward(self, params: Any, x: Array, *, key: Array | None = None, train: bool = False) -> tuple[Array, Any]:
        """``(y, residuals)``."""
        ...

    def backward(self, params: Any, residuals: Any, dy: Array) -> tuple[Any, Array]:
        """``(dparams, dx)``, hand-derived."""
        ...


def check_layer_object(arg: str, value: Any) -> Any:
    """Checks that ``value`` is a layer: hashable, with callable ``init``, ``forward``
    and ``backward``; returns it. The error names what is missing."""
    missing = [m for m in METHODS if not callable(getattr(value, m, None))]
    if missing or isinstance(value, type):
        what = f"a class, {value.__name__}, not an instance" if isinstance(value, type) else (
            f"{type(value).__name__} {value!r:.60} without {', '.join(missing)}"
        )
        raise TypeError(
            f"{arg} must be a layer (an object with init, forward and backward methods; see "
            f"jbp.layers.LayerProtocol), got {what}"
        )
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"{arg} must be a hashable layer (a frozen description, static under jit), got "
            f"unhashable {type(value).__name__}; make it a frozen dataclass"
        ) from None
    return value


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class StaticShape:
    """A shape carried in residuals as static pytree metadata (no leaves, no memory):
    what pooling and flattening need to give ``dx`` the shape of ``x``."""

    shape: tuple


def weight_blocks(params: Any, prefix: tuple = ()) -> tuple:
    """K-FAC's weight blocks in ``params``: ``((weight_path, bias_path or None), ...)``,
    each path a tuple of field names and tuple indices from ``params``. A ``jbp.Layer``
    with a ``W`` of two or more axes is one block ``(W, b)``; a params NamedTuple whose
    class has ``kronecker_blocks`` holds those; a plain tuple or list holds its entries'
    blocks, in order; anything else none."""
    if isinstance(params, Layer):
        return ((prefix + ("W",), prefix + ("b",)),) if getattr(params.W, "ndim", 0) >= 2 else ()
    declared = getattr(type(params), "kronecker_blocks", None)
    if declared is not None:
        return tuple((prefix + tuple(w), None if b is None else prefix + tuple(b)) for w, b in declared)
    if type(params) in (tuple, list):
        return tuple(block for i, p in enumerate(params) for block in weight_blocks(p, prefix + (i,)))
    return ()
