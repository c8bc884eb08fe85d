"""The gradient-descent update (BP7) and one whole training step.

BP7 is :func:`gradient_descent`. :func:`train_step` is one iteration of the seed's
algorithm with any optax optimizer in place of BP7; with ``optax.sgd(lr)`` it is
exactly BP7. :func:`make_train_step` compiles it for a loop of your own, updating the
parameters in place.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.curvature import backward as curvature
from jbp.model import base
from jbp.model import rules
from jbp.layers.params import Params
from jbp.training import monitor as monitoring

Array = jax.Array


def gradient_descent(params: Params, grads: Params, lr: float) -> Params:
    """BP7: ``w ← w − α dL/dw`` and ``b ← b − α dL/db`` for every layer.

    Args:
      params: the parameters.
      grads: gradients with the structure of ``params``.
      lr: the learning rate ``α``.

    Returns:
      Updated parameters, with the structure, shapes and dtypes of ``params``.
    """
    _validate.same_tree("grads", grads, "params", params)
    _validate.real("lr", lr, finite=True)
    # lr in each leaf's dtype: a float32 lr must not turn bfloat16 params into float32.
    return jax.tree.map(lambda w, dw: w - jnp.asarray(lr, w.dtype) * dw, params, grads)


def train_step(
    net,
    optimizer: optax.GradientTransformation,
    params: Params,
    opt_state: Any,
    x: Array,
    y: Array,
    loss_and_grad: Optional[Callable] = None,
    *,
    key: Optional[Array] = None,
    rule=None,
    feedback: tuple = (),
    state: Optional[tuple] = None,
) -> tuple[Params, Any, Array]:
    """One iteration: forward pass, hand-derived backward pass, optimizer update.

    Pure; ``jax.jit`` it with ``net``, ``optimizer`` (and ``rule``) static, e.g.
    ``jax.jit(train_step, static_argnums=(0, 1), static_argnames="rule")``. It checks its
    arguments and runs :func:`step`, the one training step of :func:`jbp.fit`,
    :func:`jbp.fit_stream` and multi-process training.

    Args:
      loss_and_grad: ``(params, x, y) -> (loss, grads)`` in place of the hand-derived
        ``net.loss_and_grad``, e.g. JAX's ``value_and_grad(net.loss)`` to train the same
        network with autodiff for comparison. For a network with stochastic layers it is
        called with ``key=`` and ``train=True``.
      key: the PRNG key of this step's stochastic layers (dropout masks); the step runs
        in training mode. :func:`jbp.fit` derives a fresh one per step
        (:func:`jbp.training.stochastic.step_key`).
      rule: a learning rule of :mod:`jbp.rules` (default backprop): the optimizer then
        gets the rule's update direction in place of the gradient.
      feedback: the rule's state, ``rule.init(net, params)``.
      state: truncated backpropagation through time: the state of the network's
        stateful layers (``net.init_state(batch)``, then what the previous step
        returned) to start this window from. The step then also returns the state
        after the window; no gradient crosses into the previous window. With
        ``loss_and_grad``, that is called with ``state=`` and returns ``((loss,
        state), grads)``, the form JAX's autodiff gives for a loss with an auxiliary output.

    Returns:
      ``(params, opt_state, loss)``, ``loss`` being the loss before the update; with a
      ``state``, ``(params, opt_state, loss, state)``.
    """
    train_step_args(net, optimizer, params, opt_state, loss_and_grad, key)
    rule = rules.backprop() if rule is None else rule
    feedback = rules.check_args(rule, net, params, feedback, loss_and_grad)
    x, y = base.inputs_and_targets(net, params, x, y)
    state = state_args(net, optimizer, params, x, state)
    params, opt_state, loss, _ = step(net, optimizer, rule, params, opt_state, feedback, x, y, key,
                                      loss_and_grad=loss_and_grad, state=state)
    return (params, opt_state, loss) if state is None else (params, opt_state, *loss)


def step(net, optimizer: optax.GradientTransformation, rule, params: Params, opt_state: Any, feedback: tuple,
         x: Array, y: Array, key: Optional[Array] = None, *, loss_and_grad: Optional[Callable] = None,
         watch: Optional[monitoring.Watch] = None, last: bool = False, state: Optional[tuple] = None):
    """The one training step, on checked arguments: BP1-BP6 under ``rule`` (or
    ``loss_and_grad``), the optimizer's update (BP7), and with a ``watch`` the monitor's
    statistics of the step (:func:`jbp.training.monitor.observe`; ``last``: the epoch's
    last step, which takes the norms and angles).

    ``key`` is the step's key for stochastic layers (unused by a network without them);
    the step runs in training mode. ``state``: the stateful layers' state to start the
    window from (truncated BPTT, see :func:`train_step`).

    Returns:
      ``(params, opt_state, loss, watch)``; with a ``state``, ``loss`` is the pair
      ``(loss, state after the window)``.
    """
    key = key if net.stochastic else None
    p = None
    if loss_and_grad is not None:
        mode = {"key": key, "train": True} if net.stochastic else {}
        if state is not None:
            mode["state"] = state
        if not rules.is_backprop(rule):  # data parallel under a rule (jbp.training.parallel)
            mode["feedback"] = feedback
        loss, grads = loss_and_grad(params, x, y, **mode)
    else:
        p = rules.forward_backward_unchecked(net, rule, params, feedback, x, y, key, True, state)
        loss, grads = p.loss if state is None else (p.loss, p.cache.state), p.update
        if watch is not None:
            watch = monitoring.observe(net, rule, params, p, watch, last)
    # an optimizer that reads the backward pass (jbp.kfac) gets this step's (jbp.curvature)
    extra = curvature.step_args(optimizer, net, params, p, rules.is_backprop(rule), x, y, key)
    updates, opt_state = optimizer.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state, loss, watch


#: A parameter array from this size on is updated in place by :func:`make_train_step`'s
#: default: 32 MiB, glibc's largest threshold for serving an allocation from memory mapped
#: fresh from the kernel (``DEFAULT_MMAP_THRESHOLD_MAX``).
IN_PLACE_MIN_BYTES = 32 * 2**20

#: Below this many bytes of parameters to copy, :func:`make_train_step`'s default updates
#: in place: on the benchmark's CPU in place saved 10% of the tiny network's step and 3% of
#: the small one's (5 KiB copied), and cost 3% of the medium one's (1 MiB copied).
IN_PLACE_MAX_COPY_BYTES = 32 * 2**10


def in_place_pays(net) -> bool:
    """Whether updating ``net``'s parameters in place saves more than it costs (in JAX's
    default float): whether one of its parameter arrays holds at least
    :data:`IN_PLACE_MIN_BYTES`, or the parameters XLA would copy fewer than
    :data:`IN_PLACE_MAX_COPY_BYTES`.

    In place, BP7 writes ``w − α dL/dw`` over ``w``; but BP3 of every layer above the first
    with parameters reads them in a branch of the backward pass that their update does
    not wait for, so XLA first copies them, at every step. Written to fresh buffers
    instead, nothing is copied, and the old buffers are freed after the step: the
    allocator hands the same memory back at the next step. In place still saves the
    fixed cost of allocating the outputs (a few microseconds per call), which outweighs
    small copies, and the fresh buffers of 32 MiB and more, which are mapped fresh from
    the kernel and whose pages fault and are zeroed at every step (~0.3 ms per MiB on the
    benchmark's CPU: its large network's step, in place, faults on 72 MiB per step,
    copies included, against 130 MiB not)."""
    dtype = _validate.float_dtype("dtype", None)
    nbytes = lambda a: math.prod(a.shape) * dtype.itemsize
    layers = [jax.tree.leaves(p) for p in net.param_shapes(dtype)]
    first = next((i for i, leaves in enumerate(layers) if leaves), len(layers))
    copied = sum(nbytes(a) for leaves in layers[first + 1:] for a in leaves)
    largest = max((nbytes(a) for leaves in layers for a in leaves), default=0)
    return copied < IN_PLACE_MAX_COPY_BYTES or largest >= IN_PLACE_MIN_BYTES


def make_train_step(
    net, optimizer: optax.GradientTransformation, *, donate: Optional[bool] = None,
    rule: Optional[rules.Rule] = None
) -> Callable[..., tuple[Params, Any, Array]]:
    """:func:`train_step` for ``net`` and ``optimizer``, compiled, for a loop of your own.

    Example::

      optimizer = optax.sgd(0.1)
      step = jbp.make_train_step(net, optimizer)
      opt_state = optimizer.init(params)
      for x, y in batches:
          params, opt_state, loss = step(params, opt_state, x, y)

    BP7 reads each ``w`` once and writes ``w − α dL/dw`` in its place, so the new
    parameters can live in the old ones' memory. Donated arguments
    (``jax.jit(..., donate_argnums=...)``) are updated in place instead of into freshly
    allocated buffers, and deleted: always continue with the arrays returned. The
    optimizer state is donated by default. The parameters are donated by default only
    where that pays (:func:`in_place_pays`): XLA must copy every weight that BP3 reads
    before updating it in place, which on networks of mid-sized layers costs more than
    the fresh buffers it saves, while small copies cost less than allocating the outputs
    and on CPU a fresh buffer of a large layer is new memory whose pages the kernel maps
    and zeroes at every step (a 4096 x 4096 float32 layer, 64 MiB: ~20 ms on the
    benchmark's machine, against ~3 ms for the update itself; see docs/performance.md).

    It compiles once per shape and dtype of its arguments (``net`` and ``optimizer``
    are fixed). Argument checks on values (label range, NaN) need concrete arrays and
    do not run inside it; :meth:`jbp.MLP.loss_and_grad` outside ``jit`` has them.

    Args:
      net: the :class:`jbp.MLP`.
      optimizer: any optax optimizer; ``optax.sgd(lr)`` is exactly BP7.
      donate: ``True`` updates ``params`` and ``opt_state`` in place, ``False`` neither;
        by default (``None``) ``opt_state`` always, and ``params`` where
        :func:`in_place_pays`.
      rule: a learning rule of :mod:`jbp.rules` (default backprop); the step then takes
        its feedback weights as a fifth argument, ``step(params, opt_state, x, y,
        rule.init(net, params))`` (not donated).

    Returns:
      ``step(params, opt_state, x, y, key=None) -> (params, opt_state, loss)``, as
      :func:`train_step` (``key`` for a :class:`jbp.Sequential` in training mode);
      with a ``rule``, ``step(params, opt_state, x, y, feedback=(), key=None)``. Given
      ``state=`` (truncated BPTT, see :func:`train_step`), ``step(params, opt_state, x,
      y, state=state) -> (params, opt_state, loss, state)``.
    """
    base.network(net)
    _validate.optimizer(optimizer)
    if rule is None:
        one = functools.partial(train_step, net, optimizer)
    else:
        rules.check_network(rule, net)

        def one(params, opt_state, x, y, feedback=(), key=None, state=None):
            return train_step(net, optimizer, params, opt_state, x, y, key=key, rule=rule, feedback=feedback,
                              state=state)

    if donate is None:
        donated = (0, 1) if in_place_pays(net) else (1,)
    else:
        donated = (0, 1) if _validate.flag("donate", donate) else ()
    return jax.jit(one, donate_argnums=donated)


# --- Argument checks at the boundary. ---------------------------------------------


def train_step_args(net, optimizer_, params_, opt_state_, loss_and_grad, key=None) -> None:
    """:func:`jbp.train_step`'s own checks (``x`` and ``y`` are checked by the loss)."""
    base.network(net)
    _validate.optimizer(optimizer_)
    net.check_key(key)
    base.params(net, params_)
    _validate.opt_state(optimizer_, params_, opt_state_)
    _validate.function("loss_and_grad", loss_and_grad, "(params, x, y) -> (loss, grads)")


def state_args(net, optimizer_, params_, x, state):
    """A step's carried ``state``, checked against ``net.init_state(batch)`` in the
    parameters' dtype (``None`` stays ``None``); refused with an optimizer that reads the
    backward pass (it re-runs the backward without the state)."""
    if state is None:
        return None
    if not callable(getattr(net, "check_state", None)) or not net.stateful:
        raise ValueError("state needs a network with a stateful layer (LSTM, GRU, RNN: jbp.Sequential's "
                         f"init_state); got {type(net).__name__} without one")
    if curvature.reads_backward(optimizer_):
        raise ValueError("state cannot be combined with an optimizer that reads the backward pass (jbp.kfac); "
                         "truncated BPTT trains with an optax optimizer")
    return net.check_state(state, x.shape[0], jax.tree.leaves(params_)[0].dtype)
