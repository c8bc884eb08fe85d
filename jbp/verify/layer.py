"""Checking one layer's hand-derived backward: :func:`check_layer`.

A layer (:mod:`jbp.layers.protocol`) is a ``forward``/``backward`` pair, so it is
checked by :func:`jbp.check_vjp`'s method (:mod:`jbp.verify.oracles`: derived
tolerances, a float64 re-run, finite differences) at a point drawn for it: its own
parameters moved off their initial values, random inputs and a random cotangent.

A layer whose inputs are integer ids (the optional attribute ``input_vocab``, as
:class:`jbp.layers.Embedding`'s) is checked at valid ids, ``x`` drawn in
``[0, input_vocab)``; it has no ``dx``, so only its parameters' gradients are checked.

A layer with the optional ``per_example_sq_norms`` method (what per-example clipping and
DP-SGD use) has it checked too, in float64: against the squared norms of each example's
own parameter gradient, ``jax.vjp`` of the batch's forward pulled back from ``dy`` with
every other row zeroed (so a stochastic layer keeps the batch's masks).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.layers.protocol import check_layer_object
from jbp.verify.oracles import host_cast, numpy_rng, path_name, verify_many, working_dtype
from jbp.verify.report import GradCheckFailure, jsonable
from jbp.verify.vjp import VJPCheckReport

Array = jax.Array

#: Default params are the layer's init with each leaf moved by ``N(0, σ²)``, ``σ`` this
#: fraction of the leaf's rms (or this, absolute, for an all-zero leaf): a scale of ones
#: or a bias of zeros would hide a mistake that multiplies or adds it.
PARAM_NOISE = 0.5
#: ``per_example_sq_norms`` passes when within this relative error of the reference, both
#: in float64: far above float64 rounding (~1e-16 per term), far below a wrong formula.
PER_EXAMPLE_RTOL = 1e-9


@dataclasses.dataclass(frozen=True)
class PerExampleCheck:
    """The layer's ``per_example_sq_norms`` against autodiff's per-example gradients.

    Attributes:
      rel_err: ``max_i |method_i − reference_i| / max_i reference_i`` (float64).
      tol: :data:`PER_EXAMPLE_RTOL`.
      ok: ``rel_err <= tol``, with the shape ``(batch,)``.
      detail: what was wrong, when not ok.
    """

    rel_err: float
    tol: float
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        verdict = "ok" if self.ok else f"WRONG ({self.detail})" if self.detail else "WRONG"
        return (f"per_example_sq_norms vs each example's jax.vjp (float64): rel err {self.rel_err:.1e}, "
                f"tol {self.tol:.0e}: {verdict}")


@dataclasses.dataclass(frozen=True)
class LayerCheckReport(VJPCheckReport):
    """The result of :func:`check_layer`: a :class:`jbp.VJPCheckReport` (``ok``,
    ``failed``, ``str()`` a table) whose leaves are named ``params...`` and ``x``.

    Attributes:
      layer: the layer's ``repr``.
      train: whether the forward ran in training mode.
    """

    layer: str = ""
    train: bool = False
    per_example: Optional[PerExampleCheck] = None

    @property
    def failed(self) -> tuple:
        """The wrong leaves, and ``"per_example_sq_norms"`` when that method is wrong."""
        wrong_norms = self.per_example is not None and not self.per_example.ok
        return super().failed + ("per_example_sq_norms",) * wrong_norms

    def _more(self) -> list:
        return [] if self.per_example is None else [str(self.per_example)]

    def _title(self) -> str:
        return (
            f"check_layer: {self.layer} backward vs jax.vjp of its forward (train={self.train}) at one "
            f"random cotangent dy ~ N(0, 1), {self.dtype} (reference in float64)"
        )

    def to_dict(self) -> dict:
        per_example = None if self.per_example is None else {
            k: jsonable(v) for k, v in dataclasses.asdict(self.per_example).items()}
        return {**super().to_dict(), "check": "check_layer", "layer": self.layer, "train": self.train,
                "per_example_sq_norms": per_example}


def check_layer(
    layer: Any,
    input_shape: tuple,
    *,
    key: Array,
    dtype: Any = np.float32,
    train: bool = False,
    batch: int = 4,
    params: Any = None,
    x: Any = None,
    rtol: Optional[float] = None,
    finite_differences: bool = True,
    raise_on_failure: bool = False,
) -> LayerCheckReport:
    """Checks a layer's ``backward`` against ``jax.vjp`` of its ``forward``, leaf by leaf.

    Example::

      report = jbp.check_layer(jbp.layers.Conv2D(4, 3, strides=2), (8, 8, 1), key=jax.random.key(0))
      report.ok, report.failed        # True, ()  — or False, ("params.W",)
      print(report)                   # one row per leaf of params, then x

    The point: ``params`` from ``layer.init(key, input_shape, dtype)``, each leaf moved
    by noise (:data:`PARAM_NOISE`) so that no scale is exactly one and no bias zero;
    ``x`` ``(batch, *input_shape)`` and the cotangent ``dy`` ~ ``N(0, 1)``; for a layer
    with ``input_vocab``, ``x`` is uniform integer ids and only ``params`` are checked. A stochastic
    layer's forward runs with one fixed key (drawn from ``key``), so that it is the same
    function in every run of the check.

    Args:
      layer: any layer (see :class:`jbp.layers.LayerProtocol`); its forward is re-run in
        float64 (the oracle), so write it dtype-generic.
      input_shape: the input's shape without the batch axis.
      key: PRNG key for the parameters, the layer's forward key and the random draws.
      dtype: the working dtype (default float32); with ``params`` given, theirs.
      train: run the forward in training mode (dropout active).
      batch: rows of ``x``.
      params, x: a point of your own instead of the drawn one (``x`` with its batch axis).
      rtol, finite_differences, raise_on_failure: as for :func:`jbp.check_vjp`.

    Returns:
      A :class:`LayerCheckReport`.

    Raises:
      ValueError: when ``layer.init``'s output shape is not the shape ``forward`` gives.
    """
    layer = check_layer_object("layer", layer)
    _validate.prng_key("key", key)
    dtype = _validate.float_dtype("dtype", dtype)
    train = _validate.flag("train", train)
    batch = _validate.positive_int("batch", batch)
    rng = numpy_rng(key)
    if params is None:
        params, out_shape = layer.init(key, tuple(input_shape), dtype)
        params = jax.tree.map(lambda p: _moved(np.asarray(p), rng), params)
    else:
        if jax.tree.leaves(params):
            dtype = working_dtype("params", params)
        out_shape = _init_shapes(layer, key, tuple(input_shape), dtype)
    vocab = getattr(layer, "input_vocab", None)
    if x is None:
        x = (rng.integers(0, vocab, (batch, *input_shape), dtype=np.int32) if vocab is not None
             else np.asarray(rng.standard_normal((batch, *input_shape)), dtype))
    ids = vocab is not None  # integer inputs: no dx, x is data (aux), not an argument
    dtype = working_dtype("params" if ids else "params and x", params if ids else (params, x))
    forward = _LayerForward(layer, _key_data(jax.random.fold_in(key, 1)), train, ids)
    y = jax.eval_shape(lambda p, x: forward.run(p, x)[0], params, x)
    if tuple(y.shape[1:]) != tuple(out_shape):
        raise ValueError(
            f"layer.init says the output shape is {tuple(out_shape)} but forward gives {tuple(y.shape[1:])} "
            f"(for input_shape {tuple(input_shape)}, without the batch axis)"
        )
    dy = np.asarray(rng.standard_normal(y.shape), y.dtype)
    expand = lambda tree: jax.tree.map(lambda a: np.asarray(a)[None], tree)
    args = (expand(params),) if ids else (expand(params), expand(x))
    names = [path_name(p, "params") for p, _ in jax.tree.flatten_with_path(params)[0]]
    if not ids:
        names += [path_name(p, "x") for p, _ in jax.tree.flatten_with_path(x)[0]]
    (leaves,), _ = verify_many(
        forward, _LayerBackward(forward), args, expand(x) if ids else None, expand(dy), names, dtype=dtype,
        rtol=rtol, finite_differences=finite_differences, rng=rng,
    )
    per_example = _per_example(forward, params, x, dy) if _has_per_example_norms(layer, params) else None
    ok = all(leaf.ok for leaf in leaves) and (per_example is None or per_example.ok)
    report = LayerCheckReport(leaves, dtype.name, ok, repr(layer), train, per_example)
    if raise_on_failure and not report.ok:
        raise GradCheckFailure(str(report))
    return report


def _has_per_example_norms(layer, params) -> bool:
    return callable(getattr(layer, "per_example_sq_norms", None)) and bool(jax.tree.leaves(params))


def _per_example(forward, params, x, dy) -> PerExampleCheck:
    """The layer's ``per_example_sq_norms`` against autodiff, both in float64."""
    with jax.enable_x64(True):
        params, x, dy = host_cast((params, x, dy), np.float64)
        got, want = jax.device_get(_per_example_jit(forward, params, x, dy))
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return PerExampleCheck(math.inf, PER_EXAMPLE_RTOL, False,
                               f"it returned shape {got.shape}, expected {want.shape}: one value per example")
    err = float(np.max(np.where(np.isnan(got), np.inf, np.abs(got - want)), initial=0.0))
    scale = float(np.max(want, initial=0.0))
    rel = err / scale if scale > 0 else err
    return PerExampleCheck(rel, PER_EXAMPLE_RTOL, bool(rel <= PER_EXAMPLE_RTOL))


def _per_example_pair(forward, params, x, dy):
    """``(the method's (B,), reference (B,))``: the reference is each example's own
    ``dparams`` by ``jax.vjp`` of the batch's forward, ``dy`` with the other rows zeroed."""
    y, residuals = forward.run(params, x)
    got = forward.layer.per_example_sq_norms(params, residuals, dy)
    _, pullback = jax.vjp(lambda p: forward.run(p, x)[0], params)
    batch = dy.shape[0]  # x may be a pytree (a recurrent layer's (x, initial state))
    rows = jnp.eye(batch, dtype=dy.dtype).reshape(batch, batch, *(1,) * (dy.ndim - 1))

    def sq_norm(row):
        (dparams,) = pullback(dy * row)
        return sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(dparams))

    return got, jax.vmap(sq_norm)(rows)


_per_example_jit = jax.jit(_per_example_pair, static_argnums=0)


def _moved(p, rng):
    if not np.issubdtype(p.dtype, np.floating) and p.dtype != jnp.bfloat16:
        return p
    rms = float(np.sqrt(np.mean(np.square(p.astype(np.float64))))) if p.size else 0.0
    sigma = PARAM_NOISE * (rms if rms > 0 else 1.0)
    return np.asarray(p + sigma * rng.standard_normal(p.shape), p.dtype)


def _init_shapes(layer, key, input_shape, dtype) -> tuple:
    """``layer.init``'s output shape, traced only."""
    box = {}

    def init(key):
        params, box["out"] = layer.init(key, input_shape, dtype)
        return params

    jax.eval_shape(init, key)
    return box["out"]


def _key_data(key) -> tuple:
    """A key as hashable data (the forward is static to ``jit``)."""
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return typed, tuple(int(v) for v in np.asarray(jax.random.key_data(key) if typed else key).ravel())


# The problem, in check_vjp's terms: frozen dataclasses, hashed by the layer and the key,
# so that jit's cache is hit again when the same layer is checked twice.


@dataclasses.dataclass(frozen=True)
class _LayerForward:
    layer: Any
    key: tuple
    train: bool
    ids: bool = False  # x is integer ids: in aux, not differentiated

    def run(self, params, x):
        """``(y, residuals)`` with the fixed key."""
        typed, data = self.key
        key = jnp.asarray(data, jnp.uint32)
        return self.layer.forward(params, x, key=jax.random.wrap_key_data(key) if typed else key, train=self.train)

    def __call__(self, args, aux):
        """``y``: what ``jax.vjp`` differentiates."""
        params, x = (args[0], aux) if self.ids else args
        return self.run(params, x)[0]


@dataclasses.dataclass(frozen=True)
class _LayerBackward:
    forward: _LayerForward

    def __call__(self, args, aux, dy):
        params, x = (args[0], aux) if self.forward.ids else args
        _, residuals = self.forward.run(params, x)
        grads = self.forward.layer.backward(params, residuals, dy)
        if not isinstance(grads, (tuple, list)) or len(grads) != 2:
            raise TypeError(f"layer.backward must return a pair (dparams, dx), got {type(grads).__name__}")
        return (grads[0],) if self.forward.ids else tuple(grads)
