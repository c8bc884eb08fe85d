"""Checking any hand-written backward against autodiff, leaf by leaf, without crying wolf.

:func:`check_vjp` takes a user's ``forward(params, x) -> (y, cache)`` and
``backward(params, cache, dy) -> (dparams, dx)`` and gives every leaf of ``(params, x)``
one of four verdicts:

- ``ok``: the backward matches ``jax.vjp`` of the forward within the tolerance derived
  below, in its own dtype and in float64.
- ``WRONG``: the formula is wrong. Three things must agree before this is said: (1) the
  backward misses the reference in its own dtype, (2) it still misses when forward and
  backward are re-run in float64 (a wrong formula keeps its error at any precision,
  rounding does not), and (3) a second oracle that shares no code with autodiff,
  central finite differences of the forward in float64 along the discrepancy, sides with
  autodiff, at a point where the forward is smooth (Taylor remainder of order ~2 on both
  sides).
- ``imprecise``: the formula is right (float64 agrees) but in the working dtype it
  rounds worse than autodiff does here, beyond the tolerance: a numerically unstable
  formula (``exp(z) / (1 + exp(z))`` overflowing, a softmax's ``x (g − <g, x>)`` where
  the softmax saturates) or a kink crossed by rounding. Not a failure; listed so that it
  is seen before it turns into NaNs.
- ``unverified``: a float64 mismatch that the second oracle cannot confirm: the forward
  is not smooth there (a ReLU kink), finite differences side with the backward (an
  autodiff rule is off), or they cannot resolve it. Not a failure.

Tolerance, per leaf, on ``max |backward − reference|`` (the reference is ``jax.vjp`` in
float64 at the same inputs, so it carries no rounding of the working dtype)::

    tol = max(RHO · e_ad · u / u_ad,  C · u · sqrt(R) · s)

- ``u``: unit roundoff of the dtype checked (``eps / 2``: 6e-8 for float32, 1.1e-16 for
  float64); ``u_ad``: that of the dtype autodiff was probed in (the working dtype, or
  float32 when that is float64).
- ``e_ad``: ``max |jax.vjp in that dtype − reference|``, autodiff's own rounding error at
  this point: it measures the leaf's conditioning (cancellation in a bias sum, saturated
  units, long reductions) where no a-priori bound can. A correct backward may round
  differently from autodiff (another summation order, ``x (1 - x)`` for ``sigmoid'``);
  :data:`RHO` allows for that.
- ``C · u · sqrt(R) · s``: the probabilistic rounding bound of a length-``R`` sum
  (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), relative to the
  leaf's scale ``s = max |reference|``; a floor for leaves where autodiff happens to be
  exact. ``R`` is the longest reduction (default: the largest leaf of params, x and y).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

from jbp.verify.report import IMPRECISE, OK, UNVERIFIED, WRONG, LeafCheck

Array = jax.Array

#: Allowance for a correct backward rounding differently from autodiff (see module doc).
#: Measured on random correct float32 layers like those of scripts/false_alarm_study.py:
#: over 84,000 leaves the largest factor needed was 3.3 (softmax outputs aside: the
#: textbook ``x (g − <g, x>)`` rounds worse than autodiff's form where the softmax
#: saturates; jbp's softmax backward shifts and re-centres it, see
#: :mod:`jbp.layers.activations`).
RHO = 16.0
#: Constant of the a-priori rounding floor ``C · u · sqrt(R) · s``.
C = 8.0
#: Relative tolerance of the float64 finite-difference oracle along a random direction.
FD_RTOL = 1e-6

_U64 = float(np.finfo(np.float64).eps) / 2
# Finite-difference steps, relative to the typical size of the leaf's entries (times the
# square root of its size, for a unit direction): 1e-1 down to 1e-7 in steps of sqrt(10).
# The sweep picks the step where successive central differences agree best.
_STEPS = 0.1 * 10.0 ** (-np.arange(13) / 2)
# Autodiff is probed at this many copies of each point, each input jittered by -1, 0 or
# +1 ulp (the first copy unjittered): its largest error over them estimates the rounding
# noise of a correct implementation (one copy's error can be small by luck).
_PROBES = 8
# An error that does not shrink by this factor from the working dtype to float64 does
# not come from rounding.
_PRECISION_GAIN = 10.0



def _reference(primal, args, aux, cot):
    """``jax.vjp`` of ``primal`` at ``args``, pulled back from ``cot``."""
    _, vjp_fn = jax.vjp(lambda a: primal(a, aux), args)
    return vjp_fn(cot)[0]


def _stats(mine, probe, mine64, ref64, u, u_ad, root_r, rtol=None) -> list:
    """Per leaf and point: errors, derived tolerances and similarity, in float64 (NumPy).

    Args:
      mine: the user's gradients in the working dtype; every leaf ``(points, ...)``.
      probe: ``jax.vjp`` in the probe dtype (working dtype, or float32 for float64) at
        :data:`_PROBES` copies of each point jittered by an ulp; leaves
        ``(points, _PROBES, ...)``.
      mine64, ref64: the user's gradients and ``jax.vjp``, both run in float64.
      u, u_ad: unit roundoffs of the working and the probe dtype.
      root_r: ``sqrt(R)``, R the longest reduction.
      rtol: a fixed relative tolerance instead of the derived one.

    Returns:
      A list (one per leaf) of dicts of ``(points,)`` arrays: ``s`` (max |reference|),
      ``e``, ``e64``, ``e_ad`` (max errors of the user in the working dtype, in float64,
      and of the probe), ``tol``, ``tol64``, ``cosine``, ``norm_ratio``, ``worst`` (flat
      index of ``e``).
    """
    out = []
    for m, p, m64, r in zip(*(jax.tree.leaves(t) for t in (mine, probe, mine64, ref64))):
        n = r.shape[0]
        m, m64, r = (np.asarray(a, np.float64).reshape(n, -1) for a in (m, m64, r))
        p = np.asarray(p, np.float64).reshape(n, _PROBES, -1)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            s = np.max(np.abs(r), axis=1, initial=0.0)
            diff = _nan_to_inf(np.abs(m - r))
            e, e64 = np.max(diff, axis=1, initial=0.0), np.max(_nan_to_inf(np.abs(m64 - r)), axis=1, initial=0.0)
            e_ad = np.max(np.abs(p - r[:, None]), axis=(1, 2), initial=0.0)
            e_ad = np.where(np.isfinite(e_ad), e_ad, 0.0)  # autodiff's own overflow is no measure
            if rtol is None:
                tol = np.maximum(RHO * e_ad * u / u_ad, C * u * root_r * s)
                tol64 = np.maximum(RHO * e_ad * _U64 / u_ad, C * _U64 * root_r * s)
            else:
                tol = tol64 = rtol * s
            nm, nr = np.linalg.norm(m, axis=1), np.linalg.norm(r, axis=1)
            cosine = np.where(nm * nr > 0, np.sum(m * r, axis=1) / (nm * nr), np.where(nm + nr > 0, 0.0, 1.0))
            norm_ratio = np.where(nr > 0, nm / nr, np.where(nm > 0, np.inf, 1.0))
        worst = np.argmax(diff, axis=1) if m.shape[1] else np.zeros(n, int)
        out.append(dict(s=s, e=e, e64=e64, e_ad=e_ad, tol=tol, tol64=tol64, cosine=cosine, norm_ratio=norm_ratio, worst=worst))
    return out


def fed_verdict(got, got_lo, reference, reduction: int, u_lo: float) -> tuple:
    """One piece of a backward (an equation, a layer's leaf) fed autodiff's exact inputs.

    ``got``: its output from the float64 inputs; ``got_lo``: from the same inputs rounded
    to the working dtype (unit roundoff ``u_lo``), run in float64; ``reference``:
    autodiff's, float64; ``reduction``: the longest sum in it. Within the rounding of
    float64 (or of what rounding the inputs alone causes, times :data:`RHO`): ok; else,
    an error that shrinks tenfold with precision is rounding (imprecise), not the formula.

    Returns:
      ``(rel_err, rel_err_lo, tol, verdict)``, relative to ``max |reference|``.
    """
    reference = np.asarray(reference, np.float64)
    e64, e_lo = (_max_error(g, reference) for g in (got, got_lo))
    s = float(np.max(np.abs(reference), initial=0.0))
    tol = max(C * _U64 * math.sqrt(max(reduction, 1)) * s, RHO * e_lo * _U64 / u_lo)
    if e64 <= tol:
        verdict = OK
    elif e64 * 10 <= e_lo:
        verdict = IMPRECISE
    else:
        verdict = WRONG
    return relative(e64, s), relative(e_lo, s), relative(tol, s), verdict


def _max_error(got, reference) -> float:
    """``max |got − reference|``, NaN counting as infinite, a wrong shape as infinite."""
    got = np.asarray(got, np.float64)
    if got.shape != reference.shape:
        return math.inf
    diff = np.abs(got - reference)
    return float(np.max(np.where(np.isnan(diff), np.inf, diff), initial=0.0))


def _nan_to_inf(a):
    return np.where(np.isnan(a), np.inf, a)


def _phi(primal, args, aux, cot, direction, steps):
    """``φ(s) = <cot, primal(args + s · direction)>`` for each ``s`` in ``steps``."""

    def phi(s):
        moved = jax.tree.map(lambda a, v: a + s * v, args, direction)
        out = primal(moved, aux)
        return sum(jnp.vdot(c, o) for c, o in zip(jax.tree.leaves(cot), jax.tree.leaves(out)))

    return jax.vmap(phi)(steps)


def _vmapped(fn, n_static):
    """``fn`` mapped over a leading case axis of all but its first ``n_static`` arguments, jitted."""

    def mapped(*args):
        return jax.vmap(functools.partial(fn, *args[:n_static]))(*args[n_static:])

    return jax.jit(mapped, static_argnums=tuple(range(n_static)))


# The reference depends on the forward only: checking several backwards of one forward
# compiles it once.
_reference_many = _vmapped(_reference, 1)
_user_many = _vmapped(lambda user, args, aux, cot: user(args, aux, cot), 1)
_phi_many = _vmapped(_phi, 1)





def verify_many(
    primal, user, args, aux, cot, names, *, dtype, rtol, finite_differences, rng, reduction_size=None
) -> tuple:
    """Runs the three steps of the module docstring for every leaf of ``args``, at each of
    the points along the leading axis of ``args``, ``aux`` and ``cot`` (vmapped).

    ``primal(args, aux)`` is differentiated by ``jax.vjp``; ``user(args, aux, cot)`` returns
    the gradients under test, with the structure of ``args``. ``aux`` holds data that is
    not differentiated (targets), cast along with ``args``. Both functions must be
    hashable (they are static to ``jit``). ``reduction_size`` defaults to the largest
    leaf of one point's ``args``, ``aux`` and output. ``rng`` (a NumPy generator made
    from the caller's key) draws the finite-difference directions.

    Returns:
      ``(rows, mine64)``: per point a tuple of :class:`LeafCheck` (one per leaf), and the
      user's gradients re-run in float64 (with the leading axis).
    """
    dtype = np.dtype(dtype)
    probe_dtype = np.dtype(np.float32) if dtype == np.float64 else dtype
    u, u_ad = unit_roundoff(dtype), unit_roundoff(probe_dtype)
    n = jax.tree.leaves(args)[0].shape[0]
    one = lambda tree, i: jax.tree.map(lambda a: a[i], tree)
    if reduction_size is None:
        out = jax.eval_shape(primal, *one((args, aux), 0))
        reduction_size = max(int(np.size(a)) for a in jax.tree.leaves((one((args, aux), 0), out)))
    # Autodiff in the probe dtype at _PROBES copies of each point, jittered by an ulp:
    # the largest of their errors estimates the rounding noise robustly.
    jittered = _jitter(host_cast((args, aux, cot), probe_dtype), rng)
    probe = jax.device_get(_reference_many(primal, *jittered))
    probe = jax.tree.map(lambda a: a.reshape((n, _PROBES) + a.shape[1:]), probe)
    mine_lo = None if dtype == np.float64 else jax.device_get(_user_many(user, args, aux, cot))
    with jax.enable_x64(True):
        args64, aux64, cot64 = host_cast((args, aux, cot), np.float64)
        out64 = jax.eval_shape(jax.vmap(primal), args64, aux64)
        cot64 = jax.tree.map(lambda c, o: np.asarray(c, o.dtype), cot64, out64)
        mine64 = jax.device_get(_user_many(user, args64, aux64, cot64))
        ref64 = jax.device_get(_reference_many(primal, args64, aux64, cot64))
        mine = mine64 if mine_lo is None else mine_lo
        _check_structure(mine, ref64, names)
        shape_errors = {}
        mine, mine64 = (_fill_wrong_shapes(t, ref64, names, shape_errors) for t in (mine, mine64))
        stats = _stats(mine, probe, mine64, ref64, u, u_ad, math.sqrt(reduction_size), rtol)
        refs = [np.asarray(a, np.float64) for a in jax.tree.leaves(ref64)]
        mines64 = [np.asarray(a, np.float64) for a in jax.tree.leaves(mine64)]

        # The second oracle, batched: along each suspect's discrepancy, and along a
        # random direction per leaf.
        suspects = [
            (i, k) for i in range(n) for k, name in enumerate(names)
            if name not in shape_errors and not stats[k]["e64"][i] <= stats[k]["tol64"][i]
            and np.all(np.isfinite(refs[k][i])) and np.all(np.isfinite(mines64[k][i]))
        ]
        checked = [
            (i, k) for i in range(n) for k, name in enumerate(names)
            if finite_differences and name not in shape_errors and refs[k][i].size and np.all(np.isfinite(mines64[k][i]))
        ]
        oracle = _Oracle(primal, args64, aux64, cot64)
        discrepancies = [_unit((mines64[k][i] - refs[k][i]).ravel()) for i, k in suspects]
        randoms = [_unit(rng.standard_normal(refs[k][i].size)) for i, k in checked]
        sweeps = oracle.sweeps([(i, k, v) for (i, k), v in zip(suspects + checked, discrepancies + randoms)])
        confirmations = {
            ik: _confirm(sweep, mines64[ik[1]][ik[0]], refs[ik[1]][ik[0]], v)
            for ik, v, sweep in zip(suspects, discrepancies, sweeps[: len(suspects)])
        }
        fd_checks = {
            ik: _random_direction(sweep, mines64[ik[1]][ik[0]], refs[ik[1]][ik[0]], v)
            for ik, v, sweep in zip(checked, randoms, sweeps[len(suspects) :])
        }
        # A disagreement along one random direction stands only if a second one shows it too.
        flagged = [ik for ik in checked if fd_checks[ik][1]]
        seconds = [_unit(rng.standard_normal(refs[k][i].size)) for i, k in flagged]
        for ik, v, sweep in zip(flagged, seconds, oracle.sweeps([(i, k, v) for (i, k), v in zip(flagged, seconds)])):
            if not _random_direction(sweep, mines64[ik[1]][ik[0]], refs[ik[1]][ik[0]], v)[1]:
                fd_checks[ik] = (fd_checks[ik][0], "")

    rows = []
    for i in range(n):
        row = []
        for k, name in enumerate(names):
            st, r, m64 = {f: v[i] for f, v in stats[k].items()}, refs[k][i], mines64[k][i]
            verdict, evidence = _verdict_of(st, m64, r, confirmations.get((i, k)), shape_errors.get(name))
            fd_rel, fd_evidence = fd_checks.get((i, k), (None, ""))
            if fd_evidence and verdict != WRONG:
                verdict, evidence = WRONG, fd_evidence
            s = float(st["s"])
            row.append(
                LeafCheck(
                    name=name,
                    shape=tuple(r.shape),
                    max_abs_err=float(st["e"]),
                    rel_err=relative(float(st["e"]), s),
                    tol=relative(float(st["tol"]), s),
                    cosine=float(st["cosine"]),
                    norm_ratio=float(st["norm_ratio"]),
                    worst_index=tuple(int(j) for j in np.unravel_index(int(st["worst"]), r.shape)) if r.size else (),
                    rel_err_f64=relative(float(st["e64"]), s),
                    fd_rel_err=fd_rel,
                    verdict=verdict,
                    evidence=evidence,
                    tol_f64=relative(float(st["tol64"]), s),
                )
            )
        rows.append(tuple(row))
    return rows, mine64


def _verdict_of(st, m64, r, confirmation, shape_error):
    """The verdict of one leaf from its statistics and, for a suspect, the second oracle."""
    if shape_error:
        return WRONG, shape_error
    e, e64, tol, tol64, s = (float(st[f]) for f in ("e", "e64", "tol", "tol64", "s"))
    if e64 <= tol64:
        if e <= tol:
            return OK, ""
        return IMPRECISE, (
            f"float64 re-run matches (rel err {relative(e64, s):.1e} <= {relative(tol64, s):.1e}), so the "
            f"formula is right; in the working dtype its error {relative(e, s):.1e} exceeds {relative(tol, s):.1e}, "
            f"{RHO:g}x autodiff's own rounding here: a less stable formula, or a kink crossed by rounding"
        )
    if not np.all(np.isfinite(r)):
        return UNVERIFIED, "autodiff's float64 reference is not finite here"
    if not np.all(np.isfinite(m64)):
        return WRONG, f"non-finite values in float64 where autodiff's are finite (at {_first_nonfinite(m64)})"
    confirmed, text = confirmation
    if confirmed is True:
        return WRONG, f"float64 rel err {relative(e64, s):.1e} > tol {relative(tol64, s):.1e}; {text}"
    if confirmed is None and e <= tol and e64 * _PRECISION_GAIN <= e:
        return OK, ""  # float64 rounding above its estimate, and nothing wrong in the working dtype
    if confirmed is None and e64 * _PRECISION_GAIN <= e:
        return IMPRECISE, (
            f"the error shrinks with precision ({relative(e, s):.1e} in the working dtype, "
            f"{relative(e64, s):.1e} in float64) and {text}"
        )
    return UNVERIFIED, f"float64 rel err {relative(e64, s):.1e} > tol {relative(tol64, s):.1e}, but {text}"


@dataclasses.dataclass
class _Oracle:
    """Central finite differences of ``φ(s) = <cot, primal(args + s v)>`` in float64, over
    a sweep of steps, for many ``(point, leaf, direction)`` at once (inside x64)."""

    primal: Any
    args: Any
    aux: Any
    cot: Any

    def sweeps(self, requests) -> list:
        """``requests``: ``(point i, leaf k, unit direction v)``; per request the sweep
        ``(d, u, hs, φ(0), φ(+h), φ(-h))`` of :func:`_sweep`."""
        leaves, tree = jax.tree.flatten(self.args)
        n = leaves[0].shape[0]
        squares = [np.square(np.asarray(a, np.float64)).reshape(n, -1) for a in leaves]
        leaf_rms = [np.sqrt(np.mean(q, axis=1)) if q.shape[1] else np.zeros(n) for q in squares]
        overall = np.sqrt(sum(q.sum(axis=1) for q in squares) / max(sum(q.shape[1] for q in squares), 1))
        out = []
        for start in range(0, len(requests), n):  # chunks of n: one compilation per problem
            chunk = requests[start : start + n]
            rows = [i for i, _, _ in chunk] + [chunk[0][0]] * (n - len(chunk))
            directions = [np.zeros_like(a) for a in leaves]
            steps = np.zeros((n, 1 + 2 * _STEPS.size))
            for j, (i, k, v) in enumerate(chunk):
                directions[k][j] = v.reshape(leaves[k].shape[1:])
                hs = _STEPS * max(leaf_rms[k][i], overall[i], 1e-12) * math.sqrt(max(v.size, 1))
                steps[j] = np.concatenate([[0.0], hs, -hs])
            take = lambda t: jax.tree.map(lambda a: a[np.asarray(rows)], t)
            phi = np.asarray(
                _phi_many(self.primal, take(self.args), take(self.aux), take(self.cot), jax.tree.unflatten(tree, directions), steps)
            )
            out += _sweep(steps[: len(chunk), 1 : 1 + _STEPS.size], phi[: len(chunk)])
        return out


def _sweep(hs, phi) -> list:
    """Central differences over the step sweep, for rows of steps ``hs`` and values
    ``phi = [φ(0), φ(+h)..., φ(-h)...]``: per row ``(d, u, hs, φ(0), φ(+h), φ(-h))``.

    ``d`` is the estimate at the step where successive estimates agree best, ``u`` the
    largest disagreement around that step plus the rounding of ``φ`` (its uncertainty)."""
    m = hs.shape[1]
    phi0, plus, minus = phi[:, 0], phi[:, 1 : 1 + m], phi[:, 1 + m :]
    with np.errstate(invalid="ignore", over="ignore"):
        central = (plus - minus) / (2 * hs)
        rounding = 32 * _U64 * np.max(np.abs(phi), axis=1, keepdims=True) / hs[:, 1:]
        gaps = np.abs(np.diff(central, axis=1)) + rounding
    gaps = np.where(np.isfinite(gaps), gaps, np.inf)
    j = np.argmin(gaps, axis=1)
    # The smallest gap can be small by luck (truncation and rounding errors cancelling):
    # its neighbours' gaps bound the uncertainty.
    padded = np.pad(gaps, ((0, 0), (1, 1)), constant_values=0.0)
    rows = np.arange(len(j))
    u = np.max(np.stack([padded[rows, j], padded[rows, j + 1], padded[rows, j + 2]]), axis=0)
    d = central[rows, j + 1]
    return [(float(d[i]), float(u[i]), hs[i], phi0[i], plus[i], minus[i]) for i in rows]


def _confirm(sweep, m64, r, v):
    """Along the discrepancy ``v = (mine − ref) / ‖mine − ref‖``: ``(True | False | None, text)``.

    True: finite differences side with autodiff and the forward is smooth there (the
    backward is wrong); False: they side with the backward; None: undecided."""
    d_user, d_ref = float(np.vdot(m64.ravel(), v)), float(np.vdot(r.ravel(), v))
    gap = d_user - d_ref  # = ‖mine − ref‖ > 0
    d_fd, u_fd, hs, phi0, plus, minus = sweep
    order_user, order_ref = (_taylor_order(hs, phi0, plus, minus, d) for d in (d_user, d_ref))
    numbers = (
        f"central differences in float64 along the discrepancy give {d_fd:.6g} ± {u_fd:.1g}, "
        f"jax.vjp {d_ref:.6g}, the backward {d_user:.6g}; Taylor remainder order "
        f"{_order_text(order_user)} for the backward, {_order_text(order_ref)} for jax.vjp"
    )
    smooth = _smooth(sweep)
    resolved = u_fd <= gap / 4
    if smooth and resolved and abs(d_fd - d_ref) <= gap / 4:
        return True, f"confirmed: {numbers}"
    if smooth and resolved and abs(d_fd - d_user) <= gap / 4:
        return False, f"finite differences side with the backward, not with autodiff: {numbers}"
    why = "the forward is not smooth here" if not smooth else "finite differences cannot resolve it"
    return None, f"{why}: {numbers}"


def _random_direction(sweep, m64, r, v):
    """``(fd_rel_err, evidence)``; evidence is non-empty when finite differences along the
    random direction ``v`` confidently disagree with the backward at a smooth point."""
    d_user, d_ref = float(np.vdot(m64.ravel(), v)), float(np.vdot(r.ravel(), v))
    d_fd, u_fd, hs, phi0, plus, minus = sweep
    norm = float(np.linalg.norm(m64))
    miss = abs(d_fd - d_user)
    fd_rel = miss / norm if norm > 0 else miss
    if fd_rel > FD_RTOL and miss > 4 * u_fd and _smooth(sweep):
        return fd_rel, (
            f"central differences in float64 along a random direction give {d_fd:.6g} ± {u_fd:.1g}, "
            f"the backward {d_user:.6g} (jax.vjp {d_ref:.6g}): rel err {fd_rel:.1e} > {FD_RTOL:g}"
        )
    return fd_rel, ""


def _smooth(sweep) -> bool:
    """Whether ``φ`` is differentiable at 0 as far as the sweep can tell: with its
    finite-difference slope, the Taylor remainder at the smallest step is at the rounding
    level (``φ`` locally linear), or of order ~2 over the smallest steps. At a kink
    nearer than the smallest step no slope does either."""
    d_fd, _, hs, phi0, plus, minus = sweep
    r, floor = _remainders(hs, phi0, plus, minus, d_fd)
    if r[-1] <= floor:
        return True
    order = _taylor_order(hs, phi0, plus, minus, d_fd)
    return order is None or order > 1.5


def _unit(v):
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def _taylor_order(hs, phi0, plus, minus, d) -> Optional[float]:
    """Order ``p`` of the first-order Taylor remainder ``|φ(±h) − φ(0) ∓ h d| ~ h^p``.

    ~2 when ``d`` is the derivative of a smooth ``φ``, ~1 when it is not (or ``φ`` has a
    kink). Taken from the smallest steps whose remainders stand above the rounding of
    ``φ``; ``None`` when all are at the rounding level (``φ`` linear and ``d`` exact)."""
    r, floor = _remainders(hs, phi0, plus, minus, d)
    valid = r > floor
    orders = [
        math.log(r[j] / r[j + 1]) / math.log(hs[j] / hs[j + 1])
        for j in range(hs.size - 1)
        if valid[j] and valid[j + 1]
    ]
    return float(np.median(orders[-3:])) if orders else None


def _remainders(hs, phi0, plus, minus, d):
    """``max(|φ(h) − φ(0) − h d|, |φ(−h) − φ(0) + h d|)`` per step, and the rounding level."""
    r = np.maximum(np.abs(plus - phi0 - hs * d), np.abs(minus - phi0 + hs * d))
    return r, 1e3 * _U64 * max(np.max(np.abs(plus)), np.max(np.abs(minus)), abs(phi0))


def _order_text(order) -> str:
    return "n/a (remainder at rounding level)" if order is None else f"{order:.2f}"



# --- Helpers. ---------------------------------------------------------------------------


def working_dtype(what, tree) -> np.dtype:
    dtypes = set()
    for path, a in jax.tree.flatten_with_path(tree)[0]:
        dt = np.dtype(jnp.result_type(a))
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(f"{what} must hold floating arrays, got dtype {dt} at {jax.tree_util.keystr(path)}")
        dtypes.add(dt)
    if len(dtypes) != 1:
        raise TypeError(f"{what} must share one floating dtype, got {sorted(map(str, dtypes))}")
    return dtypes.pop()


def unit_roundoff(dtype) -> float:
    return float(jnp.finfo(dtype).eps) / 2


def cast(tree, dtype):
    """Floating leaves of ``tree`` to ``dtype``; integer leaves (labels) unchanged (traceable)."""
    return jax.tree.map(
        lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree
    )


def host_cast(tree, dtype):
    """:func:`cast` for concrete arrays, done by NumPy (no compilation per shape)."""
    return jax.tree.map(
        lambda a: np.asarray(a, dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else np.asarray(a), tree
    )


def _jitter(tree, rng):
    """Every leaf repeated :data:`_PROBES` times along axis 1 (then merged with axis 0),
    floating entries of copies 1.. moved by a random -1, 0 or +1 ulp."""

    def jitter(a):
        copies = np.repeat(a[:, None], _PROBES, axis=1)
        if np.issubdtype(a.dtype, np.floating) or a.dtype == jnp.bfloat16:
            steps = rng.integers(-1, 2, size=copies.shape)
            steps[:, 0] = 0
            up, down = np.nextafter(copies, np.inf).astype(a.dtype), np.nextafter(copies, -np.inf).astype(a.dtype)
            copies = np.where(steps > 0, up, np.where(steps < 0, down, copies))
        return copies.reshape((-1,) + a.shape[1:])

    return jax.tree.map(jitter, tree)


def numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded by a JAX PRNG key (new-style or raw ``uint32[2]``)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel())


def _check_structure(mine, ref, names):
    if jax.tree.structure(mine) != jax.tree.structure(ref):
        raise ValueError(
            f"the backward's gradients have the structure {jax.tree.structure(mine)} but the "
            f"inputs have {jax.tree.structure(ref)} (leaves {', '.join(names)})"
        )


def _fill_wrong_shapes(mine, ref, names, errors):
    """NaN in place of leaves whose shape differs from the reference's (recorded in
    ``errors``). Both carry the leading axis of points."""
    leaves, tree = jax.tree.flatten(mine)
    out = []
    for name, m, r in zip(names, leaves, jax.tree.leaves(ref)):
        if tuple(np.shape(m)) != tuple(r.shape):
            errors[name] = f"gradient has shape {tuple(np.shape(m))[1:]} but the leaf has shape {tuple(r.shape)[1:]}"
            m = np.full(r.shape, np.nan, r.dtype)
        out.append(m)
    return jax.tree.unflatten(tree, out)


def path_name(path, prefix) -> str:
    return prefix + jax.tree_util.keystr(path)


def relative(e, s) -> float:
    return e / s if s > 0 else e


def _first_nonfinite(a) -> tuple:
    return tuple(int(i) for i in np.unravel_index(int(np.argmin(np.isfinite(a))), a.shape))


