"""Checking any hand-written backward against autodiff: :func:`check_vjp`.

The method (three oracles, derived tolerances, four verdicts) is in
:mod:`jbp.verify.oracles`; this module adapts a user's ``forward``/``backward`` pair to it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np

Array = jax.Array
from jbp.verify.oracles import path_name, numpy_rng, verify_many, working_dtype
from jbp.verify.report import GradCheckFailure, LeafVerdicts, details, leaf_table, markdown_table, text_table, verdict_line

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VJPCheckReport(LeafVerdicts):
    """The result of :func:`check_vjp`: ``ok`` is a plain ``bool``, ``str()`` a table.

    Attributes:
      leaves: one :class:`LeafCheck` per leaf of ``params``, then of ``x``.
      dtype: the working dtype.
      ok: no leaf is ``WRONG``.
    """

    leaves: tuple
    dtype: str
    ok: bool

    def _title(self) -> str:
        return (
            f"check_vjp: backward vs jax.vjp of forward at one random cotangent dy ~ N(0, 1), "
            f"{self.dtype} (reference in float64)"
        )

    def _more(self) -> list:
        """Lines of further checks, after the leaves' details (none here)."""
        return []

    def __str__(self) -> str:
        return "\n".join([self._title(), text_table(*leaf_table(self.leaves)), *details(self.leaves), *self._more(),
                          verdict_line(self)])

    def to_markdown(self) -> str:
        """The report as Markdown: a heading line, the leaf table, details, the verdict."""
        return "\n".join(
            [f"**{self._title()}**", "", markdown_table(*leaf_table(self.leaves)), "",
             *(f"- {d.strip()}" for d in [*details(self.leaves), *self._more()]), f"**{verdict_line(self)}**"]
        )

    def to_dict(self) -> dict:
        """JSON-ready: ``json.dumps(report.to_dict(), allow_nan=False)`` works."""
        return {
            "check": "check_vjp",
            "dtype": self.dtype,
            "ok": self.ok,
            "failed": list(self.failed),
            "imprecise": list(self.imprecise),
            "unverified": list(self.unverified),
            "leaves": [leaf.to_dict() for leaf in self.leaves],
        }


def check_vjp(
    forward: Callable,
    backward: Callable,
    params: Any,
    x: Any,
    *,
    key: Array,
    dy: Any = None,
    rtol: Optional[float] = None,
    reduction_size: Optional[int] = None,
    finite_differences: bool = True,
    raise_on_failure: bool = False,
) -> VJPCheckReport:
    """Checks a hand-written backward against ``jax.vjp`` of its forward, leaf by leaf.

    Example::

      def forward(params, x):
          z = x @ params["w"].T + params["b"]
          y = jnp.tanh(z)
          return y, (x, y)

      def backward(params, cache, dy):
          x, y = cache
          delta = dy * (1 - y * y)
          return {"w": delta.T @ x, "b": delta.sum(0)}, delta @ params["w"]

      report = jbp.check_vjp(forward, backward, params, x, key=jax.random.key(0))
      report.ok, report.failed        # True, ()  — or False, ("['b']",)
      print(report)                   # one row per leaf

    Args:
      forward: ``forward(params, x) -> (y, cache)``; ``y`` an array or pytree of arrays.
        It is re-run in float64 (the oracle), so write it dtype-generic.
      backward: ``backward(params, cache, dy) -> (dparams, dx)``, ``dparams`` with the
        structure of ``params`` and ``dx`` that of ``x``.
      params: a pytree of floating arrays.
      x: a floating array (or pytree of them) of the same dtype.
      key: PRNG key for the cotangent and the finite-difference directions (drawn with
        NumPy from it: a check compiles nothing for its random numbers).
      dy: the cotangent; default one draw of ``N(0, 1)`` per entry of ``y``.
      rtol: a fixed relative tolerance instead of the derived one (see the module doc).
      reduction_size: the longest sum in forward or backward (``R`` of the tolerance);
        default the largest leaf of ``params``, ``x`` and ``y``.
      finite_differences: also compare each leaf with central differences in float64
        along a random direction (an oracle independent of autodiff: it catches a
        forward whose own autodiff rule is wrong).
      raise_on_failure: raise :class:`GradCheckFailure`, with the table, if any leaf is
        ``WRONG``.

    Returns:
      A :class:`VJPCheckReport`.
    """
    expand = lambda tree: jax.tree.map(lambda a: np.asarray(a)[None], tree)
    (report,) = check_vjp_many(
        forward, backward, expand(params), expand(x), key=key, dy=None if dy is None else expand(dy),
        rtol=rtol, reduction_size=reduction_size, finite_differences=finite_differences,
    )
    if raise_on_failure and not report.ok:
        raise GradCheckFailure(str(report))
    return report


def check_vjp_many(
    forward: Callable,
    backward: Callable,
    params: Any,
    x: Any,
    *,
    key: Array,
    dy: Any = None,
    rtol: Optional[float] = None,
    reduction_size: Optional[int] = None,
    finite_differences: bool = True,
) -> tuple:
    """:func:`check_vjp` at many points at once: every leaf of ``params`` and ``x`` carries
    a leading axis, one entry per point, and forward, backward and the oracles are
    ``vmap`` ped over it (one compilation for all points).

    Example::

      reports = jbp.check_vjp_many(forward, backward, params_batch, x_batch, key=key)
      sum(not r.ok for r in reports)   # points where a leaf is WRONG

    Args:
      forward, backward, key, rtol, reduction_size, finite_differences: as for
        :func:`check_vjp`.
      params, x: as for :func:`check_vjp`, each leaf with a leading axis of points.
      dy: the cotangents, with the leading axis; default ``N(0, 1)`` draws.

    Returns:
      One :class:`VJPCheckReport` per point.
    """
    if not callable(forward) or not callable(backward):
        raise TypeError(
            f"forward and backward must be functions, got {type(forward).__name__} and "
            f"{type(backward).__name__}"
        )
    args = (params, x)
    dtype = working_dtype("params and x", args)
    sizes = {np.shape(a)[0] if np.ndim(a) else None for a in jax.tree.leaves(args)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every leaf of params and x needs the same leading axis of points, got sizes {sizes}")
    primal, user = _Forward(forward), _Backward(forward, backward)
    rng = numpy_rng(key)
    y_leaves, y_tree = jax.tree.flatten(jax.eval_shape(jax.vmap(primal), args, None))
    if dy is None:
        dy = [rng.standard_normal(a.shape) for a in y_leaves]
    else:
        dy_leaves, dy_tree = jax.tree.flatten(dy)
        if dy_tree != y_tree or any(np.shape(d) != a.shape for d, a in zip(dy_leaves, y_leaves)):
            raise ValueError(
                f"dy must have the structure and shapes of forward's output, {[a.shape for a in y_leaves]}, "
                f"got {[np.shape(d) for d in dy_leaves]}"
            )
        dy = dy_leaves
    dy = jax.tree.unflatten(y_tree, [np.asarray(d, a.dtype) for d, a in zip(dy, y_leaves)])
    names = [path_name(p, "") or "params" for p, _ in jax.tree.flatten_with_path(params)[0]]
    names += [path_name(p, "x") for p, _ in jax.tree.flatten_with_path(x)[0]]
    rows, _ = verify_many(
        primal, user, args, None, dy, names, dtype=dtype, rtol=rtol,
        finite_differences=finite_differences, rng=rng, reduction_size=reduction_size,
    )
    return tuple(VJPCheckReport(leaves, dtype.name, all(leaf.ok for leaf in leaves)) for leaves in rows)


# --- The problem: what is differentiated (primal) and what is checked (user). ---------
# Frozen dataclasses, hashed by the functions they hold, so that jit's cache is hit
# again when the same forward and backward are checked twice.


@dataclasses.dataclass(frozen=True)
class _Forward:
    forward: Callable

    def __call__(self, args, aux):
        params, x = args
        return self.forward(params, x)[0]


@dataclasses.dataclass(frozen=True)
class _Backward:
    forward: Callable
    backward: Callable

    def __call__(self, args, aux, dy):
        params, x = args
        _, cache = self.forward(params, x)
        grads = self.backward(params, cache, dy)
        if not isinstance(grads, (tuple, list)) or len(grads) != 2:
            raise TypeError(
                f"backward must return a pair (dparams, dx), got {type(grads).__name__}"
            )
        return tuple(grads)

