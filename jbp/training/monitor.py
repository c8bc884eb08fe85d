"""Per-layer diagnostics from inside the compiled loop: ``jbp.fit(..., monitor=True)``.

The backward pass computes, at every step, what is plotted to diagnose training: each
layer's delta, its weight gradient (or, under a learning rule, its update direction)
and the optimizer's update. With ``monitor=True`` :func:`jbp.fit` stores one row per
epoch in ``history.layer_stats``: a dict of arrays ``(epochs, layers)``, layer ``l`` in
column ``l - 1`` (the output layer last). The layers are the network's dense layers
(:mod:`jbp.model.dense_stack`): a :class:`jbp.MLP`'s, or the ``Dense`` layers of a
:class:`jbp.Sequential` of dense, activation, ``Flatten`` and ``Dropout`` layers, which
records what the same network written as an MLP records. No Python runs per step and it
compiles once.

Every step notes which units fired. The norms and angles are those of the epoch's last
step: :func:`jbp.fit` runs the epoch's other steps in its ``lax.scan`` and the last one
apart (:func:`epoch_steps`), so that only it computes them. The weights are read once
per epoch.

- ``"delta_norm"``: ``‖dL/db^(l)‖ = ‖Σ_batch delta^(l)‖`` (BP6), the layer's "speed of
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
  layer, the only activation here with a flat zero region (:data:`DEAD_ACTIVATIONS`; in
  a Sequential, the last ReLU layer before the next ``Dense``, or the output
  activation); NaN for the others.
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

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.model import dense_stack, rules
from jbp.model.params import Params
from jbp.training import stochastic
from jbp.training.update import rule_args

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


def fit_args(net, params: Params, rule, feedback, monitor, loss_and_grad, mesh) -> tuple:
    """:func:`jbp.fit`'s checks of ``rule``, ``feedback`` and ``monitor``; draws the
    feedback weights when they are not given. Returns ``(rule, feedback, monitor)``."""
    rule = rules.backprop() if rule is None else rule
    rules.check_network(rule, net)
    if feedback is None:
        feedback = rule.init(net, params)
    rule, feedback = rule_args(net, params, rule, feedback, loss_and_grad)
    monitor = _validate.flag("monitor", monitor)
    if monitor:
        dense_stack.of(net, "monitor=True")  # the statistics are the dense layers'
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


def _stack(net) -> dense_stack.DenseStack:
    return dense_stack.of(net, "monitor=True")


def angle(a: Array, b: Array) -> Array:
    """The angle between ``a`` and ``b`` (flattened) in degrees, by Kahan's formula
    ``2 atan2(‖â − b̂‖, ‖â + b̂‖)``: exactly 0 for equal vectors, accurate near 0 and 180
    (where ``arccos`` of the cosine is not); 90 if either is zero."""
    unit = lambda v: v / jnp.maximum(jnp.sqrt(jnp.sum(v * v)), jnp.finfo(v.dtype).tiny)
    a, b = unit(a.ravel()), unit(b.ravel())
    return jnp.degrees(2 * jnp.arctan2(jnp.sqrt(jnp.sum((a - b) ** 2)), jnp.sqrt(jnp.sum((a + b) ** 2))))


def start(net, params: Params) -> Watch:
    """An epoch's :class:`Watch` before its first step."""
    sizes = _stack(net).sizes[1:]
    zeros = jnp.zeros((len(sizes),), _stats_dtype(params))
    return Watch(tuple(jnp.zeros((n,), bool) for n in sizes), zeros, zeros, zeros)


def epoch_steps(step: Callable, carry: tuple, batches: Any, steps: int, epoch: Array) -> tuple:
    """An epoch's mini-batch steps, as :func:`jbp.fit`'s ``lax.scan`` takes them, but the
    last one apart with ``last=True``: only it pays for the norms and angles.

    Args:
      step: ``(carry, batch, epoch, i, last=False) -> (carry, loss)``, fit's step.
      carry: ``(params, opt_state, watch)``.
      batches: the epoch's batches, each leaf ``(steps, batch_size, ...)``.
      steps: their number.
      epoch: the epoch's absolute index.

    Returns:
      ``(carry, losses)``, ``losses`` ``(steps,)`` in the order of the steps.
    """
    batch = lambda i: jax.tree.map(lambda a: a[i], batches)
    carry, losses = jax.lax.scan(lambda c, i: step(c, batch(i), epoch, i), carry, jnp.arange(steps - 1))
    carry, loss = step(carry, batch(steps - 1), epoch, steps - 1, last=True)
    return carry, jnp.append(losses, loss)


def train_step(net, optimizer: optax.GradientTransformation, rule: rules.Rule, params: Params,
               opt_state: Any, feedback: tuple, x: Array, y: Array, watch: Watch, *,
               key: Optional[Array] = None, last: bool = False):
    """:func:`jbp.train_step` under ``rule``, adding what this step shows to ``watch``:
    which units fired, and for the epoch's ``last`` step its norms and angles.

    Returns:
      ``(params, opt_state, loss, watch)``.
    """
    stack = _stack(net)
    p = rules.forward_backward(net, rule, params, feedback, x, y, **stochastic.training(net, key))
    updates, opt_state = optimizer.update(p.update, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    outputs = dense_stack.unit_outputs(net, stack, p.cache, DEAD_ACTIVATIONS)
    watch = watch._replace(alive=tuple(  # only where units can die
        alive if out is None else alive | _fired(out) for alive, out in zip(watch.alive, outputs)))
    if last:
        watch = _norms_and_angles(net, stack, rule, params, p, watch)
    return new_params, opt_state, p.loss, watch


def _fired(out: Array) -> Array:
    """Which units of a ReLU's output ``(batch, n)`` are non-zero on some example.

    ReLU outputs are ``>= 0``, so a unit fired exactly where its sum over the batch is
    ``> 0`` (a sum of non-negative floats is at least its largest term). The sum is
    taken as a product with a vector of ones: on CPU a library matrix-vector product,
    faster than XLA's reduction over the batch axis (on a ``(32, 256)`` output, 0.3 µs
    against 2.6 µs, of a ~70 µs step of ``scripts/bench_monitor.py``'s 64-256-10 network)."""
    return jnp.ones((out.shape[0],), out.dtype) @ out > 0


def _norms_and_angles(net, stack, rule, params, p: rules.Pass, watch: Watch) -> Watch:
    """``watch`` with this step's ``‖db‖``, ``‖dW‖`` and, under a rule other than
    backprop, each hidden layer's angle to the true gradient (one more backward pass)."""
    dtype = _stats_dtype(params)
    update = stack.dense(p.update)
    alignment = jnp.zeros((len(update),), dtype)  # backprop's update is the gradient
    if not rule.is_backprop:
        true = stack.dense(dense_stack.backward(net, stack, params, p.cache, p.delta_out))
        hidden = [angle(u.W.astype(dtype), g.W.astype(dtype)) for u, g in zip(update[:-1], true[:-1])]
        alignment = jnp.stack(hidden + [jnp.zeros((), dtype)])  # the output layer's is the gradient
    return watch._replace(
        delta_norm=jnp.stack([_norm(u.b, dtype) for u in update]),
        grad_norm=jnp.stack([_norm(u.W, dtype) for u in update]),
        alignment=alignment,
    )


def finish(net, watch: Watch, start: Params, params: Params) -> dict:
    """The epoch's row of every statistic, ``(layers,)`` each, from its :class:`Watch`
    and the parameters at its ``start`` and end."""
    stack = _stack(net)
    dtype = _stats_dtype(params)
    before, after = stack.dense(start), stack.dense(params)
    W_norm = jnp.stack([_norm(layer.W, dtype) for layer in before])
    measured = [any(name in DEAD_ACTIVATIONS for _, name in pairs) for pairs in stack.activations]
    dead = [
        jnp.sum(~alive).astype(dtype) / alive.size if m else jnp.full((), jnp.nan, dtype)
        for m, alive in zip(measured, watch.alive)
    ]
    return {
        "delta_norm": watch.delta_norm,
        "grad_norm": watch.grad_norm,
        "weight_norm": jnp.stack([_norm(layer.W, dtype) for layer in after]),
        "update_ratio": jnp.stack([_norm(b.W - a.W, dtype) for a, b in zip(before, after)]) / W_norm,
        "dead_fraction": jnp.stack(dead),
        "alignment": watch.alignment,
    }


def empty_history(net, params: Params, epochs: int) -> dict:
    """``History.layer_stats`` before any epoch: NaN ``(epochs, layers)`` arrays."""
    layers = len(_stack(net).positions)
    return {name: jnp.full((epochs, layers), jnp.nan, _stats_dtype(params)) for name in LAYER_STATS}


def record(history: Optional[dict], i: Array, row: Optional[dict]) -> Optional[dict]:
    """``history`` with epoch ``i``'s ``row`` written in (``None`` when not monitoring)."""
    if history is None:
        return None
    return {name: history[name].at[i].set(row[name]) for name in LAYER_STATS}
