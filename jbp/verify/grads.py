"""Verification of jbp's hand-derived gradients against autodiff (with :mod:`jbp.verify.vjp`,
the only place jbp uses it), down to the layer and the equation that is wrong.

:func:`check_grads` runs three views of one network at one batch:

1. **Leaves**: ``net.loss_and_grad`` (the hand-derived backward) against ``jax.grad`` of
   ``net.loss``, every ``W`` and ``b``, with the derived tolerances, the float64 re-run
   and the finite-difference confirmation of :mod:`jbp.verify.vjp`.
2. **Equations**: each of the seed's equations on its own, layer by layer, fed the exact
   (float64 autodiff) values of its inputs so that an error upstream cannot leak into
   it: the output delta, BP3 ``dL/dx^(l) = delta^(l+1) W^(l+1)``, BP4
   ``delta^(l) = dL/dx^(l) · f'(z^(l))``, BP5 ``dW^(l) = delta^(l)ᵀ x^(l-1)`` and BP6
   ``db^(l) = Σ_batch delta^(l)``. The references for ``dL/dz^(l)`` and ``dL/dx^(l)`` are
   ``jax.grad`` of the loss with respect to zero offsets added to every ``z^(l)`` and
   ``x^(l)``. The first equation that fails, from the output down, is named.
3. **Worst examples**: per-example gradients (the backward on each row alone) against
   autodiff, the rows that diverge most first.

Views 2 and 3 and ``equations=``/``stress=`` need the seed's layers: a network whose
layers are :class:`jbp.layers.Perceptron` s and a last :class:`jbp.layers.Dense` (a
:class:`jbp.MLP`) gets the equations view by default; a network of ``Dense`` layers each
followed by at most one activation layer is read as the same MLP for ``equations=`` and
``stress=``; any other network gets one check per layer (:mod:`jbp.verify.layerwise`),
and ``equations=`` or ``stress=`` on it is refused naming the layer.

``equations=`` swaps any of the backward's parts for another function (see
:class:`Equations`): the seed's layers are then run by the one backward loop
(:mod:`jbp.layers.chain`) with those parts planted in them; :func:`jbp.mutation_test`
plants mistakes that way, without touching jbp's modules.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.model import base
from jbp.layers import chain
from jbp.layers import dense as dense_layer
from jbp.layers.activation import ActivationLayer
from jbp.layers.dense import Dense, Perceptron
from jbp.layers.activations import Activation, get_activation
from jbp.verify.oracles import (
    FD_RTOL,
    cast,
    fed_verdict,
    host_cast,
    numpy_rng,
    unit_roundoff,
    verify_many,
)
from jbp.verify.report import (
    OK,
    WRONG,
    GradCheckFailure,
    LeafVerdicts,
    details,
    jsonable,
    leaf_table,
    markdown_table,
    text_table,
)
from jbp.verify.layerwise import LayerCheck, layer_checks, layer_table
from jbp.model.forward_pass import Cache, dense, forward
from jbp.model.losses import get_loss
from jbp.model.network import MLP
from jbp.layers.params import Layer, Params
from jbp.model.sequential import SequentialCache

Array = jax.Array

#: Adversarial points for ``check_grads(..., stress=...)``.
STRESS = ("saturate", "kinks", "logits")
#: ``stress="saturate"``: the rms every layer's pre-activations are scaled to.
SATURATED_Z = 10.0
#: ``stress="logits"``: the rms the output layer's pre-activations are scaled to.
EXTREME_LOGIT = 1e3


class Equations(NamedTuple):
    """The parts of the backward pass, each replaceable; ``None`` means jbp's own.

    Attributes:
      output_delta: ``(net, cache, y) -> dL/dz^(L)`` (:meth:`jbp.MLP.output_delta`).
      input_grad: BP3, ``(delta, W) -> dL/dx`` (:func:`jbp.model.backward_pass.input_grad`).
      delta: BP4, ``(activation, z, x, dL_dx) -> dL/dz`` (:meth:`jbp.Activation.delta`).
      weight_grad: BP5, ``(delta, x_prev) -> dW`` (:func:`jbp.model.backward_pass.weight_grad`).
      bias_grad: BP6, ``(delta) -> db`` (:func:`jbp.model.backward_pass.bias_grad`).
      layer_input: the ``x^(l-1)`` BP5 multiplies, ``(cache, l) -> cache.xs[l]`` for the
        layer ``params[l]``.
    """

    output_delta: Optional[Callable] = None
    input_grad: Optional[Callable] = None
    delta: Optional[Callable] = None
    weight_grad: Optional[Callable] = None
    bias_grad: Optional[Callable] = None
    layer_input: Optional[Callable] = None


def _layer_input(cache: Cache, l: int) -> Array:
    return cache.xs[l]


def _output_delta(net, cache: Cache, y: Array) -> Array:
    return net.output_delta_unchecked(SequentialCache((), cache.zs[-1], cache.xs[-1]), y)


def _resolve(equations: Equations) -> Equations:
    """Fills the ``None`` parts with jbp's own, looked up now (so a patched module is seen)."""
    return Equations(
        output_delta=equations.output_delta or _output_delta,
        input_grad=equations.input_grad or dense_layer.input_grad,
        delta=equations.delta or Activation.delta,
        weight_grad=equations.weight_grad or dense_layer.weight_grad,
        bias_grad=equations.bias_grad or dense_layer.bias_grad,
        layer_input=equations.layer_input or _layer_input,
    )


@dataclasses.dataclass(frozen=True)
class _PlantedDense:
    """The seed's dense layer ``l`` with the backward's parts of ``equations`` (BP3, BP5,
    BP6; BP5 reads ``layer_input`` of the cache ``cache_of`` rebuilds)."""

    layer: Dense
    l: int
    equations: Equations

    def forward(self, params, x, *, key=None, train=False):
        return self.layer.forward(params, x)  # BP1

    def backward(self, params, r, delta):
        eq = self.equations
        x_prev = eq.layer_input(r.cache, self.l)
        return Layer(W=eq.weight_grad(delta, x_prev), b=eq.bias_grad(delta)), eq.input_grad(delta, params.W)


@dataclasses.dataclass(frozen=True)
class _PlantedActivation:
    """The seed's activation of layer ``l`` with ``equations``' BP4."""

    activation: Any
    l: int
    equations: Equations

    def forward(self, params, z, *, key=None, train=False):
        return get_activation(self.activation).f(z), ()  # BP2

    def backward(self, params, r, dL_dx):
        cache = r.cache
        return (), self.equations.delta(get_activation(self.activation), cache.zs[self.l], cache.xs[self.l + 1], dL_dx)


class _Residual(NamedTuple):
    cache: Cache


def _loss_and_grad(net: MLP, equations: Equations, params: Params, x: Array, y: Array):
    """``net.loss_and_grad`` itself, or the seed's backward with ``equations``' parts
    planted in its layers, run by the one backward loop."""
    if equations == Equations():
        return net.loss_and_grad(params, x, y)
    eq = _resolve(equations)
    _, cache = forward(params, x, net.activations)
    loss = get_loss(net.loss_name).value(cache.zs[-1], cache.xs[-1], y)
    layers, chained = [], []
    for l, (p, activation) in enumerate(zip(params, net.activations)):
        layers += [_PlantedDense(Dense(p.W.shape[0]), l, eq), _PlantedActivation(activation, l, eq)]
        chained += [p, ()]
    residuals = (_Residual(cache),) * len(layers)
    grads, _, _ = chain.backward(tuple(layers[:-1]), tuple(chained[:-1]), residuals[:-1],
                                 eq.output_delta(net, cache, y))  # BP3-BP6, from the output delta down
    return loss, grads[0::2]


def seed_network(net, needed_by: str):
    """``(mlp, positions)``: the :class:`jbp.MLP` that ``net``'s layers are (its
    ``Perceptron`` s, or ``Dense`` layers each followed by at most one activation layer,
    the last a ``Dense``), and the index of each of its layers in ``net``.

    Raises:
      ValueError: a layer that is not one of the seed's, named, with ``needed_by``.
    """
    layers, sizes, hidden, positions, i = net.layers, [int(math.prod(net.input_shape))], [], [], 0
    while i < len(layers):
        layer = layers[i]
        if type(layer) is Perceptron and i < len(layers) - 1:
            sizes.append(layer.features)
            hidden.append(layer.activation)
            positions.append(i)
            i += 1
            continue
        if type(layer) is not Dense or len(net.input_shape) != 1:
            break
        follows = layers[i + 1] if i + 1 < len(layers) else None
        sizes.append(layer.features)
        positions.append(i)
        if follows is None:
            mlp = MLP(sizes, tuple(hidden), net.output_activation, net.loss_name, net.init_name or "glorot_uniform")
            return (net if mlp == net else mlp), tuple(positions)
        if type(follows) is ActivationLayer and i + 2 < len(layers):
            hidden.append(follows.activation)
            i += 2
        else:
            hidden.append("identity")
            i += 1
    raise ValueError(
        f"{needed_by} needs a network of the seed's layers (jbp.MLP, or Dense layers each followed "
        f"by at most one activation layer, the last a Dense, on vector inputs), but its layers[{i}] "
        f"is a {type(layers[i]).__name__ if i < len(layers) else 'missing'}"
    )


def seed_layers_only(net) -> bool:
    """Whether ``net`` is made of the seed's layer objects (``Perceptron`` s, a last ``Dense``)."""
    return (type(net.layers[-1]) is Dense and len(net.input_shape) == 1
            and all(type(layer) is Perceptron for layer in net.layers[:-1]))


def _mode(net, train: bool, key_data: list) -> dict:
    """``key=``/``train=`` for a network with stochastic layers; ``aux`` carries the key's data."""
    if not net.stochastic:
        return {}
    return {"key": jax.random.wrap_key_data(key_data[0]) if key_data else None, "train": train}


@dataclasses.dataclass(frozen=True)
class _NetLoss:
    """What autodiff differentiates: ``net.loss`` (hashable, static to jit)."""

    net: MLP
    train: bool = False

    def __call__(self, params, aux):
        x, y, *key_data = aux
        return self.net.loss(params, x, y, **_mode(self.net, self.train, key_data))


@dataclasses.dataclass(frozen=True)
class _NetGrad:
    """What is checked: the hand-derived gradient, scaled by the loss's cotangent."""

    net: MLP
    equations: Equations
    train: bool = False

    def __call__(self, params, aux, cot):
        x, y, *key_data = aux
        if key_data or self.net.stochastic:
            grads = self.net.loss_and_grad(params, x, y, **_mode(self.net, self.train, key_data))[1]
        else:
            grads = _loss_and_grad(self.net, self.equations, params, x, y)[1]
        return jax.tree.map(lambda g: g * cot, grads)


@dataclasses.dataclass(frozen=True)
class EquationCheck:
    """One equation at one layer, fed autodiff's exact inputs.

    Attributes:
      layer: the layer ``l`` (1 = first hidden layer, ``L`` = output layer).
      equation: ``"output delta"``, ``"BP3"``, ``"BP4"``, ``"BP5"`` or ``"BP6"``.
      formula: what it computes, e.g. ``"dW^(2) = delta^(2).T @ x^(1)"``.
      rel_err: ``max |equation − autodiff| / max |autodiff|``, evaluated in float64.
      rel_err_lo: the same with the inputs rounded to the working dtype (float32 for
        float64): how much of the error is rounding.
      tol: tolerance on ``rel_err`` (derived as in :mod:`jbp.verify.vjp`).
      verdict: ``"ok"``, ``"WRONG"``, or ``"imprecise"`` (over the tolerance, but the
        error shrinks with precision: rounding, not the formula).
    """

    layer: int
    equation: str
    formula: str
    rel_err: float
    rel_err_lo: float
    tol: float
    verdict: str

    def __str__(self) -> str:
        return f"layer {self.layer}, {self.equation}: {self.formula}"

    def to_dict(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class ExampleCheck:
    """One batch row's gradient (the backward on that row alone) against autodiff.

    Attributes:
      row: the row of ``x``.
      rel_err: ``max`` over leaves of ``max |backward − autodiff| / scale``, the scale being
        the leaf's largest autodiff value over all rows.
      leaf: the leaf where that maximum is.
      loss: the row's loss.
    """

    row: int
    rel_err: float
    leaf: str
    loss: float

    def to_dict(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class GradCheckReport(LeafVerdicts):
    """The result of :func:`check_grads`. ``ok`` is a plain ``bool``; ``str()`` is a table.

    Attributes:
      leaves: one :class:`jbp.verify.vjp.LeafCheck` per ``W`` and ``b``.
      dtype: the parameters' dtype.
      rtol: the fixed tolerance asked for, or ``None`` (derived per leaf).
      loss: the loss at the checked point.
      ok: no leaf and no equation is ``WRONG``.
      equations: one :class:`EquationCheck` per equation and layer, from the output down.
      worst_examples: the rows whose gradients diverge most, worst first.
      stress: the adversarial point checked (``None``: the point given).
    """

    leaves: tuple
    dtype: str
    rtol: Optional[float]
    loss: float
    ok: bool
    equations: tuple = ()
    worst_examples: tuple = ()
    stress: Optional[str] = None

    @property
    def failed_equations(self) -> tuple:
        """The :class:`EquationCheck` s that are ``WRONG``, from the output layer down."""
        return tuple(e for e in self.equations if e.verdict == WRONG)

    @property
    def first_failure(self) -> Optional[EquationCheck]:
        """The first wrong equation in the backward pass's order, or ``None`` (for a
        :class:`jbp.Sequential`, the first wrong :class:`jbp.verify.layerwise.LayerCheck`:
        a layer's index and leaf)."""
        return next(iter(self.failed_equations), None)

    def _title(self) -> str:
        tol = "derived tolerances" if self.rtol is None else f"rtol {self.rtol:g}"
        at = "" if self.stress is None else f", at stress point {self.stress!r}"
        return (
            f"gradient check: hand-derived vs jax.grad ({self.dtype}, {tol}, reference in float64; "
            f"FD rtol {FD_RTOL:g}){at}, loss {self.loss:.6g}"
        )

    def _verdict(self) -> str:
        if self.ok:
            extra = [f"{what}: {', '.join(n)}" for what, n in (("imprecise", self.imprecise), ("unverified", self.unverified)) if n]
            extra += [self.evidence_note()] if self.evidence_note() else []
            return "PASSED" + (f" ({'; '.join(extra)})" if extra else "")
        parts = [", ".join(self.failed)] if self.failed else []
        if not math.isfinite(self.loss):
            parts.append(f"the loss is {self.loss} here: nothing to compare")
        if isinstance(self.first_failure, LayerCheck):
            parts.append(f"first wrong layer: {self.first_failure}")
        elif self.first_failure is not None:
            parts.append(f"first wrong equation: {self.first_failure}")
        return "FAILED: " + "; ".join(parts)

    def _sections(self, table, bullet=""):
        out = []
        if self.equations and isinstance(self.equations[0], LayerCheck):
            out += ["", "layers, each backward fed autodiff's exact dy (float64), from the output down:",
                    table(*layer_table(self.equations))]
        elif self.equations:
            out += ["", "equations, each fed autodiff's exact inputs (float64):", table(*_equation_table(self.equations))]
        if self.worst_examples:
            out += ["", "worst examples (each row's gradient alone, working dtype vs float64 autodiff):",
                    table(*_example_table(self.worst_examples))]
        return out

    def __str__(self) -> str:
        return "\n".join(
            [self._title(), text_table(*leaf_table(self.leaves)), *details(self.leaves),
             *self._sections(text_table), self._verdict()]
        )

    def to_markdown(self) -> str:
        """The report as Markdown tables."""
        return "\n".join(
            [f"**{self._title()}**", "", markdown_table(*leaf_table(self.leaves)), "",
             *(f"- {d.strip()}" for d in details(self.leaves)),
             *self._sections(markdown_table), "", f"**{self._verdict()}**"]
        )

    def to_dict(self) -> dict:
        """JSON-ready: ``json.dumps(report.to_dict(), allow_nan=False)`` works."""
        first = self.first_failure
        return {
            "check": "check_grads",
            "dtype": self.dtype,
            "rtol": self.rtol,
            "loss": jsonable(self.loss),
            "stress": self.stress,
            "ok": self.ok,
            "failed": list(self.failed),
            "imprecise": list(self.imprecise),
            "unverified": list(self.unverified),
            "verified": list(self.verified),
            "rounding_level": list(self.rounding_level),
            "first_failure": None if first is None else first.to_dict(),
            "leaves": [leaf.to_dict() for leaf in self.leaves],
            "equations": [e.to_dict() for e in self.equations],
            "worst_examples": [e.to_dict() for e in self.worst_examples],
        }


def _leaf_names(params) -> list:
    return [f"params{jax.tree_util.keystr(path)}" for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


_loss = jax.jit(lambda net, p, x, y: net.loss(p, x, y), static_argnums=0)


def check_grads(
    net: MLP,
    params: Params,
    x: Array,
    y: Array,
    *,
    rtol: Optional[float] = None,
    finite_differences: bool = True,
    key: Optional[Array] = None,
    raise_on_failure: bool = False,
    equations: Optional[Equations] = None,
    stress: Optional[str] = None,
    worst_examples: int = 5,
    train: bool = False,
    check_equations: bool = True,
) -> GradCheckReport:
    """Checks ``net.loss_and_grad`` against ``jax.grad(net.loss)``: leaves, equations, rows.

    Args:
      net: a :class:`jbp.MLP`.
      params, x, y: where to check, as for ``net.loss``.
      rtol: a fixed relative tolerance per leaf instead of the derived one (see
        :mod:`jbp.verify.vjp`).
      finite_differences: also compare every leaf with central differences of the loss
        in float64 along a random direction (an oracle independent of autodiff).
      key: PRNG key for the finite-difference directions (default ``key(0)``).
      raise_on_failure: raise :class:`GradCheckFailure` (message: the report) on failure.
      equations: parts of the backward to use instead of jbp's own (:class:`Equations`);
        default jbp's, and then the leaves checked are ``net.loss_and_grad`` itself.
      stress: check at an adversarial point made from ``params`` and ``x`` instead:
        ``"saturate"`` (every layer's pre-activations scaled to rms
        :data:`SATURATED_Z`), ``"kinks"`` (each hidden unit's bias shifted so that one row
        sits at ``z = 0``, up to rounding: ReLU's kink) or ``"logits"`` (output
        pre-activations scaled to rms :data:`EXTREME_LOGIT`).
      worst_examples: how many rows to list in the per-example view (0: skip it).
      check_equations: run the equations view (two more compilations); ``False`` checks
        the leaves only, e.g. for a quick check whose failure is then diagnosed in full.
      train: for a :class:`jbp.Sequential`: check the training-mode loss (dropout
        active, its masks drawn from ``fold_in(key, 1)``: fixed, so the loss is a
        deterministic function of the parameters). Default evaluation mode.

    A :class:`jbp.Sequential` gets, in place of the per-equation view, one check per
    layer: each layer's ``backward`` fed autodiff's exact ``dy``
    (:mod:`jbp.verify.layerwise`); ``report.first_failure`` names the first wrong layer
    (its index and leaf, and the seed's equation for dense and activation layers).

    Returns:
      A :class:`GradCheckReport`. Where the loss overflows at these finite inputs, the
      leaves whose gradients are not finite fail, and the report says so.

    Raises:
      TypeError, ValueError: a bad argument, e.g. NaN or inf in ``params``, ``x`` or
        ``y`` (there is no gradient to compare there).
    """
    x, y = check_grads_args(
        net, params, x, y, rtol, finite_differences, key, raise_on_failure
    )
    _validate.flag("train", train)
    if not isinstance(check_equations, bool):
        raise TypeError(f"check_equations must be a bool, got {type(check_equations).__name__} {check_equations!r}")
    report, _ = run_check(
        net, params, x, y, rtol=rtol, finite_differences=finite_differences, key=key,
        equations=equations, stress=stress, worst_examples=worst_examples, train=train,
        check_equations=check_equations,
    )
    if raise_on_failure and not report.ok:
        raise GradCheckFailure(str(report))
    return report


def run_check(net, params, x, y, *, rtol, finite_differences, key, equations, stress, worst_examples,
              train=False, check_equations=True):
    """:func:`check_grads`, also returning the gradients under test re-run in float64."""
    x, y = base.inputs_and_targets(net, params, x, y)
    if equations is not None and not isinstance(equations, Equations):
        raise TypeError(f"equations must be a jbp.verify.grads.Equations, got {type(equations).__name__}")
    if not seed_layers_only(net) and equations is None and stress is None:
        return _run_layers_check(net, params, x, y, rtol=rtol, finite_differences=finite_differences,
                                 key=key, worst_examples=worst_examples, train=train)
    # read as the MLP its layers are (the report then speaks of that MLP's params[l])
    net, positions = seed_network(net, "equations= and stress=")
    params = tuple(params[i] for i in positions)
    if stress is not None:
        params = stress_point(net, params, x, _validate.name("stress", stress, STRESS))
    equations = Equations() if equations is None else equations
    dtype = np.dtype(x.dtype)
    names = _leaf_names(params)
    leaves, mine64 = _leaf_checks(_NetLoss(net), _NetGrad(net, equations), params, (x, y), names, dtype, rtol,
                                  finite_differences, jax.random.key(0) if key is None else key)
    eqs = _equation_checks(net, equations, params, x, y, dtype) if check_equations else ()
    rows = _worst_examples(net, equations, params, x, y, names, worst_examples) if worst_examples else ()
    loss = float(_loss(net, params, x, y))
    report = GradCheckReport(
        leaves=leaves,
        dtype=dtype.name,
        rtol=rtol,
        loss=loss,
        # a non-finite loss (overflow at finite inputs) leaves no gradient to trust
        ok=math.isfinite(loss) and all(leaf.ok for leaf in leaves) and all(e.verdict != WRONG for e in eqs),
        equations=eqs,
        worst_examples=rows,
        stress=stress,
    )
    return report, mine64


def _run_layers_check(net, params, x, y, *, rtol, finite_differences, key, worst_examples, train):
    """:func:`run_check` for a network of other layers: leaves, then layer by layer, then rows."""
    key = jax.random.key(0) if key is None else key
    forward_key = jax.random.fold_in(key, 1) if train else None
    aux = (x, y) if forward_key is None else (x, y, jax.random.key_data(forward_key))
    dtype = base.params(net, params)  # x may be integer token ids
    names = _leaf_names(params)
    leaves, mine64 = _leaf_checks(_NetLoss(net, train), _NetGrad(net, Equations(), train), params, aux, names,
                                  dtype, rtol, finite_differences, key)
    checks = layer_checks(net, params, x, y, forward_key, train, dtype)
    rows = _worst_examples(net, Equations(), params, x, y, names, worst_examples, aux[2:], train) if worst_examples else ()
    loss = float(_loss_with(_NetLoss(net, train), params, aux))
    report = GradCheckReport(
        leaves=leaves,
        dtype=dtype.name,
        rtol=rtol,
        loss=loss,
        ok=math.isfinite(loss) and all(leaf.ok for leaf in leaves) and all(c.verdict != WRONG for c in checks),
        equations=checks,
        worst_examples=rows,
    )
    return report, mine64


def _leaf_checks(loss, grad, params, aux, names, dtype, rtol, finite_differences, key):
    """:func:`verify_many` at the one point ``(params, aux)``: ``(leaf checks, the
    gradients under test re-run in float64)``."""
    expand = lambda tree: jax.tree.map(lambda a: np.asarray(a)[None], tree)
    (leaves,), mine64 = verify_many(
        loss, grad, expand(params), expand(aux), np.ones((1,), dtype), names, dtype=dtype, rtol=rtol,
        finite_differences=finite_differences, rng=numpy_rng(key),
    )
    return leaves, jax.tree.map(lambda a: a[0], mine64)


_loss_with = jax.jit(lambda loss, params, aux: loss(params, aux), static_argnums=0)


# --- Equations, one by one. -------------------------------------------------------------


def _equation_references(net, params, x, y):
    """The forward cache and autodiff's ``dL/dW``, ``dL/db``, ``dL/dz^(l)`` and ``dL/dx^(l)``
    (for hidden ``l``): ``jax.grad`` of the loss w.r.t. zero offsets on every ``z`` and ``x``."""
    L = net.n_layers
    activations = [get_activation(a) for a in net.activations]
    _, cache = forward(params, x, net.activations)

    def loss_with_offsets(params, dz, dx):
        h = x
        for l in range(L):
            z = dense(params[l], h) + dz[l]
            h = activations[l].f(z)
            if l < L - 1:
                h = h + dx[l]
        return get_loss(net.loss_name).value(z, h, y)

    offsets = (tuple(jnp.zeros_like(z) for z in cache.zs), tuple(jnp.zeros_like(a) for a in cache.xs[1:-1]))
    return (cache, *jax.grad(loss_with_offsets, argnums=(0, 1, 2))(params, *offsets))


def _equation_outputs(net, equations, params, y, references, lo):
    """Every equation's ``(output in float64, output from inputs rounded to lo, autodiff's
    value)``, from the output layer down, each fed autodiff's inputs (x64 must be on)."""
    eq = _resolve(equations)
    cache, grads, deltas, dxs = references
    activations = [get_activation(a) for a in net.activations]
    run = lambda fn, inputs, reference: (fn(*inputs), fn(*cast(inputs, lo)), reference)

    out = []
    for l in range(net.n_layers - 1, -1, -1):  # params[l] is layer l + 1
        if l == net.n_layers - 1:
            out.append(run(lambda zs, xs, y: eq.output_delta(net, Cache(zs, xs), y), (cache.zs, cache.xs, y), deltas[l]))
        else:
            out.append(run(eq.input_grad, (deltas[l + 1], params[l + 1].W), dxs[l]))  # BP3
            out.append(
                run(lambda z, a, d: eq.delta(activations[l], z, a, d), (cache.zs[l], cache.xs[l + 1], dxs[l]), deltas[l])
            )  # BP4
        out.append(
            run(lambda d, zs, xs: eq.weight_grad(d, eq.layer_input(Cache(zs, xs), l)), (deltas[l], cache.zs, cache.xs), grads[l].W)
        )  # BP5
        out.append(run(eq.bias_grad, (deltas[l],), grads[l].b))  # BP6
    return out


_equation_references_jit = jax.jit(_equation_references, static_argnums=0)
_equation_outputs_jit = jax.jit(_equation_outputs, static_argnums=(0, 1, 5))


def _equation_list(net, batch):
    """``(layer, equation, formula, reduction size)`` in the order of :func:`_equation_outputs`."""
    L, out = net.n_layers, []
    for layer in range(L, 0, -1):
        if layer == L:
            out.append((layer, "output delta", f"delta^({L}) = dL/dz^({L}) of the {net.loss_name} loss", net.sizes[-1]))
        else:
            out.append((layer, "BP3", f"dL/dx^({layer}) = delta^({layer + 1}) @ W^({layer + 1})", net.sizes[layer + 1]))
            out.append((layer, "BP4", f"delta^({layer}) = dL/dx^({layer}) * f'(z^({layer}))", 1))
        out.append((layer, "BP5", f"dW^({layer}) = delta^({layer}).T @ x^({layer - 1})", batch))
        out.append((layer, "BP6", f"db^({layer}) = sum over the batch of delta^({layer})", batch))
    return out


def _equation_checks(net, equations, params, x, y, dtype) -> tuple:
    lo = np.dtype(np.float32) if dtype == np.float64 else dtype
    u_lo = unit_roundoff(lo)
    with jax.enable_x64(True):
        params64, x64, y64 = host_cast((params, x, y), np.float64)
        references = _equation_references_jit(net, params64, x64, y64)
        outputs = jax.device_get(_equation_outputs_jit(net, equations, params64, y64, references, lo))
    return tuple(
        EquationCheck(layer, name, formula, *fed_verdict(got, got_lo, reference, reduction, u_lo))
        for (layer, name, formula, reduction), (got, got_lo, reference) in zip(_equation_list(net, x.shape[0]), outputs)
    )


def _equation_table(checks):
    layers = sorted({c.layer for c in checks}, reverse=True)
    columns = ("BP3", "BP4", "BP5", "BP6")
    head = ("layer", "BP3 dL/dx", "BP4 delta", "BP5 dW", "BP6 db")
    cell = lambda c: f"{c.rel_err:.1e}" + ("" if c.verdict == OK else f" {c.verdict}")
    rows = []
    for layer in layers:
        mine = {c.equation: c for c in checks if c.layer == layer}
        row = [str(layer)]
        for column in columns:
            if column == "BP4" and "output delta" in mine:
                row.append("output " + cell(mine["output delta"]))
            else:
                row.append(cell(mine[column]) if column in mine else "-")
        rows.append(tuple(row))
    return head, rows


# --- Per-example view. ------------------------------------------------------------------


def _per_example(net, equations, params, x, y, extra=(), train=False):
    """Each row's gradient by the backward (working dtype) and by autodiff (float64);
    ``extra`` is the rest of ``aux`` (a Sequential's key data), the same for every row."""
    user = _NetGrad(net, equations, train)
    primal = _NetLoss(net, train)
    params64 = cast(params, jnp.float64)

    def one(xi, yi):
        mine = user(params, (xi[None], yi[None], *extra), jnp.ones((), x.dtype))
        loss, reference = jax.value_and_grad(primal)(params64, (*cast((xi[None], yi[None]), jnp.float64), *extra))
        return mine, reference, loss

    return jax.vmap(one)(x, y)


_per_example_jit = jax.jit(_per_example, static_argnums=(0, 1, 6))


def _worst_examples(net, equations, params, x, y, names, k, extra=(), train=False) -> tuple:
    with jax.enable_x64(True):
        mine, reference, losses = jax.device_get(_per_example_jit(net, equations, params, x, y, tuple(extra), train))
    errors = []
    for m, r in zip(jax.tree.leaves(mine), jax.tree.leaves(reference)):
        m, r = np.asarray(m, np.float64), np.asarray(r, np.float64)
        scale = np.max(np.abs(r)) if r.size else 0.0
        d = np.abs(m - r).reshape(len(r), -1).max(axis=1, initial=0.0)
        errors.append(np.where(np.isnan(d), np.inf, d) / (scale if scale > 0 else 1.0))
    errors = np.stack(errors, axis=1)  # (rows, leaves)
    worst = np.argsort(-errors.max(axis=1), kind="stable")[:k]
    return tuple(
        ExampleCheck(int(i), float(errors[i].max()), names[int(np.argmax(errors[i]))], float(losses[i]))
        for i in worst
    )


def _example_table(rows):
    head = ("row", "rel err", "worst leaf", "loss")
    return head, [(str(r.row), f"{r.rel_err:.2e}", r.leaf, f"{r.loss:.4g}") for r in rows]


# --- Stress points. ---------------------------------------------------------------------


def stress_point(net: MLP, params: Params, x: Array, kind: str) -> Params:
    """``params`` moved, layer by layer, to an adversarial point of ``kind`` (see check_grads)."""
    h, out, L = x, [], net.n_layers
    for l, (layer, name) in enumerate(zip(params, net.activations)):
        z = dense(layer, h)
        rms = jnp.sqrt(jnp.mean(z * z))
        if kind == "saturate" and name != "softmax" and rms > 0:
            layer = Layer(layer.W * (SATURATED_Z / rms), layer.b * (SATURATED_Z / rms))
        elif kind == "logits" and l == L - 1 and rms > 0:
            layer = Layer(layer.W * (EXTREME_LOGIT / rms), layer.b * (EXTREME_LOGIT / rms))
        elif kind == "kinks" and l < L - 1:
            units = jnp.arange(z.shape[1])
            layer = Layer(layer.W, layer.b - z[units % z.shape[0], units])
        out.append(layer)
        h = get_activation(name).f(dense(layer, h))
    return tuple(out)


# --- Argument checks at the boundary. ---------------------------------------------


def check_grads_args(net, params_, x, y, rtol, finite_differences, key, raise_on_failure) -> tuple:
    """All of :func:`jbp.check_grads`'s checks; returns ``(x, y)``.

    Non-finite params or data are refused: there is no gradient to compare there.
    """
    base.network(net)
    x, y = base.inputs_and_targets(net, params_, x, y)
    base.finite_params(params_)
    _validate.finite("x", x)
    _validate.finite("y", y)
    if rtol is not None:
        _validate.real("rtol", rtol, positive=True)
    _validate.flag("finite_differences", finite_differences)
    _validate.flag("raise_on_failure", raise_on_failure)
    if key is not None:
        _validate.prng_key("key", key)
    return x, y
