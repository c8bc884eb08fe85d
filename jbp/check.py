"""Verification of the hand-derived gradients against autodiff (the only place jbp uses it).

:func:`check_grads` compares, leaf by leaf, ``net.loss_and_grad`` (the hand-derived
backward pass) with ``jax.grad(net.loss)`` at the parameters' own dtype, and with a
second oracle that shares no code with either: central finite differences of the loss
in float64 along a random direction per leaf.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.params import Params

Array = jax.Array

#: Default relative tolerance of the manual-vs-autodiff comparison, by dtype.
RTOL = {
    np.dtype(np.float64): 1e-10,
    np.dtype(np.float32): 1e-5,
    np.dtype(jnp.bfloat16): 2e-2,
    np.dtype(np.float16): 5e-3,
}
#: Relative tolerance of the float64 finite-difference oracle.
FD_RTOL = 1e-6
_FD_STEP = 1e-5


# Compiled once per (network, shapes, dtypes): eager dispatch would compile every
# primitive separately, which is slower than one compilation of the whole function.
_manual_loss_and_grad = jax.jit(lambda net, p, x, y: net.loss_and_grad(p, x, y), static_argnums=0)
_autodiff_grad = jax.jit(lambda net, p, x, y: jax.grad(net.loss)(p, x, y), static_argnums=0)
_loss = jax.jit(lambda net, p, x, y: net.loss(p, x, y), static_argnums=0)


class GradCheckFailure(AssertionError):
    """Raised by ``check_grads(..., raise_on_failure=True)``; the message is the table."""


@dataclasses.dataclass(frozen=True)
class LeafCheck:
    """One parameter leaf's comparison.

    Attributes:
      name: the leaf, e.g. ``"params[0].W"`` (layer 1's weights).
      shape: its shape.
      max_abs_err: ``max |manual − autodiff|``.
      rel_err: ``max_abs_err / max |autodiff|`` (``max_abs_err`` if autodiff is all zero).
      fd_rel_err: ``|FD − <manual, v>| / (‖manual‖ ‖v‖)`` for a random direction ``v``,
        all in float64; ``None`` if finite differences were not run.
      ok: ``rel_err <= rtol`` and ``fd_rel_err <= FD_RTOL``.
    """

    name: str
    shape: tuple
    max_abs_err: float
    rel_err: float
    fd_rel_err: Optional[float]
    ok: bool


@dataclasses.dataclass(frozen=True)
class GradCheckReport:
    """The result of :func:`check_grads`. ``ok`` is a plain ``bool``; ``str()`` is a table."""

    leaves: tuple
    dtype: str
    rtol: float
    loss: float
    ok: bool

    @property
    def failed(self) -> tuple:
        """Names of the leaves that failed."""
        return tuple(leaf.name for leaf in self.leaves if not leaf.ok)

    def __str__(self) -> str:
        head = ("leaf", "shape", "max abs err", "rel err", "FD rel err (f64)", "ok")
        rows = [
            (
                c.name,
                "x".join(map(str, c.shape)),
                f"{c.max_abs_err:.2e}",
                f"{c.rel_err:.2e}",
                "-" if c.fd_rel_err is None else f"{c.fd_rel_err:.2e}",
                "ok" if c.ok else "FAIL",
            )
            for c in self.leaves
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip()
        verdict = "PASSED" if self.ok else f"FAILED: {', '.join(self.failed)}"
        if not math.isfinite(self.loss):
            verdict += f" (the loss is {self.loss} here: nothing to compare)"
        return "\n".join(
            [
                f"gradient check, manual vs jax.grad ({self.dtype}, rtol {self.rtol:g}; "
                f"FD rtol {FD_RTOL:g}), loss {self.loss:.6g}",
                fmt(head),
                *map(fmt, rows),
                verdict,
            ]
        )


def _leaf_names(params) -> list:
    return [f"params[{l}].{leaf}" for l in range(len(params)) for leaf in ("W", "b")]


def _fd_rel_errors(net, params, x, y, key) -> list:
    """Central differences of the loss in float64 along one random direction per leaf."""
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        y64 = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.asarray(y, jnp.float64)
        _, g64 = _manual_loss_and_grad(net, p64, x64, y64)
        leaves, treedef = jax.tree.flatten(p64)
        errors = []
        for i, (g, key_i) in enumerate(zip(jax.tree.leaves(g64), jax.random.split(key, len(leaves)))):
            v = jax.random.normal(key_i, g.shape, jnp.float64)
            shifted = lambda s: jax.tree.unflatten(
                treedef, [a + s * v if j == i else a for j, a in enumerate(leaves)]
            )
            loss_at = lambda s: _loss(net, shifted(s), x64, y64)
            fd = (loss_at(_FD_STEP) - loss_at(-_FD_STEP)) / (2 * _FD_STEP)
            scale = float(jnp.linalg.norm(g) * jnp.linalg.norm(v))
            err = abs(float(fd - jnp.vdot(g, v)))
            errors.append(err / scale if scale > 0 else err)
        return errors


def check_grads(
    net,
    params: Params,
    x: Array,
    y: Array,
    *,
    rtol: Optional[float] = None,
    finite_differences: bool = True,
    key: Optional[Array] = None,
    raise_on_failure: bool = False,
) -> GradCheckReport:
    """Checks ``net.loss_and_grad`` against ``jax.grad(net.loss)``, leaf by leaf.

    Args:
      net: a :class:`jbp.MLP`.
      params, x, y: where to check, as for ``net.loss``.
      rtol: tolerance on each leaf's ``max |manual − autodiff| / max |autodiff|``;
        default by dtype (:data:`RTOL`: 1e-10 for float64, 1e-5 for float32).
      finite_differences: also compare with central differences in float64.
      key: PRNG key for the finite-difference directions (default ``key(0)``).
      raise_on_failure: raise :class:`GradCheckFailure` (message: the table) on failure.

    Returns:
      A :class:`GradCheckReport`. Where the loss overflows at these finite inputs, the
      leaves whose gradients are not finite fail, and the report says so.

    Raises:
      TypeError, ValueError: a bad argument, e.g. NaN or inf in ``params``, ``x`` or
        ``y`` (there is no gradient to compare there).
    """
    x, y = _validate.check_grads_args(
        net, params, x, y, rtol, finite_differences, key, raise_on_failure
    )
    dtype = np.dtype(x.dtype)
    if rtol is None:
        rtol = RTOL.get(dtype, 1e-5)
    loss, manual = _manual_loss_and_grad(net, params, x, y)
    autodiff = _autodiff_grad(net, params, x, y)
    fd = (
        _fd_rel_errors(net, params, x, y, jax.random.key(0) if key is None else key)
        if finite_differences
        else [None] * len(jax.tree.leaves(params))
    )
    leaves = []
    for name, g, r, fd_err in zip(
        _leaf_names(params), jax.tree.leaves(manual), jax.tree.leaves(autodiff), fd
    ):
        g64, r64 = np.asarray(g, np.float64), np.asarray(r, np.float64)
        abs_err = float(np.max(np.abs(g64 - r64)))
        scale = float(np.max(np.abs(r64)))
        rel = abs_err / scale if scale > 0 else abs_err
        ok = math.isfinite(rel) and rel <= rtol and (fd_err is None or fd_err <= FD_RTOL)
        leaves.append(LeafCheck(name, tuple(g.shape), abs_err, rel, fd_err, ok))
    report = GradCheckReport(
        tuple(leaves), str(dtype), rtol, float(loss), all(leaf.ok for leaf in leaves)
    )
    if raise_on_failure and not report.ok:
        raise GradCheckFailure(str(report))
    return report
