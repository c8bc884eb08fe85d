"""Learning rules: how the delta travels down through a layer with weights (the seed's BP3).

Backprop sends ``delta^(l)`` to the layer below through the layer's own weights,
``dL/dx^(l-1) = delta^(l) @ W^(l)`` (BP3). The rules studied as alternatives change only
that transport; BP4-BP6, the output delta and every layer without weights are untouched:

- :func:`backprop`: through ``W^(l)`` itself, the gradient.
- :func:`feedback_alignment` (Lillicrap et al. 2016): through a fixed random ``B^(l)`` of
  ``W^(l)``'s shape (for a convolution, a fixed random kernel in the transposed
  convolution).
- :func:`sign_symmetry` (Liao, Leibo & Poggio 2016): through ``sign(W^(l))`` (for a
  convolution, the sign of the kernel).
- :func:`direct_feedback_alignment` (Nøkland 2016): every layer with weights above the
  first receives the output delta directly, ``delta^(L) @ B_l``, projected by its own
  fixed random ``B_l`` ``(n_L, size of its input)`` to its input's shape.

**The protocol.** A rule is any hashable object (static under ``jax.jit``) with two
methods; the built-ins (:class:`Rule`) use it as a user's rule does:

- ``init(net, params) -> feedback``: the state it keeps, a tuple with one entry per
  layer with weights above the first (see :func:`weighted`), e.g. fixed feedback
  weights; ``()`` for none (``input_grad`` then gets ``feedback=None``). It travels with the training state (:func:`jbp.fit`'s
  ``feedback``, :func:`jbp.save_checkpoint`).
- ``input_grad(layer, params, residuals, dy, feedback, delta_out) -> dx``: what the
  layer (one with weights, above the first) sends down in place of its BP3, from the
  ``dy`` it received, its ``feedback`` entry and the delta ``delta_out`` of the last
  layer with weights. :func:`through` runs the layer's own backward with its weights
  replaced, which is what most rules need.

The layers with weights are those with a ``weights`` attribute naming the field of their
parameters that BP3 multiplies by (:class:`jbp.layers.Dense`, :class:`jbp.layers.Perceptron`,
:class:`jbp.layers.Conv1D`, :class:`jbp.layers.Conv2D`: ``"W"``). A rule other than
backprop refuses a network with another layer with parameters, naming it. The one
backward loop (:mod:`jbp.layers.chain`) takes the rule through its ``transport`` hook.

A rule's result is an update direction, not a gradient: ``net.loss_and_grad`` stays
the true gradient, and :func:`jbp.check_grads` checks that. The last layer with weights
updates as under backprop under every rule (its delta comes from the loss).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.model import base
from jbp.layers import chain
from jbp.layers.initializers import init_weight
from jbp.layers.params import Layer, Params

Array = jax.Array

#: The rules by their short names (the CLI's ``--rule``).
RULES = ("bp", "fa", "ss", "dfa")
#: Rules that draw fixed random feedback weights from a key.
RANDOM_FEEDBACK = ("fa", "dfa")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A learning rule: how BP3 carries the delta down (see the module docstring).

    Made by :func:`backprop`, :func:`feedback_alignment`, :func:`sign_symmetry` or
    :func:`direct_feedback_alignment`. Hashable: ``name`` and ``scale`` describe it; the
    key only draws the feedback weights (:meth:`init`, outside ``jit``), so rules that
    differ only in their key share one compilation.

    Attributes:
      name: ``"bp"``, ``"fa"``, ``"ss"`` or ``"dfa"``.
      scale: factor on the random feedback weights (FA and DFA).
      key: the PRNG key the feedback weights are drawn from (FA and DFA), else ``None``.
    """

    name: str
    scale: float = 1.0
    key: Optional[Array] = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def is_backprop(self) -> bool:
        return self.name == "bp"

    def init(self, net, params: Params) -> tuple:
        """The rule's fixed feedback weights for ``net``, in ``params``' dtype.

        Feedback alignment: ``B^(l)`` of ``W^(l)``'s shape for every layer ``l`` with
        weights above the first, drawn by that layer's own ``init`` (its init scheme and
        fans) from ``fold_in(key, l)``, ``l`` counting the layers with weights from 1.
        Direct feedback alignment: ``B_l`` ``(n_L, size of layer l's input)``, drawn like
        a weight by layer ``l``'s init scheme. Both times :attr:`scale`. Backprop and
        sign symmetry have none: ``()``.

        Returns:
          A tuple of arrays; the ``feedback`` of :func:`jbp.fit`.
        """
        check_network(self, net)
        if self.name not in RANDOM_FEEDBACK:
            return ()
        dtype = base.params(net, params)
        scale = jnp.asarray(self.scale, dtype)
        out = []
        for l, i in enumerate(weighted(net, f"rule {self.name!r}")[1:], start=2):
            layer, shape, key = net.layers[i], input_shape(net, i), jax.random.fold_in(self.key, l)
            if self.name == "fa":
                B = getattr(layer.init(key, shape, dtype)[0], layer.weights)
            else:
                B = init_weight(getattr(layer, "init_name", "glorot_uniform"), key, math.prod(shape),
                                net.output_shape[0], dtype)
            out.append(scale * B)
        return tuple(out)

    def input_grad(self, layer, params, residuals, dy: Array, feedback, delta_out: Array) -> Array:
        """What ``layer`` sends down under this rule (see the module docstring)."""
        if self.name == "bp":
            return layer.backward(params, residuals, dy)[1]  # BP3
        if self.name == "ss":
            return through(layer, params, jnp.sign(getattr(params, layer.weights)), residuals, dy)
        if self.name == "fa":
            return through(layer, params, feedback, residuals, dy)
        return project(layer, params, residuals, dy, feedback, delta_out)

    def transport(self, params: Params, feedback: tuple) -> tuple[Optional[tuple], bool]:
        """``(feedback, direct)`` for :func:`jbp.backward`: the matrices BP3 multiplies
        by (``None``: the ``W``'s), and whether the hidden layers take the output delta.
        ``params`` are an MLP's or a Sequential's (whose dense layers' entries are
        :class:`jbp.Layer`)."""
        if self.name == "bp":
            return None, False
        if self.name == "ss":
            dense = [layer for layer in params if isinstance(layer, Layer)]
            return tuple(jnp.sign(layer.W) for layer in dense[1:]), False
        return tuple(feedback), self.name == "dfa"


def backprop() -> Rule:
    """Backpropagation, the default: BP3 through ``W`` itself; the update is the gradient."""
    return Rule("bp")


def feedback_alignment(key: Array, *, scale: float = 1.0) -> Rule:
    """Feedback alignment (Lillicrap et al. 2016): BP3 through a fixed random ``B^(l)``.

    ``dL/dx^(l-1) ≈ delta^(l) @ B^(l)``, ``B^(l)`` of ``W^(l)``'s shape, drawn once by
    :meth:`Rule.init` like ``W^(l)`` (the network's init scheme) times ``scale``. The
    forward weights come to align with ``B``, and the update with the gradient.

    Args:
      key: PRNG key of the feedback weights.
      scale: factor on ``B`` (default 1: ``B`` has ``W``'s initial scale).
    """
    _validate.prng_key("key", key)
    return Rule("fa", float(_validate.real("scale", scale, positive=True, finite=True)), key)


def sign_symmetry() -> Rule:
    """Sign symmetry (Liao, Leibo & Poggio 2016): BP3 through ``sign(W^(l))``.

    The feedback shares only the signs of the forward weights (entries ``±1``, ``0``
    where ``W`` is 0), so it is backprop exactly when every weight is ``±1``.
    """
    return Rule("ss")


def direct_feedback_alignment(key: Array, *, scale: float = 1.0) -> Rule:
    """Direct feedback alignment (Nøkland 2016): the output delta straight to each hidden layer.

    Hidden layer ``l`` takes ``dL/dx^(l) ≈ delta^(L) @ B_l`` (then BP4 as usual), with a
    fixed random ``B_l`` ``(n_L, n_l)`` of its own, drawn once by :meth:`Rule.init`. With
    one hidden layer and ``B_1 = W^(2)`` it is backprop.

    Args:
      key: PRNG key of the feedback weights.
      scale: factor on the ``B_l`` (default 1).
    """
    _validate.prng_key("key", key)
    return Rule("dfa", float(_validate.real("scale", scale, positive=True, finite=True)), key)


def by_name(name: str, key: Optional[Array] = None, *, scale: float = 1.0) -> Rule:
    """The rule called ``name`` (one of :data:`RULES`); FA and DFA need ``key``."""
    _validate.name("rule", name, RULES)
    if name == "bp":
        return backprop()
    if name == "ss":
        return sign_symmetry()
    if key is None:
        raise ValueError(f"rule {name!r} draws random feedback weights and needs a key, got key=None")
    make = feedback_alignment if name == "fa" else direct_feedback_alignment
    return make(key, scale=scale)


def is_backprop(rule) -> bool:
    """Whether ``rule`` is :func:`backprop` (whose update is the gradient)."""
    return isinstance(rule, Rule) and rule.is_backprop


def rule_name(rule) -> str:
    """How messages name ``rule``: its ``name``, else its type's."""
    return str(getattr(rule, "name", type(rule).__name__))


def through(layer, params, B, residuals, dy: Array) -> Array:
    """BP3 through ``B`` in place of the layer's weights: the layer's own backward with
    ``params``' ``layer.weights`` field replaced by ``B`` (for a convolution, the
    transposed convolution with the kernel ``B``). Its parameter gradients go unused."""
    return layer.backward(params._replace(**{layer.weights: B}), residuals, dy)[1]


def project(layer, params, residuals, dy: Array, B: Array, delta_out: Array) -> Array:
    """Direct feedback: ``delta_out @ B`` ``(batch, n_L) @ (n_L, n)``, shaped as the
    layer's input (``n`` its size)."""
    shape = jax.eval_shape(layer.backward, params, residuals, dy)[1].shape
    return (delta_out.reshape(delta_out.shape[0], -1) @ B).reshape(shape)


def input_shape(net, i: int) -> tuple:
    """The input shape (without the batch axis) of ``net``'s layer ``i``."""
    return tuple(net.output_shapes[i - 1]) if i else tuple(net.input_shape)


def first_unweighted(net) -> Optional[int]:
    """The index of ``net``'s first layer with parameters but no weights (a rule cannot
    train it); ``None`` if there is none."""
    shapes = net.param_shapes(jnp.float32)
    return next((i for i, (layer, shape) in enumerate(zip(net.layers, shapes))
                 if jax.tree.leaves(shape) and getattr(layer, "weights", None) is None), None)


def weighted(net, needed_by: str) -> tuple:
    """The indices of ``net``'s layers with weights (a ``weights`` attribute), first to last.

    Raises:
      TypeError: ``net`` has a layer with parameters but no weights, or no layer with
        weights; the message names ``needed_by`` and the layer.
    """
    other = first_unweighted(net)
    if other is not None:
        raise TypeError(
            f"{needed_by} needs every layer with parameters to have weights (a weights attribute, "
            f"as Dense, Perceptron, Conv1D and Conv2D have), but its layers[{other}] is a "
            f"{type(net.layers[other]).__name__}"
        )
    shapes = net.param_shapes(jnp.float32)
    out = [i for i, shape in enumerate(shapes) if jax.tree.leaves(shape)]
    if not out:
        raise TypeError(f"{needed_by} needs a layer with weights (Dense, Perceptron, Conv1D, Conv2D), "
                        "but it has no layer with weights")
    return tuple(out)


def check_network(rule, net) -> None:
    """Checks that ``rule`` is a rule (:class:`Rule`, or an object with ``init`` and
    ``input_grad``, hashable) and ``net`` a network it can train (see :func:`weighted`)."""
    if not (callable(getattr(rule, "init", None)) and callable(getattr(rule, "input_grad", None))) \
            or isinstance(rule, type):
        raise TypeError(
            "rule must be a jbp.rules.Rule (e.g. jbp.rules.feedback_alignment(key)) or an object with "
            f"init(net, params) and input_grad(layer, params, residuals, dy, feedback, delta_out), "
            f"got {_validate.describe(rule)}"
        )
    try:
        hash(rule)
    except TypeError:
        raise TypeError(f"rule must be hashable (a frozen dataclass: it is static under jit), got "
                        f"unhashable {type(rule).__name__}") from None
    base.network(net)
    if not is_backprop(rule):
        weighted(net, f"rule {rule_name(rule)!r}")


def check_feedback(rule, net, params: Params, feedback) -> tuple:
    """Checks ``feedback`` against ``rule.init(net, params)``'s structure, shapes and dtypes."""
    check_network(rule, net)
    want = jax.eval_shape(lambda p: rule.init(net, p), params)
    if not isinstance(feedback, (tuple, list)):
        raise TypeError(f"feedback must be a tuple of arrays (rule.init(net, params)), got {_validate.describe(feedback)}")
    _validate.same_tree("feedback", tuple(feedback), f"rule.init(net, params) of rule {rule_name(rule)!r}", want)
    return tuple(feedback)


def check_args(rule, net, params: Params, feedback, loss_and_grad=None) -> tuple:
    """Checks ``feedback`` of ``rule`` for ``net`` and ``params``; returns it. A rule other
    than backprop brings its own backward pass, so it cannot be combined with ``loss_and_grad``."""
    feedback = check_feedback(rule, net, params, feedback)
    if loss_and_grad is not None and not is_backprop(rule):
        raise ValueError(
            f"rule {rule_name(rule)!r} replaces the backward pass, so it cannot be combined with "
            "loss_and_grad; pass one or the other"
        )
    return feedback


def transport(rule, layers: tuple, params: tuple, residuals: tuple, feedback: tuple,
              positions: tuple) -> Optional[chain.Transport]:
    """The one backward loop's ``transport`` under ``rule`` (``None`` for backprop).

    Args:
      rule: the rule.
      layers, params, residuals: the chain and its forward pass's residuals.
      feedback: ``rule.init(net, params)``, one entry per layer of ``positions[1:]``.
      positions: the indices of the layers with weights (:func:`weighted`).
    """
    if is_backprop(rule):
        return None
    entry = {i: k for k, i in enumerate(positions)}
    seen = {}

    def send(i, dy, dx):
        k = entry.get(i)
        if k is None:
            return dx  # no weights: the layer's own backward (BP4, a mask, a reshape)
        if k == len(positions) - 1:
            seen["delta_out"] = dy  # the last layer with weights: its delta is the loss's
        if k == 0:
            return dx  # nothing below the first layer with weights learns
        state = feedback[k - 1] if feedback else None  # () for a rule that keeps none
        return rule.input_grad(layers[i], params[i], residuals[i], dy, state, seen["delta_out"])

    return send


class Pass(NamedTuple):
    """One forward and backward pass under a rule.

    Attributes:
      loss: the batch's mean loss.
      cache: the forward pass's cache (:class:`jbp.model.sequential.SequentialCache`).
      delta_out: the delta ``dL/dz^(L)`` at the network's last layer.
      update: the rule's direction, with the structure of ``params`` (the gradient under
        backprop).
      dys: the ``dy`` each layer received in the backward pass, one entry per layer
        (what an optimizer that reads the backward takes, :mod:`jbp.curvature`).
    """

    loss: Array
    cache: Any
    delta_out: Array
    update: Params
    dys: tuple = ()


def forward_backward_unchecked(net, rule, params: Params, feedback: tuple, x: Array, y: Array,
                               key: Optional[Array] = None, train: bool = False, state=None) -> Pass:
    """:func:`forward_backward` on checked arguments: BP1-BP6 with the rule's BP3, by the
    one forward and backward loop. With a ``state`` (a :class:`jbp.Sequential`'s, see its
    ``init_state``) the forward starts from it, ``cache.state`` is the state after the
    window, and no gradient crosses the window's edge."""
    _, cache = net.forward_unchecked(params, x, key, train) if state is None else \
        net.forward_unchecked(params, x, key, train, state)
    loss, delta_out = net.loss_value(cache, y), net.output_delta_unchecked(cache, y)
    positions = () if is_backprop(rule) else weighted(net, f"rule {rule_name(rule)!r}")
    send = transport(rule, net.layers, params, cache.residuals, feedback, positions)
    update, _, dys = chain.backward(net.layers, params, cache.residuals, delta_out, transport=send, state=state)
    return Pass(loss, cache, delta_out, update, dys)


def forward_backward(net, rule, params: Params, feedback: tuple, x: Array, y: Array, *,
                     key: Optional[Array] = None, train: bool = False) -> Pass:
    """BP1-BP6 with the rule's BP3: the loss, the cache and the rule's update direction.

    ``key`` and ``train`` are the forward pass's (dropout), as in ``net.loss_and_grad``."""
    feedback = check_feedback(rule, net, params, feedback)
    x, y = base.inputs_and_targets(net, params, x, y)
    _stochastic_args(net, key, train)
    return forward_backward_unchecked(net, rule, params, feedback, x, y, key, train)


def loss_and_update(net, rule, params: Params, feedback: tuple, x: Array, y: Array, *,
                    key: Optional[Array] = None, train: bool = False) -> tuple[Array, Params]:
    """``(loss, update)``: ``net.loss_and_grad`` with the rule's BP3.

    Under :func:`backprop` it is ``net.loss_and_grad``; under the other rules the update
    is a direction, not the gradient.

    Args:
      net: the network (see :func:`weighted` for what a rule other than backprop needs).
      rule: the rule.
      params: the parameters.
      feedback: ``rule.init(net, params)`` (``()`` for backprop and sign symmetry).
      x, y: a batch.
      key, train: training mode and the key of the network's dropout masks, as for its
        ``loss_and_grad``.
    """
    p = forward_backward(net, rule, params, feedback, x, y, key=key, train=train)
    return p.loss, p.update


def _stochastic_args(net, key, train) -> None:
    """Checks ``key`` and ``train``."""
    _validate.flag("train", train)
    net.check_key(key)
