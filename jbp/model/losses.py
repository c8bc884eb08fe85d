"""Losses ``L`` and the output-layer delta ``dL/dz^(L)`` that starts the backward pass.

Conventions (``B`` = batch size, ``m`` = number of outputs):

- ``mse``: ``L = (1/B) Σ_batch ½‖ŷ − y‖²``, so ``dL/dŷ = (ŷ − y) / B``. Works with any
  output activation; the output delta is then BP4 applied to ``dL/dŷ``.
- ``cross_entropy``: ``L = (1/B) Σ_batch −log p_label`` with ``p = softmax(z)``. ``y`` is
  integer labels ``(B,)`` or rows of class probabilities ``(B, m)`` (one-hot). The value
  is computed from the logits, ``logsumexp(z) − z_label``, and the output delta is the
  fused ``(p − y) / B``: both stay finite for logits of ±1e4. For a sequence, ``z`` is
  ``(B, T, m)`` and ``y`` labels ``(B, T)``: the mean is over every position, and a
  label :data:`IGNORE` (``-1``, padding) is left out of the sum and of the count ``N``
  (``dL/dz = (p − y) / N``, zero at ignored positions).
- ``binary_cross_entropy``: ``L = (1/(B m)) Σ −[y log p + (1−y) log(1−p)]`` with
  ``p = sigmoid(z)``, targets in ``[0, 1]``. Computed as ``softplus(z) − y z`` and with the
  fused delta ``(p − y) / (B m)``.

The fused deltas are the seed's chain rule with ``dL/dx`` and ``f'(z)`` multiplied out
by hand: for softmax + cross-entropy, ``dL/dx_j = −y_j / p_j`` times the softmax Jacobian
collapses to ``p − y``; for sigmoid + BCE, ``(p − y) / (p (1 − p))`` times ``p (1 − p)``
does. They are cheaper and never divide by a probability that rounded to zero.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.model.activations import ACTIVATIONS, Activation

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss on the output layer.

    Attributes:
      name: the name used by :class:`jbp.MLP`.
      value: ``(z, x, y) -> L``, a scalar; ``z`` and ``x`` are the output layer's
        pre-activations and activations, ``(B, m)``.
      delta: ``(activation, z, x, y) -> dL/dz``, ``(B, m)``: the output delta.
      output_activation: the activation this loss requires at the output (its delta
        is fused with it), or ``None`` if any activation works.
      default_output_activation: used by :class:`jbp.MLP` when none is given.
    """

    name: str
    value: Callable[[Array, Array, Array], Array]
    delta: Callable[[Activation, Array, Array, Array], Array]
    output_activation: Optional[str]
    default_output_activation: str


#: A sequence's label that marks padding: left out of the cross-entropy's mean.
IGNORE = -1


def _batch(x):
    return x.shape[0]


def _rows(z):
    """The number of rows ``z`` (..., m) holds: every index but the last."""
    return z.size // z.shape[-1]


def _labelled(z, y):
    """``(valid, N)`` for integer labels ``y`` (``z.shape[:-1]``): where a label is not
    :data:`IGNORE`, and how many (at least 1)."""
    valid = y != IGNORE
    return valid, jnp.maximum(jnp.sum(valid), 1).astype(z.dtype)


def _mse_value(z, x, y):
    return 0.5 * jnp.sum((x - y) ** 2) / _batch(x)


def _mse_delta(activation, z, x, y):
    dL_dx = (x - y) / _batch(x)
    return activation.delta(z, x, dL_dx)  # BP4 at the output layer


def _cross_entropy_value(z, x, y):
    log_normaliser = jax.nn.logsumexp(z, axis=-1)
    if y.ndim == z.ndim - 1:  # integer labels, one per row (per position of a sequence)
        valid, count = _labelled(z, y)
        label = jnp.where(valid, y, 0).astype(jnp.int32)
        z_label = jnp.take_along_axis(z, label[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(valid, log_normaliser - z_label, 0)) / count
    return jnp.sum(log_normaliser * jnp.sum(y, axis=-1) - jnp.sum(y * z, axis=-1)) / _rows(z)


def _cross_entropy_delta(activation, z, x, y):
    # Fused softmax + cross-entropy: dL/dz = (p - y) / N, with p = x = softmax(z).
    if y.ndim == z.ndim - 1:  # integer labels: subtract 1 at each row's label
        valid, count = _labelled(z, y)
        one_hot = jax.nn.one_hot(jnp.where(valid, y, 0), x.shape[-1], dtype=x.dtype)
        return jnp.where(valid[..., None], x - one_hot, 0) / count
    # rows of class probabilities; sum(y) is 1 for one-hot rows
    return (x * jnp.sum(y, axis=-1, keepdims=True) - y) / _rows(x)


def _binary_cross_entropy_value(z, x, y):
    # -[y log p + (1-y) log(1-p)] with p = sigmoid(z) equals softplus(z) - y z.
    return jnp.mean(jnp.logaddexp(z, 0) - y * z)


def _binary_cross_entropy_delta(activation, z, x, y):
    # Fused sigmoid + BCE: dL/dz = (p - y) / (B m), with p = x = sigmoid(z).
    return (x - y) / x.size


LOSSES: dict[str, Loss] = {
    l.name: l
    for l in (
        Loss("mse", _mse_value, _mse_delta, None, "identity"),
        Loss("cross_entropy", _cross_entropy_value, _cross_entropy_delta, "softmax", "softmax"),
        Loss(
            "binary_cross_entropy",
            _binary_cross_entropy_value,
            _binary_cross_entropy_delta,
            "sigmoid",
            "sigmoid",
        ),
    )
}


def get_loss(name: str | Loss) -> Loss:
    """Returns the :class:`Loss` called ``name`` (a Loss passes through)."""
    if isinstance(name, Loss):
        return name
    return LOSSES[_validate.name("loss", name, LOSSES)]


def output_head(loss: str, output_activation: Optional[str], n_outputs: int, outputs_name: str) -> str:
    """Checks a network's ``loss`` and ``output_activation`` and returns the output
    activation: by default the loss's natural one; a loss whose output delta is fused with
    its activation (softmax + cross-entropy, sigmoid + binary cross-entropy) needs that one.
    A softmax needs ``n_outputs >= 2`` (``outputs_name`` names where that number comes from)."""
    loss_fn = get_loss(_validate.name("loss", loss, LOSSES))
    if output_activation is None:
        output_activation = loss_fn.default_output_activation
    _validate.name("output_activation", output_activation, ACTIVATIONS)
    if loss_fn.output_activation not in (None, output_activation):
        raise ValueError(
            f"loss={loss!r} needs output_activation={loss_fn.output_activation!r} "
            f"(its output delta is fused with it), got {output_activation!r}"
        )
    if output_activation == "softmax" and n_outputs < 2:
        raise ValueError(
            f"softmax needs at least 2 outputs, got {outputs_name}={n_outputs} "
            f"(output_activation='softmax', loss={loss!r})"
        )
    return output_activation
