"""Per-layer diagnostics from inside the compiled loop: ``jbp.fit(..., monitor=True)``.

The backward pass computes, at every step, what is plotted to diagnose training: each
layer's delta, its weight gradient (or, under a learning rule, its update direction)
and the optimizer's update. With ``monitor=True`` the training step keeps per-layer
sums of them in the ``lax.scan`` carry, and :func:`jbp.fit` stores one row per epoch in
``history.layer_stats``: a dict of arrays ``(epochs, layers)``, layer ``l`` in column
``l - 1`` (the output layer last). No Python runs per step and it compiles once.

- ``"delta_norm"``: ``‖dL/db^(l)‖ = ‖Σ_batch delta^(l)‖`` (BP6), the layer's "speed of
  learning" (Nielsen, ch. 5), the mean over the epoch's steps. Under a rule other than
  backprop it is the norm of the rule's bias update direction.
- ``"grad_norm"``: ``‖dL/dW^(l)‖`` (Frobenius; BP5), the mean over the epoch's steps;
  under a rule, of the rule's direction.
- ``"weight_norm"``: ``‖W^(l)‖`` at the end of the epoch.
- ``"update_ratio"``: ``‖ΔW^(l)‖ / ‖W^(l)‖`` with ``ΔW`` the epoch's change of ``W`` and
  ``W`` its value before the epoch (inf or NaN where that is 0). With one step per
  epoch (full batch) it is the step's update-to-weight ratio; with ``S`` steps that
  agree it is about ``S`` times the per-step ratio, less where they cancel. Taken
  per epoch because a per-step ``‖ΔW‖`` and ``‖W‖`` cost two passes over the weights
  every step: on the 64-256-10 network of ``scripts/bench_monitor.py`` they added about
  10% to fit's CPU time in a quick interleaved measurement, against the 5% allowed.
- ``"dead_fraction"``: the fraction of the layer's units whose output is exactly 0 on
  every example of the epoch. Measured for ReLU layers, the only activation here with
  a flat zero region (:data:`DEAD_ACTIVATIONS`); NaN for the others.
- ``"alignment"``: the angle in degrees between the rule's update direction for ``W``
  and the true gradient (Lillicrap et al.'s alignment), the mean over the epoch's
  steps. It is 0 under backprop and in the output layer under every rule (their
  directions are the gradient), written as 0 without being computed; 90 where either
  vector is zero. Under another rule, computing it costs one more backward pass per
  step (the true gradient's BP3-BP5).

Per step the monitor adds, for each layer, ``‖dW‖``, ``‖db‖`` and which units fired (and,
under a rule, the true gradient and the angle); the rest is computed once per epoch.
``scripts/bench_monitor.py`` measures the cost.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.model import rules
from jbp.model.backward_pass import backward_unchecked
from jbp.model.network import MLP
from jbp.model.params import Params
from jbp.training.update import rule_args

Array = jax.Array

#: The keys of ``History.layer_stats``.
LAYER_STATS = ("delta_norm", "grad_norm", "weight_norm", "update_ratio", "dead_fraction", "alignment")
#: Activations whose units can be dead (exactly 0 on every input).
DEAD_ACTIVATIONS = ("relu",)


class Sums(NamedTuple):
    """An epoch's running per-layer sums, ``(layers,)`` each, and which units fired."""

    delta_norm: Array
    grad_norm: Array
    alignment: Array
    alive: tuple  # per layer, (n_l,) bool: the unit's output was non-zero on some example


def fit_args(net, params: Params, rule, feedback, monitor, loss_and_grad, mesh) -> tuple:
    """:func:`jbp.fit`'s checks of ``rule``, ``feedback`` and ``monitor``; draws the
    feedback weights when they are not given. Returns ``(rule, feedback, monitor)``."""
    rule = rules.backprop() if rule is None else rule
    rules.check_network(rule, net)
    if feedback is None:
        feedback = rule.init(net, params)
    rule, feedback = rule_args(net, params, rule, feedback, loss_and_grad)
    monitor = _validate.flag("monitor", monitor)
    if monitor and not isinstance(net, MLP):
        raise TypeError(f"monitor=True needs a jbp.MLP (it reads the dense layers' deltas), got a {type(net).__name__}")
    if monitor and loss_and_grad is not None:
        raise ValueError(
            "monitor=True reads the hand-derived backward pass's deltas, so it cannot be "
            "combined with loss_and_grad; pass one or the other"
        )
    if mesh is not None and (monitor or not rule.is_backprop):
        raise ValueError(
            f"mesh cannot be combined with {'monitor=True' if monitor else f'rule {rule.name!r}'} "
            "yet; train data parallel with backprop and monitor=False"
        )
    return rule, feedback, monitor


def _stats_dtype(params: Params):
    return jnp.promote_types(jax.tree.leaves(params)[0].dtype, jnp.float32)


def _norm(a: Array, dtype) -> Array:
    return jnp.sqrt(jnp.sum(jnp.square(a.astype(dtype))))


def angle(a: Array, b: Array) -> Array:
    """The angle between ``a`` and ``b`` (flattened) in degrees, by Kahan's formula
    ``2 atan2(‖â − b̂‖, ‖â + b̂‖)``: exactly 0 for equal vectors, accurate near 0 and 180
    (where ``arccos`` of the cosine is not); 90 if either is zero."""
    unit = lambda v: v / jnp.maximum(jnp.sqrt(jnp.sum(v * v)), jnp.finfo(v.dtype).tiny)
    a, b = unit(a.ravel()), unit(b.ravel())
    return jnp.degrees(2 * jnp.arctan2(jnp.sqrt(jnp.sum((a - b) ** 2)), jnp.sqrt(jnp.sum((a + b) ** 2))))


def start(params: Params) -> Sums:
    """Zero sums for an epoch."""
    zeros = jnp.zeros((len(params),), _stats_dtype(params))
    alive = tuple(jnp.zeros(layer.b.shape, bool) for layer in params)
    return Sums(zeros, zeros, zeros, alive)


def train_step(net, optimizer: optax.GradientTransformation, rule: rules.Rule, params: Params,
               opt_state: Any, feedback: tuple, x: Array, y: Array, sums: Sums):
    """:func:`jbp.train_step` under ``rule``, adding this step's statistics to ``sums``.

    Returns:
      ``(params, opt_state, loss, sums)``.
    """
    dtype = _stats_dtype(params)
    p = rules.forward_backward(net, rule, params, feedback, x, y)
    updates, opt_state = optimizer.update(p.update, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if rule.is_backprop:
        alignment = sums.alignment
    else:
        true = backward_unchecked(params, p.cache, p.delta_out, net.activations)
        hidden = [angle(u.W.astype(dtype), g.W.astype(dtype)) for u, g in zip(p.update[:-1], true[:-1])]
        alignment = sums.alignment + jnp.stack(hidden + [jnp.zeros((), dtype)])  # the output layer's is the gradient
    sums = Sums(
        delta_norm=sums.delta_norm + jnp.stack([_norm(u.b, dtype) for u in p.update]),
        grad_norm=sums.grad_norm + jnp.stack([_norm(u.W, dtype) for u in p.update]),
        alignment=alignment,
        alive=tuple(
            a | jnp.any(x_l != 0, axis=0) if name in DEAD_ACTIVATIONS else a  # only where units can die
            for a, x_l, name in zip(sums.alive, p.cache.xs[1:], net.activations)
        ),
    )
    return new_params, opt_state, p.loss, sums


def finish(net, sums: Sums, start: Params, params: Params, steps: int) -> dict:
    """The epoch's row of every statistic, ``(layers,)`` each, from its ``steps`` steps'
    sums and the parameters at its ``start`` and end."""
    dtype = _stats_dtype(params)
    W_norm = jnp.stack([_norm(layer.W, dtype) for layer in start])
    dead = [
        jnp.sum(~alive).astype(dtype) / alive.size if name in DEAD_ACTIVATIONS else jnp.full((), jnp.nan, dtype)
        for name, alive in zip(net.activations, sums.alive)
    ]
    return {
        "delta_norm": sums.delta_norm / steps,
        "grad_norm": sums.grad_norm / steps,
        "weight_norm": jnp.stack([_norm(layer.W, dtype) for layer in params]),
        "update_ratio": jnp.stack([_norm(b.W - a.W, dtype) for a, b in zip(start, params)]) / W_norm,
        "dead_fraction": jnp.stack(dead),
        "alignment": sums.alignment / steps,
    }


def empty_history(params: Params, epochs: int) -> dict:
    """``History.layer_stats`` before any epoch: NaN ``(epochs, layers)`` arrays."""
    return {name: jnp.full((epochs, len(params)), jnp.nan, _stats_dtype(params)) for name in LAYER_STATS}


def record(history: Optional[dict], i: Array, row: Optional[dict]) -> Optional[dict]:
    """``history`` with epoch ``i``'s ``row`` written in (``None`` when not monitoring)."""
    if history is None:
        return None
    return {name: history[name].at[i].set(row[name]) for name in LAYER_STATS}
