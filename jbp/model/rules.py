"""Learning rules: what carries the delta down the network in place of BP3's ``delta @ W``.

Backprop sends ``delta^(l)`` to the layer below through the layer's own weights,
``dL/dx^(l-1) = delta^(l) @ W^(l)`` (BP3). The rules studied as alternatives change only
that transport; BP4-BP6 and the output delta are untouched:

- :func:`backprop`: ``delta^(l) @ W^(l)``, the gradient.
- :func:`feedback_alignment` (Lillicrap et al. 2016): ``delta^(l) @ B^(l)``, a fixed
  random ``B^(l)`` of ``W^(l)``'s shape.
- :func:`sign_symmetry` (Liao, Leibo & Poggio 2016): ``delta^(l) @ sign(W^(l))``.
- :func:`direct_feedback_alignment` (Nøkland 2016): every hidden layer ``l`` receives
  the output delta directly, ``delta^(L) @ B_l``, through its own fixed random
  ``B_l`` ``(n_L, n_l)``.

A :class:`Rule` is a frozen, hashable description (static under ``jax.jit``). Its fixed
feedback weights are a separate pytree, ``feedback = rule.init(net, params)``: a tuple
of arrays, drawn once from the rule's key (empty for backprop and sign symmetry). They
are part of the training state, like the optimizer state: :func:`jbp.fit` takes and
:func:`jbp.save_checkpoint` keeps them.

A rule's result is an update direction, not a gradient: ``net.loss_and_grad`` stays
the true gradient, and :func:`jbp.check_grads` checks that. The output layer's update is
backprop's under every rule (its delta comes from the loss, not from a transport).

The rules run on a :class:`jbp.MLP` and on a :class:`jbp.Sequential` of dense layers with
elementwise layers between them (activations, dropout, flatten): layer ``l`` is then the
``l``-th ``Dense`` (see :mod:`jbp.model.dense_stack`), and the same network written either
way gives the same updates. Other networks are refused with a ``TypeError`` that names
the first layer that does not fit.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jbp import _validate
from jbp.model import dense_stack
from jbp.model.forward_pass import Cache, forward_unchecked
from jbp.model.initializers import init_weight
from jbp.model.losses import get_loss
from jbp.model.params import Layer, Params

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

        Feedback alignment: ``B^(l)`` of ``W^(l)``'s shape for ``l = 2..L``; direct
        feedback alignment: ``B_l`` ``(n_L, n_l)`` for every hidden layer ``l``. Each is
        drawn like a weight by the init scheme of the layer whose BP3 it replaces (the
        network's; in a :class:`jbp.Sequential`, that ``Dense``'s), its fan-in and fan-out
        those of ``B``, times :attr:`scale`, from ``fold_in(key, l)``. Layer ``l`` is the
        ``l``-th dense layer (:mod:`jbp.model.dense_stack`). Backprop and sign symmetry
        have none: ``()``.

        Returns:
          A tuple of arrays (see above); the ``feedback`` of :func:`jbp.fit`.
        """
        check_network(self, net)
        if self.name not in RANDOM_FEEDBACK:
            return ()
        dtype = _validate.params(net, params)
        stack = dense_stack.of(net, f"rule {self.name!r}")
        sizes, n_L = stack.sizes, stack.sizes[-1]
        shapes = [
            (n_out, n_in) if self.name == "fa" else (n_L, n_in)
            for n_in, n_out in zip(sizes[1:-1], sizes[2:])
        ]
        return tuple(
            jnp.asarray(self.scale, dtype)
            * init_weight(stack.inits[l - 1], jax.random.fold_in(self.key, l), shape[1], shape[0], dtype)
            for l, shape in enumerate(shapes, start=2)
        )

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


def check_network(rule, net) -> None:
    """Checks that ``rule`` is a :class:`Rule` and ``net`` a network it can train.

    Backprop trains any network. The other rules replace BP3 between dense layers, so
    they need dense layers with elementwise layers between them: a :class:`jbp.MLP`, or a
    :class:`jbp.Sequential` of ``Dense``, activation, ``Flatten`` and ``Dropout`` layers
    (:mod:`jbp.model.dense_stack`); the ``TypeError`` names the first layer that is not.
    """
    if not isinstance(rule, Rule):
        raise TypeError(
            "rule must be a jbp.rules.Rule (e.g. jbp.rules.feedback_alignment(key)), "
            f"got {_validate.describe(rule)}"
        )
    _validate.network(net)
    if not rule.is_backprop:
        dense_stack.of(net, f"rule {rule.name!r}")


def check_feedback(rule: Rule, net, params: Params, feedback) -> tuple:
    """Checks ``feedback`` against ``rule.init(net, params)``'s structure, shapes and dtypes."""
    check_network(rule, net)
    want = jax.eval_shape(lambda p: rule.init(net, p), params) if rule.name in RANDOM_FEEDBACK else ()
    if not isinstance(feedback, (tuple, list)):
        raise TypeError(f"feedback must be a tuple of arrays (rule.init(net, params)), got {_validate.describe(feedback)}")
    _validate.same_tree("feedback", tuple(feedback), f"rule.init(net, params) of rule {rule.name!r}", want)
    return tuple(feedback)


class Pass(NamedTuple):
    """One forward and backward pass under a rule.

    Attributes:
      loss: the batch's mean loss.
      cache: the forward pass's :class:`jbp.Cache` (a Sequential's ``SequentialCache``).
      delta_out: the delta ``dL/dz^(L)`` at the network's last layer.
      update: the rule's direction, with the structure of ``params`` (the gradient under
        backprop).
    """

    loss: Array
    cache: Cache
    delta_out: Array
    update: Params


def forward_backward(net, rule: Rule, params: Params, feedback: tuple, x: Array, y: Array, *,
                     key: Optional[Array] = None, train: bool = False) -> Pass:
    """BP1-BP6 with the rule's BP3: the loss, the cache and the rule's update direction.

    ``key`` and ``train`` are a :class:`jbp.Sequential`'s (dropout), as in its
    ``loss_and_grad``."""
    stack = dense_stack.of(net, f"rule {rule.name!r}")
    feedback = check_feedback(rule, net, params, feedback)
    x, y = _validate.inputs_and_targets(net, params, x, y)
    _stochastic_args(net, key, train)
    if net.takes_key:
        _, cache = net.forward_unchecked(params, x, key, train)
        loss, delta_out = net.loss_value(cache, y), net.output_delta_unchecked(cache, y)
    else:
        _, cache = forward_unchecked(params, x, net.activations)
        loss = get_loss(net.loss_name).value(cache.zs[-1], cache.xs[-1], y)
        delta_out = net.output_delta(cache, y)
    B, direct = rule.transport(params, feedback)
    return Pass(loss, cache, delta_out, dense_stack.backward(net, stack, params, cache, delta_out, B, direct))


def loss_and_update(net, rule: Rule, params: Params, feedback: tuple, x: Array, y: Array, *,
                    key: Optional[Array] = None, train: bool = False) -> tuple[Array, Params]:
    """``(loss, update)``: ``net.loss_and_grad`` with the rule's BP3.

    Under :func:`backprop` it is ``net.loss_and_grad``; under the other rules the update
    is a direction, not the gradient.

    Args:
      net: the network: a :class:`jbp.MLP`, or a :class:`jbp.Sequential` of dense layers
        with elementwise layers between them (see :func:`check_network`).
      rule: the :class:`Rule`.
      params: the parameters.
      feedback: ``rule.init(net, params)`` (``()`` for backprop and sign symmetry).
      x, y: a batch.
      key, train: for a :class:`jbp.Sequential`: training mode and the key of its
        dropout masks, as for its ``loss_and_grad``.
    """
    if rule.is_backprop:
        _stochastic_args(net, key, train)
        if net.takes_key:
            return net.loss_and_grad(params, x, y, key=key, train=train)
        return net.loss_and_grad(params, x, y)
    p = forward_backward(net, rule, params, feedback, x, y, key=key, train=train)
    return p.loss, p.update


def _stochastic_args(net, key, train) -> None:
    """Checks ``key`` and ``train``, which only a network that takes them may get."""
    _validate.flag("train", train)
    if not net.takes_key and (key is not None or train):
        raise ValueError(
            f"key and train are for networks with stochastic layers (jbp.Sequential); "
            f"{type(net).__name__} takes neither, leave key=None and train=False"
        )
    if key is not None:
        _validate.prng_key("key", key)
