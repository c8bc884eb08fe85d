"""Per-layer diagnostics from inside the compiled loop: ``jbp.fit(..., monitor=True)``.

The backward pass computes, at every step, what is plotted to diagnose training: each
layer's delta, its weight gradient (or, under a learning rule, its update direction)
and the optimizer's update. With ``monitor=True`` :func:`jbp.fit` (and
:func:`jbp.fit_stream`) stores one row per epoch in ``history.layer_stats``: a dict of
arrays ``(epochs, layers)``, one column per layer with weights (:func:`jbp.rules.weighted`:
``Dense``, ``Perceptron``, the convolutions), first to last; on a :class:`jbp.MLP` layer
``l`` is column ``l - 1``. Every network whose layers with parameters all have weights is monitored, and the same
network written as an MLP or as a Sequential of dense and activation layers records
the same. No Python runs per step and it compiles once.

Every step notes which units fired. The norms and angles are those of the epoch's last
step: :func:`jbp.fit` runs the epoch's other steps in its ``lax.scan`` and the last one
apart (:func:`epoch_steps`), so that only it computes them. The weights are read once
per epoch.

- ``"delta_norm"``: ``‖dL/db^(l)‖ = ‖Σ_batch delta^(l)‖`` (BP6; the norm of every
  parameter gradient but the weights'), the layer's "speed of
  learning" (Nielsen, ch. 5), at the epoch's last step (its last mini-batch, at the
  parameters before that step's update). Under a rule other than backprop it is the
  norm of the rule's bias update direction.
- ``"grad_norm"``: ``‖dL/dW^(l)‖`` (Frobenius; BP5), at the epoch's last step; under a
  rule, of the rule's direction.
- ``"weight_norm"``: ``‖W^(l)‖`` at the end of the epoch.
- ``"update_ratio"``: ``‖ΔW^(l)‖ / ‖W^(l)‖`` with ``ΔW`` the epoch's change of ``W`` and
  ``W`` its value before the epoch (inf or NaN where that is 0). With one step per
  epoch (full batch) it is the step's update-to-weight ratio; with ``S`` steps that
  agree it is about ``S`` times the per-step ratio, less where they cancel.
- ``"dead_fraction"``: the fraction of the layer's units whose output is exactly 0 on
  every example of the epoch (every step's batch). Measured where a ReLU follows the
  layer, the only activation here with a flat zero region (:data:`DEAD_ACTIVATIONS`: a
  layer's own activation, as a ``Perceptron``'s, else the last ReLU layer before the
  next layer with weights; a unit is one entry of that output, per position for a
  convolution); NaN for the others.
- ``"alignment"``: the angle in degrees between the rule's update direction for ``W``
  and the true gradient (Lillicrap et al.'s alignment), at the epoch's last step. It is
  0 under backprop and in the output layer under every rule (their directions are the
  gradient), written as 0 without being computed; 90 where either vector is zero.
  Under another rule it costs one more backward pass (the true gradient's BP3-BP5)
  per epoch.

Why one step and not the mean over the epoch's steps (as before, until the cost was
measured): a step of small networks takes 20-100 µs on a CPU, and every reduction added
to it shows. Interleaved measurements of the compiled loop on
``scripts/bench_monitor.py``'s networks: ``‖dW‖`` and ``‖db‖`` of every layer at every
step added 4-20% (backprop), and the true gradient's backward at every step 65-70%
(feedback alignment), against the 5% the monitor may cost. One step per epoch is a
sample: it follows the same trends across epochs, with the noise of one mini-batch
(``experiments/README.md``'s tables were measured again with it). ``update_ratio`` and
``weight_norm`` were per epoch already, and ``dead_fraction`` still sees every batch,
at the cost of one product per ReLU layer and step (:func:`_fired`).
``scripts/bench_monitor.py`` measures the cost (README, "Learning rules and diagnostics").
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.layers import chain
from jbp.model import rules
from jbp.layers.params import Params

Array = jax.Array

#: The keys of ``History.layer_stats``.
LAYER_STATS = ("delta_norm", "grad_norm", "weight_norm", "update_ratio", "dead_fraction", "alignment")
#: Activations whose units can be dead (exactly 0 on every input).
DEAD_ACTIVATIONS = ("relu",)


class Watch(NamedTuple):
    """What an epoch's steps leave for its row: which units fired (every step), and the
    last step's norms and angles, ``(layers,)`` each."""

    alive: tuple  # per layer, (n_l,) bool: the unit's output was non-zero on some example
    delta_norm: Array
    grad_norm: Array
    alignment: Array


class Layers(NamedTuple):
    """The monitored layers of a network (static: from the network alone).

    Attributes:
      positions: the indices of its layers with weights (:func:`jbp.rules.weighted`).
      watched: per monitored layer, the index of the layer whose output is its units'
        (a ReLU, :data:`DEAD_ACTIVATIONS`), or ``None`` where no ReLU follows it.
      units: per monitored layer, the number of those units (1 where none).
    """

    positions: tuple
    watched: tuple
    units: tuple


@functools.lru_cache(maxsize=256)
def layers_of(net) -> Layers:
    """``net``'s :class:`Layers`; a ``TypeError`` naming a layer that has parameters but
    no weights."""
    positions = rules.weighted(net, "monitor=True")
    ends = positions[1:] + (net.n_layers,)
    watched = tuple(
        next((j for j in reversed(range(i, end)) if getattr(net.layers[j], "activation", None) in DEAD_ACTIVATIONS),
             None)
        for i, end in zip(positions, ends)
    )
    units = tuple(1 if j is None else math.prod(net.output_shapes[j]) for j in watched)
    return Layers(positions, watched, units)


def fit_args(net, params: Params, rule, feedback, monitor, loss_and_grad, mesh) -> tuple:
    """:func:`jbp.fit`'s checks of ``rule``, ``feedback`` and ``monitor``; draws the
    feedback weights when they are not given. Returns ``(rule, feedback, monitor)``."""
    rule = rules.backprop() if rule is None else rule
    rules.check_network(rule, net)
    if feedback is None:
        feedback = rule.init(net, params)
    feedback = rules.check_args(rule, net, params, feedback, loss_and_grad)
    monitor = _validate.flag("monitor", monitor)
    if monitor:
        layers_of(net)  # the statistics are the layers with weights'
    if monitor and loss_and_grad is not None:
        raise ValueError(
            "monitor=True reads the hand-derived backward pass's deltas, so it cannot be "
            "combined with loss_and_grad; pass one or the other"
        )
    if mesh is not None and monitor:
        raise ValueError("mesh cannot be combined with monitor=True yet; train data parallel with monitor=False")
    return rule, feedback, monitor


def _stats_dtype(params: Params):
    return jnp.promote_types(jax.tree.leaves(params)[0].dtype, jnp.float32)


def _norm(a: Array, dtype) -> Array:
    return jnp.sqrt(jnp.sum(jnp.square(a.astype(dtype))))


def _weights(net, i: int, p) -> Array:
    return getattr(p, net.layers[i].weights)


def _others_norm(net, i: int, p, dtype) -> Array:
    """The norm of every leaf of layer ``i``'s ``p`` but its weights (a bias: BP6's ``db``)."""
    others = p._replace(**{net.layers[i].weights: jnp.zeros((0,), dtype)})
    return jnp.sqrt(sum((jnp.sum(jnp.square(a.astype(dtype))) for a in jax.tree.leaves(others)), jnp.zeros((), dtype)))


def angle(a: Array, b: Array) -> Array:
    """The angle between ``a`` and ``b`` (flattened) in degrees, by Kahan's formula
    ``2 atan2(‖â − b̂‖, ‖â + b̂‖)``: exactly 0 for equal vectors, accurate near 0 and 180
    (where ``arccos`` of the cosine is not); 90 if either is zero."""
    unit = lambda v: v / jnp.maximum(jnp.sqrt(jnp.sum(v * v)), jnp.finfo(v.dtype).tiny)
    a, b = unit(a.ravel()), unit(b.ravel())
    return jnp.degrees(2 * jnp.arctan2(jnp.sqrt(jnp.sum((a - b) ** 2)), jnp.sqrt(jnp.sum((a + b) ** 2))))


def start(net, params: Params) -> Watch:
    """An epoch's :class:`Watch` before its first step."""
    units = layers_of(net).units
    zeros = jnp.zeros((len(units),), _stats_dtype(params))
    return Watch(tuple(jnp.zeros((n,), bool) for n in units), zeros, zeros, zeros)


def epoch_steps(step: Callable, carry: tuple, batches: Any, last_batch: Any, epoch: Array) -> tuple:
    """An epoch's mini-batch steps, as :func:`jbp.fit`'s ``lax.scan`` takes them, but the
    last one apart with ``last=True``: only it pays for the norms and angles.

    The scan takes its batches as plain ``fit``'s does, as slices of its ``xs`` (indexing
    the epoch's batches inside the step instead cost index arithmetic in every step, and
    slicing the last one off the gathered batches a copy of the epoch's data).

    Args:
      step: ``(carry, batch, epoch, i, last=False) -> (carry, loss)``, fit's step.
      carry: ``(params, opt_state, watch, state)``.
      batches: the epoch's batches but its last, each leaf ``(steps - 1, batch_size, ...)``.
      last_batch: its last batch, each leaf ``(batch_size, ...)``.
      epoch: the epoch's absolute index.

    Returns:
      ``(carry, losses)``, ``losses`` ``(steps,)`` in the order of the steps.
    """
    last = jax.tree.leaves(batches)[0].shape[0]
    carry, losses = jax.lax.scan(lambda c, b_i: step(c, b_i[0], epoch, b_i[1]), carry,
                                 (batches, jnp.arange(last)))
    carry, loss = step(carry, last_batch, epoch, last, last=True)
    return carry, jnp.append(losses, loss)


def observe(net, rule, params: Params, p: rules.Pass, watch: Watch, last: bool) -> Watch:
    """``watch`` with what one step's pass ``p`` shows: which units fired, and for the
    epoch's ``last`` step its norms and angles."""
    monitored = layers_of(net)
    alive = []
    for seen, j in zip(watch.alive, monitored.watched):
        if j is None:  # only where units can die
            alive.append(seen)
        else:
            out = p.cache.outputs[j]
            alive.append(seen | _fired(out.reshape(out.shape[0], -1)))
    watch = watch._replace(alive=tuple(alive))
    if last:
        watch = _norms_and_angles(net, monitored, rule, params, p, watch)
    return watch


def _fired(out: Array) -> Array:
    """Which units of a ReLU's output ``(batch, n)`` are non-zero on some example.

    ReLU outputs are ``>= 0``, so a unit fired exactly where its sum over the batch is
    ``> 0`` (a sum of non-negative floats is at least its largest term). The sum is
    taken as a product with a vector of ones: on CPU a library matrix-vector product,
    faster than XLA's reduction over the batch axis (on a ``(32, 256)`` output, 0.3 µs
    against 2.6 µs, of a ~70 µs step of ``scripts/bench_monitor.py``'s 64-256-10 network)."""
    return jnp.ones((out.shape[0],), out.dtype) @ out > 0


def _norms_and_angles(net, monitored: Layers, rule, params, p: rules.Pass, watch: Watch) -> Watch:
    """``watch`` with this step's ``‖db‖``, ``‖dW‖`` and, under a rule other than
    backprop, each layer's angle to the true gradient (one more backward pass)."""
    dtype = _stats_dtype(params)
    positions = monitored.positions
    alignment = jnp.zeros((len(positions),), dtype)  # backprop's update is the gradient
    if not rules.is_backprop(rule):
        true, _, _ = chain.backward(net.layers, params, p.cache.residuals, p.delta_out)
        hidden = [angle(_weights(net, i, p.update[i]).astype(dtype), _weights(net, i, true[i]).astype(dtype))
                  for i in positions[:-1]]
        alignment = jnp.stack(hidden + [jnp.zeros((), dtype)])  # the last layer's is the gradient
    return watch._replace(
        delta_norm=jnp.stack([_others_norm(net, i, p.update[i], dtype) for i in positions]),
        grad_norm=jnp.stack([_norm(_weights(net, i, p.update[i]), dtype) for i in positions]),
        alignment=alignment,
    )


def finish(net, watch: Watch, start: Params, params: Params) -> dict:
    """The epoch's row of every statistic, ``(layers,)`` each, from its :class:`Watch`
    and the parameters at its ``start`` and end."""
    monitored = layers_of(net)
    dtype = _stats_dtype(params)
    before = [_weights(net, i, start[i]) for i in monitored.positions]
    after = [_weights(net, i, params[i]) for i in monitored.positions]
    W_norm = jnp.stack([_norm(W, dtype) for W in before])
    dead = [
        jnp.sum(~alive).astype(dtype) / alive.size if j is not None else jnp.full((), jnp.nan, dtype)
        for j, alive in zip(monitored.watched, watch.alive)
    ]
    return {
        "delta_norm": watch.delta_norm,
        "grad_norm": watch.grad_norm,
        "weight_norm": jnp.stack([_norm(W, dtype) for W in after]),
        "update_ratio": jnp.stack([_norm(b - a, dtype) for a, b in zip(before, after)]) / W_norm,
        "dead_fraction": jnp.stack(dead),
        "alignment": watch.alignment,
    }


def empty_history(net, params: Params, epochs: int) -> dict:
    """``History.layer_stats`` before any epoch: NaN ``(epochs, layers)`` arrays."""
    layers = len(layers_of(net).positions)
    return {name: jnp.full((epochs, layers), jnp.nan, _stats_dtype(params)) for name in LAYER_STATS}


def record(history: Optional[dict], i: Array, row: Optional[dict]) -> Optional[dict]:
    """``history`` with epoch ``i``'s ``row`` written in (``None`` when not monitoring)."""
    if history is None:
        return None
    return {name: history[name].at[i].set(row[name]) for name in LAYER_STATS}
