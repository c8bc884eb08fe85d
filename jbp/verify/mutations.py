"""Mutation testing of the checker: plant the classic backprop mistakes in jbp's own
backward and show that :func:`jbp.check_grads` catches each one, naming exactly the
leaves it changes and the equation it sits in.

A mistake is planted by handing :func:`jbp.check_grads` a :class:`jbp.verify.grads.Equations`
with one part replaced (nothing in jbp's modules is patched). Which leaves a mistake
really changes is decided independently, in float64: the mutated and the correct
backward on the same inputs, a leaf counting as changed when they differ by more than
:data:`CHANGED` relative to its size (far above float64 rounding, far below any real
change). The checker, running in the working dtype with its derived tolerances, must
name exactly those leaves, and the first equation it names must be the planted one.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np

from jbp import _validate
from jbp.model import base
from jbp.verify import layer_mutations
from jbp.verify.grads import STRESS, Equations, run_check, seed_layers_only, seed_network, stress_point
from jbp.verify.oracles import host_cast
from jbp.verify.report import jsonable, markdown_table, text_table
from jbp.layers.params import Params

Array = jax.Array

#: A leaf counts as changed by a mutation when the float64 gradients differ by more
#: than this, relative to the leaf's largest correct value.
CHANGED = 1e-8


@dataclasses.dataclass(frozen=True)
class Mutation:
    """A classic mistake, planted in one part of the backward.

    Attributes:
      name: what the mistake is, e.g. ``"bias averaged"``.
      equation: the equation it is planted in (``"BP3"`` ... ``"BP6"``).
      description: the wrong formula.
      equations: the backward's parts with the mistake in place.
    """

    name: str
    equation: str
    description: str
    equations: Equations


def _no_activation_derivative(activation, z, x, dL_dx):
    return dL_dx  # BP4 without f'(z)


def _bias_mean(delta):
    return delta.mean(axis=0)  # BP6 with a mean instead of the sum


def _negated_input_grad(delta, W):
    return -(delta @ W)  # BP3 with its sign flipped


def _pre_activation_input(cache, l):
    return cache.zs[l - 1] if l > 0 else cache.xs[0]  # BP5 fed z^(l-1) instead of x^(l-1)


def _transposed_input_grad(delta, W):
    return delta @ W.T if W.shape[0] == W.shape[1] else delta @ W  # BP3 with W transposed


#: The classic mistakes, one per part of the backward.
MUTATIONS = (
    Mutation("missing f'(z)", "BP4", "delta^(l) = dL/dx^(l), the activation's derivative left out",
             Equations(delta=_no_activation_derivative)),
    Mutation("bias averaged", "BP6", "db = mean of delta over the batch instead of the sum",
             Equations(bias_grad=_bias_mean)),
    Mutation("sign flip in dx", "BP3", "dL/dx^(l) = -(delta^(l+1) @ W^(l+1))",
             Equations(input_grad=_negated_input_grad)),
    Mutation("dW from the wrong input", "BP5", "dW^(l) = delta^(l).T @ z^(l-1), the pre-activation instead of x^(l-1)",
             Equations(layer_input=_pre_activation_input)),
    Mutation("transposed W", "BP3", "dL/dx^(l) = delta^(l+1) @ W^(l+1).T where W^(l+1) is square",
             Equations(input_grad=_transposed_input_grad)),
)


@dataclasses.dataclass(frozen=True)
class MutationResult:
    """One planted mistake and what the checker said.

    Attributes:
      mutation: the :class:`Mutation`'s name; equation: where it was planted.
      changed: the leaves it changes (float64 ground truth); empty when it changes
        nothing on this network (e.g. a transposed ``W`` with no square ``W``).
      named: the leaves ``check_grads`` reported ``WRONG``.
      first_failure: the first wrong equation ``check_grads`` named, or ``None``.
      first_equation: that equation's name (``"BP4"`` ...), or ``None``.
    """

    mutation: str
    equation: str
    changed: tuple
    named: tuple
    first_failure: Optional[str]
    first_equation: Optional[str]

    @property
    def applicable(self) -> bool:
        return bool(self.changed)

    @property
    def caught(self) -> bool:
        return bool(self.named) or self.first_failure is not None

    @property
    def ok(self) -> bool:
        """Caught with exactly the changed leaves and the planted equation (or, if the
        mistake changes nothing here, no alarm)."""
        if not self.applicable:
            return not self.caught
        return self.named == self.changed and self.first_equation == self.equation

    def to_dict(self) -> dict:
        out = {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return out | {"applicable": self.applicable, "caught": self.caught, "ok": self.ok}


@dataclasses.dataclass(frozen=True)
class MutationReport:
    """The result of :func:`mutation_test`; ``ok`` is a plain ``bool``, ``str()`` a table."""

    results: tuple
    dtype: str
    stress: Optional[str]
    ok: bool

    def _title(self) -> str:
        at = "" if self.stress is None else f", at stress point {self.stress!r}"
        return f"mutation test: classic mistakes planted in jbp's backward, checked by check_grads ({self.dtype}{at})"

    def _table(self):
        head = ("mistake", "planted in", "caught", "leaves named", "= leaves changed", "first wrong equation")
        rows = [
            (
                r.mutation,
                r.equation,
                ("yes" if r.caught else "no") if r.applicable else "n/a (changes nothing here)",
                ", ".join(r.named) or "-",
                ("yes" if r.named == r.changed else f"no, changed: {', '.join(r.changed)}") if r.applicable else "-",
                r.first_failure or "-",
            )
            for r in self.results
        ]
        return head, rows

    def _verdict(self) -> str:
        bad = [r.mutation for r in self.results if not r.ok]
        return "PASSED" if self.ok else f"FAILED: {', '.join(bad)}"

    def __str__(self) -> str:
        return "\n".join([self._title(), text_table(*self._table()), self._verdict()])

    def to_markdown(self) -> str:
        return "\n".join([f"**{self._title()}**", "", markdown_table(*self._table()), "", f"**{self._verdict()}**"])

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"check": "mutation_test", "dtype": self.dtype, "stress": self.stress, "ok": self.ok,
                "results": [r.to_dict() for r in self.results]}


_grads64 = jax.jit(lambda net, p, x, y: net.loss_and_grad(p, x, y)[1], static_argnums=0)


def _changed_leaves(net, params, x, y, mutated64) -> tuple:
    """The leaves where ``mutated64`` (a mutated backward's gradients, run in float64)
    differs from jbp's correct backward in float64: the ground truth."""
    with jax.enable_x64(True):
        right = jax.tree.leaves(_grads64(net, *host_cast((params, x, y), np.float64)))
    names = [f"params{jax.tree_util.keystr(p)}" for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    changed = []
    for name, r, w in zip(names, right, jax.tree.leaves(mutated64)):
        r, w = np.asarray(r), np.asarray(w)
        scale = np.max(np.abs(r)) if r.size else 0.0
        if not np.max(np.abs(w - r), initial=0.0) <= CHANGED * (scale if scale > 0 else 1.0):
            changed.append(name)
    return tuple(changed)


def mutation_test(
    net,
    params: Params,
    x: Array,
    y: Array,
    *,
    mutations: tuple = MUTATIONS,
    stress: Optional[str] = None,
    rtol: Optional[float] = None,
    key: Optional[Array] = None,
) -> MutationReport:
    """Plants each mistake in jbp's backward and checks that :func:`jbp.check_grads` catches it.

    Example::

      net = jbp.MLP((4, 6, 6, 3), activation="tanh", loss="cross_entropy")
      report = jbp.mutation_test(net, params, x, y)
      print(report)          # one row per mistake: caught, leaves named, first wrong equation
      report.ok              # every mistake caught, exactly its leaves named

    Args:
      net, params, x, y: the network and batch to plant the mistakes in. Use a batch of
        more than one row (a mean over one row is the sum) and a square hidden ``W``
        (``sizes[l] == sizes[l + 1]`` for some ``l >= 1``) so that every mistake changes
        something.
      mutations: the :class:`Mutation` s to plant (default :data:`MUTATIONS`).
      stress: plant them at an adversarial point (see :func:`jbp.check_grads`).
      rtol: passed to :func:`jbp.check_grads` (default: derived tolerances).
      key: PRNG key for the finite-difference directions.

    For a :class:`jbp.Sequential` the mistakes are planted in its dense and activation
    layers (:mod:`jbp.verify.layer_mutations`; ``mutations`` and ``stress`` are for an
    MLP): "missing f'(z)" (BP4), "bias averaged" (BP6), "sign flip in dx" and
    "transposed W" (BP3).

    Returns:
      A :class:`MutationReport`.
    """
    base.network(net)
    x, y = base.inputs_and_targets(net, params, x, y)
    if not seed_layers_only(net) and stress is None:  # other layers: the mistakes are planted in them
        return _layers_mutation_test(net, params, x, y, rtol=rtol, key=key)
    net, positions = seed_network(net, "mutation_test's equations and stress")
    params = tuple(params[i] for i in positions)
    if stress is not None:
        params = stress_point(net, params, x, _validate.name("stress", stress, STRESS))
    results = []
    for m in mutations:
        report, mutated64 = run_check(
            net, params, x, y, rtol=rtol, finite_differences=True, key=key, equations=m.equations,
            stress=None, worst_examples=0,
        )
        first = report.first_failure
        results.append(
            MutationResult(
                mutation=m.name,
                equation=m.equation,
                changed=_changed_leaves(net, params, x, y, mutated64),
                named=report.failed,
                first_failure=None if first is None else str(first),
                first_equation=None if first is None else first.equation,
            )
        )
    return MutationReport(tuple(results), np.dtype(x.dtype).name, stress, all(r.ok for r in results))


def _layers_mutation_test(net, params, x, y, *, rtol, key) -> MutationReport:
    """:func:`mutation_test` for a network of layers: each mistake planted by wrapping layers."""
    results = []
    for name, equation, _, _ in layer_mutations.LAYER_MUTATIONS:
        mutated = layer_mutations.plant(net, name)
        report, mutated64 = run_check(
            mutated, params, x, y, rtol=rtol, finite_differences=True, key=key, equations=None,
            stress=None, worst_examples=0,
        )
        first = report.first_failure
        results.append(
            MutationResult(
                mutation=name,
                equation=equation,
                changed=_changed_leaves(net, params, x, y, mutated64),
                named=report.failed,
                first_failure=None if first is None else str(first),
                first_equation=None if first is None else first.equation,
            )
        )
    return MutationReport(tuple(results), np.dtype(x.dtype).name, None, all(r.ok for r in results))
