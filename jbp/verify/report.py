"""What a gradient check reports: per-leaf verdicts, and their tables (text, Markdown, JSON).

Shared by :func:`jbp.check_vjp` and :func:`jbp.check_grads`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

#: The verdicts.
OK, WRONG, IMPRECISE, UNVERIFIED = "ok", "WRONG", "imprecise", "unverified"
#: A working-dtype tolerance (relative) from this size up verifies nothing: the leaf's
#: gradient is at the rounding level of that dtype at this point (e.g. near a minimum).
ROUNDING_LEVEL = 0.01
#: "Verified" needs the float64 re-run, or finite differences in float64, to agree with
#: autodiff within this relative tolerance.
VERIFIED_RTOL = 1e-6


class GradCheckFailure(AssertionError):
    """Raised by ``check_vjp``/``check_grads(..., raise_on_failure=True)``; the message is the table."""


@dataclasses.dataclass(frozen=True)
class LeafCheck:
    """One leaf's comparison (a parameter, or the input ``x``).

    Attributes:
      name: the leaf: a pytree path such as ``"['w']"``, ``"params[0].W"``, or ``"x"``.
      shape: its shape.
      max_abs_err: ``max |backward − reference|`` in the working dtype.
      rel_err: ``max_abs_err / max |reference|`` (``max_abs_err`` if the reference is 0).
      tol: the tolerance on ``rel_err`` (derived; see the module docstring).
      cosine: cosine similarity of backward and reference (1 when both are zero).
      norm_ratio: ``‖backward‖ / ‖reference‖``.
      worst_index: the index of ``max |backward − reference|`` in the leaf.
      rel_err_f64: ``rel_err`` of backward and forward re-run in float64.
      fd_rel_err: ``|FD − <backward, v>| / (‖backward‖ ‖v‖)`` for central differences in
        float64 along a random direction ``v``; ``None`` if not run.
      verdict: ``"ok"``, ``"WRONG"``, ``"imprecise"`` or ``"unverified"``.
      evidence: why, when the verdict is not ``"ok"``.
      tol_f64: the tolerance on ``rel_err_f64`` (``None`` where not recorded).
    """

    name: str
    shape: tuple
    max_abs_err: float
    rel_err: float
    tol: float
    cosine: float
    norm_ratio: float
    worst_index: tuple
    rel_err_f64: float
    fd_rel_err: Optional[float]
    verdict: str
    evidence: str = ""
    tol_f64: Optional[float] = None

    @property
    def ok(self) -> bool:
        """False only for a confirmed wrong gradient."""
        return self.verdict != WRONG

    @property
    def at_rounding_level(self) -> bool:
        """The working dtype's tolerance is :data:`ROUNDING_LEVEL` or more: its comparison
        verifies nothing here, only the float64 evidence does."""
        return not self.tol < ROUNDING_LEVEL

    @property
    def verified(self) -> bool:
        """Not wrong, and evidence in float64 agrees within :data:`VERIFIED_RTOL`: the
        float64 re-run (within a float64 tolerance that tight), or finite differences."""
        rerun = self.tol_f64 is not None and self.rel_err_f64 <= min(self.tol_f64, VERIFIED_RTOL)
        fd = self.fd_rel_err is not None and self.fd_rel_err <= VERIFIED_RTOL
        return self.verdict == OK and (rerun or fd)

    def to_dict(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


class LeafVerdicts:
    """The leaves of a report (``self.leaves``) grouped by verdict."""

    @property
    def failed(self) -> tuple:
        """The leaves whose gradient is confirmed wrong."""
        return named(self.leaves, WRONG)

    @property
    def imprecise(self) -> tuple:
        """Right formula, but rounding in the working dtype beyond the tolerance."""
        return named(self.leaves, IMPRECISE)

    @property
    def unverified(self) -> tuple:
        """A float64 mismatch the second oracle could not confirm (not a failure)."""
        return named(self.leaves, UNVERIFIED)

    @property
    def verified(self) -> tuple:
        """The leaves verified on float64 evidence (:attr:`LeafCheck.verified`)."""
        return tuple(leaf.name for leaf in self.leaves if leaf.verified)

    @property
    def rounding_level(self) -> tuple:
        """The leaves whose working-dtype gradient is at rounding level here
        (:attr:`LeafCheck.at_rounding_level`): only float64 can verify them."""
        return tuple(leaf.name for leaf in self.leaves if leaf.at_rounding_level)

    def evidence_note(self) -> str:
        """What the verdict rests on, where the working dtype alone does not carry it;
        ``""`` when every leaf is verified and none is at rounding level."""
        notes = []
        rounding = [n for n in self.rounding_level if n in self.verified]
        if rounding:
            notes.append(f"{', '.join(rounding)} verified in float64; {getattr(self, 'dtype', 'working-dtype')} "
                         f"gradients are at rounding level here")
        unsure = [leaf.name for leaf in self.leaves if leaf.verdict == OK and not leaf.verified]
        if unsure:
            notes.append(f"not verified (no float64 agreement within {VERIFIED_RTOL:g}): {', '.join(unsure)}")
        return "; ".join(notes)



def jsonable(v):
    if isinstance(v, (tuple, list)):
        return [jsonable(e) for e in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def named(leaves, verdict) -> tuple:
    return tuple(leaf.name for leaf in leaves if leaf.verdict == verdict)



def leaf_table(leaves):
    head = ("leaf", "shape", "max abs err", "rel err", "tol", "cosine", "norm ratio", "worst at",
            "f64 rel err", "FD rel err", "verdict")
    rows = [
        (
            c.name,
            "x".join(map(str, c.shape)) or "()",
            f"{c.max_abs_err:.2e}",
            f"{c.rel_err:.2e}",
            f"{c.tol:.1e}",
            f"{c.cosine:.6f}",
            f"{c.norm_ratio:.4g}",
            str(c.worst_index) if len(c.worst_index) != 1 else f"({c.worst_index[0]})",
            f"{c.rel_err_f64:.1e}",
            "-" if c.fd_rel_err is None else f"{c.fd_rel_err:.1e}",
            c.verdict + (" (float64)" if c.verdict == OK and c.at_rounding_level else ""),
        )
        for c in leaves
    ]
    return head, rows


def details(leaves) -> list:
    return [f"  {c.name} {c.verdict}: {c.evidence}" for c in leaves if c.verdict != OK]


def verdict_line(report) -> str:
    if not report.ok:
        return f"FAILED: {', '.join(report.failed)}"
    extra = [f"{len(n)} {what}: {', '.join(n)}" for what, n in (("imprecise", report.imprecise), ("unverified", report.unverified)) if n]
    note = report.evidence_note()
    extra += [note] if note else []
    return "PASSED" + (f" ({'; '.join(extra)})" if extra else "")


def text_table(head, rows) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(head), *map(fmt, rows)])


def markdown_table(head, rows) -> str:
    fmt = lambda r: "| " + " | ".join(s.replace("|", "\\|") for s in r) + " |"
    return "\n".join([fmt(head), "|" + "---|" * len(head), *map(fmt, rows)])
