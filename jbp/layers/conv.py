"""Convolutions, channels-last: :class:`Conv1D` on ``(batch, length, channels)`` and
:class:`Conv2D` on ``(batch, height, width, channels)``, with their backward written out
as two more convolutions and a sum.

A convolution is the seed's dense layer with shared weights. Take one spatial axis
(two work the same, index by index), input ``x`` ``(B, n, C)`` padded by ``lo`` zeros in
front (``x̃[i] = x[i - lo]``), kernel ``W`` ``(F, C, k)``, stride ``s``. Output position
``o`` sees the window ``x̃[o s : o s + k]``::

    z[b, o, f] = Σ_{t, c} W[f, c, t] x̃[b, o s + t, c] + b[f]                   BP1

which is BP1, ``z_j = Σ_i w_ji x_i + b_j``, for the neuron ``j = (o, f)`` whose inputs
are ``i = (o s + t, c)`` with the weight ``w_ji = W[f, c, t]``, the same for every
``o``. The seed's backward equations then read, with ``delta = dL/dz`` ``(B, o, F)``:

- BP3, ``dL/dx_i = Σ_j dL/dz_j w_ji`` over the neurons ``j`` that see ``i``: input
  position ``p`` (``= o s + t - lo``) is seen by every ``o`` with ``t = p + lo - o s`` in
  ``[0, k)``::

      dx[b, p, c] = Σ_{o, f} delta[b, o, f] W[f, c, p + lo - o s]

  a **transposed convolution**: ``delta`` dilated by ``s`` (``s - 1`` zeros between
  entries: ``lhs_dilation``), padded by ``k - 1 - lo`` in front and ``n + lo - (o_n -
  1) s - 1`` behind (``o_n`` outputs), correlated with the kernel flipped along its
  spatial axes and with ``F`` and ``C`` swapped, stride 1.
- BP5, ``dL/dw_ji = dL/dz_j x_i`` summed over every ``j`` that shares the weight (all
  positions ``o``) and over the batch::

      dW[f, c, t] = Σ_{b, o} delta[b, o, f] x̃[b, o s + t, c]

  the **correlation of the input with the delta**: a convolution whose "kernel" is
  ``delta`` dilated by ``s`` (``rhs_dilation``) and whose contraction runs over the
  batch, padded by ``lo`` in front and ``(o_n - 1) s + k - n - lo`` behind, so that it
  has ``k`` outputs.
- BP6, ``dL/db_j = dL/dz_j`` summed over the neurons that share ``b[f]``::

      db[f] = Σ_{b, o} delta[b, o, f]

Padding ``"VALID"``: ``lo = hi = 0``, ``o_n = floor((n - k) / s) + 1``; trailing inputs
that no window reaches get ``dx = 0``. ``"SAME"``: ``o_n = ceil(n / s)`` and
``lo + hi = max((o_n - 1) s + k - n, 0)``, ``lo = floor((lo + hi) / 2)``, as
``lax.conv_general_dilated`` pads.

**Per example** (for clipping, :mod:`jbp.model.per_example`): example ``i``'s BP5 is a
sum of outer products, one per output position, ``dW_i = Σ_o d_o a_oᵀ = D_iᵀ A_i`` with
``d_o = delta[i, o, :]`` (``F`` entries) and ``a_o`` the window ``x̃[i, o s : o s + k, :]``
flattened (``K C`` entries, ``K = prod(k)``), so its squared norm is either

- *direct*: form ``D_iᵀ A_i`` ``(F, K C)`` from the unfolded windows and square it,
  ``2 B T F K C`` flops and ``B F K C`` memory (``T`` the number of output positions); or
- the *ghost norm* (Li et al. 2022; for convolutions Bu et al. 2022): the Frobenius
  product of the two Gram matrices over positions,
  ``‖dW_i‖² = Σ_{o, o'} (a_o · a_o') (d_o · d_o')``, ``2 B T² (K C + F)`` flops and
  ``B T²`` memory, never forming ``dW_i``;

:func:`conv_weight_grad_sq_norms` takes the one with fewer flops: the ghost norm when
``T (K C + F) < F K C`` (few positions, many channels: deep layers), else the direct
form. (Bu et al.'s "mixed ghost clipping" compares memory, ``2 T²`` against ``F K C``.)
BP6's per-example norm is ``‖Σ_o d_o‖²`` (:func:`conv_bias_grad_sq_norms`).

Params ``jbp.Layer(W, b)``, as Dense's: ``W`` ``(features, in_channels, *kernel_size)``, out and in
first as ``(n_out, n_in)``; ``b`` ``(features,)``. Residuals: the input ``x``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from jbp import _validate
from jbp.layers import args
from jbp.layers.pool import patches
from jbp.layers.initializers import INITIALIZERS, init_array
from jbp.layers.params import Layer

Array = jax.Array

_SPATIAL = {1: "W", 2: "HW"}


def _specs(n: int) -> dict:
    s = _SPATIAL[n]
    return {
        "forward": ("N" + s + "C", "OI" + s, "N" + s + "C"),  # x (B, *S, C), W (F, C, *k) -> z (B, *O, F)
        "input": ("N" + s + "C", "IO" + s, "N" + s + "C"),  # delta (B, *O, F), W contracted over F -> (B, *S, C)
        "weight": ("C" + s + "N", "I" + s + "O", "CN" + s),  # x, delta contracted over B -> (F, C, *k)
    }


def pads(in_spatial: tuple, kernel: tuple, strides: tuple, padding: str) -> tuple:
    """``((lo, hi), ...)`` per spatial axis, as ``lax.conv_general_dilated`` pads."""
    return tuple(lax.padtype_to_pads(in_spatial, kernel, strides, padding))


def out_size(n: int, k: int, s: int, lo: int, hi: int) -> int:
    """Outputs along one axis: ``floor((n + lo + hi - k) / s) + 1``."""
    return (n + lo + hi - k) // s + 1


def conv(W: Array, b: Array, x: Array, strides: tuple, padding: tuple) -> Array:
    """BP1 with shared weights: ``z[b, o, f] = Σ_{t, c} W[f, c, t] x̃[b, o s + t, c] + b[f]``.

    Args:
      W: ``(F, C, *k)``; b: ``(F,)``; x: ``(B, *S, C)``.
      strides: ``s`` per spatial axis; padding: ``(lo, hi)`` per spatial axis.

    Returns:
      ``z``, ``(B, *O, F)``.
    """
    n = len(strides)
    return lax.conv_general_dilated(x, W, strides, padding, dimension_numbers=_specs(n)["forward"]) + b


def conv_input_grad(delta: Array, W: Array, in_spatial: tuple, strides: tuple, padding: tuple) -> Array:
    """BP3 with shared weights, a transposed convolution:
    ``dx[b, p, c] = Σ_{o, f} delta[b, o, f] W[f, c, p + lo - o s]``.

    ``delta`` dilated by the strides, padded by ``k - 1 - lo`` in front and
    ``n + lo - (o_n - 1) s - 1`` behind, correlated with ``W`` flipped along its spatial
    axes and contracted over ``F`` (see the module docstring).

    Args:
      delta: ``dL/dz``, ``(B, *O, F)``; W: ``(F, C, *k)``.
      in_spatial: ``S``, the input's spatial shape; strides, padding: as for :func:`conv`.

    Returns:
      ``dL/dx``, ``(B, *S, C)``.
    """
    n = len(strides)
    kernel, out_spatial = W.shape[2:], delta.shape[1:-1]
    transposed_pads = [
        (k - 1 - lo, size + lo - (o - 1) * s - 1)
        for size, k, s, (lo, _), o in zip(in_spatial, kernel, strides, padding, out_spatial)
    ]
    flipped = jnp.flip(W, axis=tuple(range(2, 2 + n)))
    return lax.conv_general_dilated(
        delta, flipped, (1,) * n, transposed_pads, lhs_dilation=strides, dimension_numbers=_specs(n)["input"]
    )


def conv_weight_grad(delta: Array, x: Array, kernel: tuple, strides: tuple, padding: tuple) -> Array:
    """BP5 with shared weights, the correlation of the input with the delta:
    ``dW[f, c, t] = Σ_{b, o} delta[b, o, f] x̃[b, o s + t, c]``.

    A convolution of ``x`` (padded by ``lo`` in front, ``(o_n - 1) s + k - n - lo``
    behind) with ``delta`` as the kernel, dilated by the strides, contracted over the
    batch.

    Args:
      delta: ``dL/dz``, ``(B, *O, F)``; x: ``(B, *S, C)``.
      kernel: ``k`` per spatial axis; strides, padding: as for :func:`conv`.

    Returns:
      ``dL/dW``, ``(F, C, *k)``.
    """
    n = len(strides)
    in_spatial, out_spatial = x.shape[1:-1], delta.shape[1:-1]
    correlation_pads = [
        (lo, (o - 1) * s + k - size - lo)
        for size, k, s, (lo, _), o in zip(in_spatial, kernel, strides, padding, out_spatial)
    ]
    return lax.conv_general_dilated(
        x, delta, (1,) * n, correlation_pads, rhs_dilation=strides, dimension_numbers=_specs(n)["weight"]
    )


def conv_bias_grad(delta: Array) -> Array:
    """BP6 with shared biases: ``db[f] = Σ_{b, o} delta[b, o, f]``.

    Args:
      delta: ``dL/dz``, ``(B, *O, F)``.

    Returns:
      ``dL/db``, ``(F,)``.
    """
    return delta.sum(axis=tuple(range(delta.ndim - 1)))


#: The ways :func:`conv_weight_grad_sq_norms` can take the per-example norms.
SQ_NORM_METHODS = ("ghost", "direct")


def sq_norm_method(positions: int, window: int, features: int) -> str:
    """The cheaper way to ``‖dW_i‖²`` for ``T = positions``, ``K C = window`` and
    ``F = features``: ``"ghost"`` when ``T (K C + F) < F K C``, else ``"direct"`` (the
    module docstring gives both costs)."""
    return "ghost" if positions * (window + features) < features * window else "direct"


def conv_weight_grad_sq_norms(delta: Array, x: Array, kernel: tuple, strides: tuple, padding: tuple,
                              method: str | None = None) -> Array:
    """BP5 with shared weights per example, squared: ``‖dL_i/dW‖²`` for each example ``i``.

    ``dW_i = D_iᵀ A_i``, ``D_i`` ``(T, F)`` the deltas at the ``T`` output positions and
    ``A_i`` ``(T, K C)`` the windows they saw (:func:`jbp.layers.pool.patches` of the
    padded input). ``"direct"`` squares ``D_iᵀ A_i``; ``"ghost"`` takes
    ``Σ_{o, o'} (A_i A_iᵀ)[o, o'] (D_i D_iᵀ)[o, o']`` without forming it (module docstring).

    Args:
      delta: ``dL_i/dz`` of each example's own loss, ``(B, *O, F)``; x: ``(B, *S, C)``.
      kernel, strides, padding: as for :func:`conv_weight_grad`.
      method: ``"ghost"``, ``"direct"`` or ``None`` (the cheaper: :func:`sq_norm_method`).

    Returns:
      ``(B,)``: the squared norm of each example's ``dL_i/dW``.
    """
    if method is not None:
        _validate.name("method", method, SQ_NORM_METHODS)
    batch, features = delta.shape[0], delta.shape[-1]
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    A = patches(padded, kernel, strides).reshape(batch, -1, math.prod(kernel) * x.shape[-1])  # (B, T, K C)
    D = delta.reshape(batch, -1, features)  # (B, T, F)
    if (method or sq_norm_method(A.shape[1], A.shape[2], features)) == "ghost":
        gram_a = jnp.einsum("bsj,btj->bst", A, A)  # a_o · a_o'
        gram_d = jnp.einsum("bsf,btf->bst", D, D)  # d_o · d_o'
        return jnp.sum(gram_a * gram_d, axis=(1, 2))
    dW = jnp.einsum("btf,btj->bfj", D, A)  # each example's BP5, D_iᵀ A_i
    return jnp.sum(dW * dW, axis=(1, 2))


def conv_bias_grad_sq_norms(delta: Array) -> Array:
    """BP6 with shared biases per example, squared: ``‖Σ_o delta[i, o, :]‖²``.

    Args:
      delta: ``dL_i/dz``, ``(B, *O, F)``.

    Returns:
      ``(B,)``: the squared norm of each example's ``dL_i/db``.
    """
    db = delta.sum(axis=tuple(range(1, delta.ndim - 1)))  # (B, F)
    return jnp.sum(db * db, axis=1)


class _Conv:
    """What Conv1D and Conv2D share; each sets ``features``, ``kernel``, ``steps``,
    ``padding`` and ``init_name``."""

    #: The field of the params that BP3 multiplies by: what a learning rule replaces.
    weights = "W"

    #: Whether the forward pass draws from its key in training mode.
    stochastic = False

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[Layer, tuple]:
        """``(Layer(W, b), output_shape)``; ``W`` by the init scheme with ``fan_in = C ·
        prod(k)``, ``fan_out = F · prod(k)``, ``b = 0``."""
        n = len(self.kernel)
        what = "(length, channels)" if n == 1 else "(height, width, channels)"
        key, shape, dtype = args.init_args(self, key, input_shape, dtype, n + 1, what)
        *spatial, channels = shape
        padding = pads(tuple(spatial), self.kernel, self.steps, self.padding)
        out = tuple(out_size(m, k, s, lo, hi) for m, k, s, (lo, hi) in zip(spatial, self.kernel, self.steps, padding))
        if min(out) < 1:
            raise ValueError(
                f"{type(self).__name__}'s kernel_size {self.kernel} is larger than the input's spatial shape "
                f"{tuple(spatial)} with padding='VALID'; use a smaller kernel or padding='SAME'"
            )
        receptive = math.prod(self.kernel)
        W = init_array(self.init_name, key, (self.features, channels, *self.kernel),
                       channels * receptive, self.features * receptive, dtype)
        return Layer(W=W, b=jnp.zeros((self.features,), dtype)), (*out, self.features)

    def _padding(self, x: Array) -> tuple:
        return pads(x.shape[1:-1], self.kernel, self.steps, self.padding)

    def forward(self, params: Layer, x: Array, *, key=None, train: bool = False) -> tuple[Array, Array]:
        """``(z, x)``: BP1 with shared weights, keeping the input for BP5."""
        return conv(params.W, params.b, x, self.steps, self._padding(x)), x

    def backward(self, params: Layer, x: Array, dy: Array) -> tuple[Layer, Array]:
        """``(Layer(dW, db), dx)`` from ``dy = delta = dL/dz``: BP5, BP6, BP3."""
        padding = self._padding(x)
        dW = conv_weight_grad(dy, x, self.kernel, self.steps, padding)  # BP5
        db = conv_bias_grad(dy)  # BP6
        dx = conv_input_grad(dy, params.W, x.shape[1:-1], self.steps, padding)  # BP3
        return Layer(W=dW, b=db), dx

    def per_example_sq_norms(self, params: Layer, x: Array, dy: Array) -> Array:
        """``‖dW_i‖² + ‖db_i‖²`` per example, ``(B,)``: the ghost norm or the direct
        per-example BP5, whichever is cheaper for this layer's shapes (module docstring)."""
        padding = self._padding(x)
        return conv_weight_grad_sq_norms(dy, x, self.kernel, self.steps, padding) + conv_bias_grad_sq_norms(dy)

    def weight_grad_operands(self, params: Layer, x: Array, dy: Array) -> tuple[Array, Array]:
        """BP5's two operands per output position, ``(A, D)``: ``A`` ``(B, T, C K)`` the
        windows each of the ``T`` positions saw, flattened in ``W``'s ``(C, *k)`` order,
        and ``D = delta`` ``(B, T, F)``, so that ``dW.reshape(F, C K) = Σ_{b, t} D[b, t]ᵀ
        A[b, t]`` (the module docstring's per-example form; K-FAC's factors read them,
        :mod:`jbp.curvature`)."""
        batch, channels = x.shape[0], x.shape[-1]
        padded = jnp.pad(x, ((0, 0), *self._padding(x), (0, 0)))
        windows = patches(padded, self.kernel, self.steps)  # (B, *O, K, C)
        windows = jnp.swapaxes(windows, -1, -2).reshape(batch, -1, channels * math.prod(self.kernel))
        return windows, dy.reshape(batch, -1, dy.shape[-1])


def _fields(layer, features, kernel_size, strides, padding, init, n):
    name = type(layer).__name__
    object.__setattr__(layer, "features", _validate.positive_int(f"{name}'s features", features))
    object.__setattr__(layer, "kernel_size", args.ints(f"{name}'s kernel_size", kernel_size, n))
    object.__setattr__(layer, "strides", args.ints(f"{name}'s {'stride' if n == 1 else 'strides'}", strides, n))
    object.__setattr__(layer, "padding", _validate.name(f"{name}'s padding", padding, args.PADDINGS))
    object.__setattr__(layer, "init_name", _validate.name(f"{name}'s init", init, tuple(INITIALIZERS)))


@dataclasses.dataclass(frozen=True, init=False)
class Conv1D(_Conv):
    """A 1-D convolution on ``(batch, length, channels)``; see the module docstring for
    the forward and the backward's derivation.

    Args:
      features: ``F``, output channels.
      kernel_size: ``k``, an int.
      stride: ``s``, an int (default 1).
      padding: ``"SAME"`` (default; ``ceil(n / s)`` outputs) or ``"VALID"``.
      init: the weight initialisation scheme (:mod:`jbp.layers.initializers`), stored as
        :attr:`init_name`.

    Attributes: ``features``, ``kernel_size`` and ``strides`` (1-tuples), ``padding``,
    ``init_name``.
    """

    features: int
    kernel_size: tuple
    strides: tuple
    padding: str
    init_name: str

    def __init__(self, features: int, kernel_size: int, stride: int = 1, padding: str = "SAME", init: str = "glorot_uniform"):
        _fields(self, features, kernel_size, stride, padding, init, 1)

    @property
    def kernel(self) -> tuple:
        return self.kernel_size

    @property
    def steps(self) -> tuple:
        return self.strides

    @property
    def stride(self) -> int:
        return self.strides[0]


@dataclasses.dataclass(frozen=True, init=False)
class Conv2D(_Conv):
    """A 2-D convolution on ``(batch, height, width, channels)``; see the module
    docstring for the forward and the backward's derivation (each spatial axis works as
    the one written out there).

    Args:
      features: ``F``, output channels.
      kernel_size: ``(kh, kw)``, or one int for both.
      strides: ``(sh, sw)``, or one int for both (default ``(1, 1)``).
      padding: ``"SAME"`` (default) or ``"VALID"``.
      init: the weight initialisation scheme (:mod:`jbp.layers.initializers`), stored as
        :attr:`init_name`.
    """

    features: int
    kernel_size: tuple
    strides: tuple
    padding: str
    init_name: str

    def __init__(self, features: int, kernel_size, strides=(1, 1), padding: str = "SAME", init: str = "glorot_uniform"):
        _fields(self, features, kernel_size, strides, padding, init, 2)

    @property
    def kernel(self) -> tuple:
        return self.kernel_size

    @property
    def steps(self) -> tuple:
        return self.strides
