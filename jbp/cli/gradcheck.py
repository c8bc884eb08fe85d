"""``train``'s gradient check: one line that says what was verified, where and in which dtype.

The check runs at the run's initial parameters (``--seed``'s init), also on ``--resume``:
there the gradients are large and the comparison means most. Near a minimum the working
dtype's gradients can be at its rounding level; a leaf is then reported as verified in
float64 (the re-run, or finite differences), never as PASSED beside a tolerance that
verifies nothing (see :attr:`jbp.verify.report.LeafCheck.at_rounding_level`).
"""

from __future__ import annotations

from jbp.cli import privacy as dp
from jbp.cli.common import CHECK_BATCH, say
from jbp.verify.grads import check_grads

#: Where the CLI checks: the parameters ``net.init`` gives for the run's seed.
POINT = "the initial parameters"


def run(net, params, data, random: bool = False) -> dict:
    """Checks on the first :data:`CHECK_BATCH` training examples (``random``: on random
    data of their shapes, as under DP-SGD, where only the private training touches the
    training set), prints the line (and the table on failure); what ``metrics.json`` keeps."""
    n = min(CHECK_BATCH, len(data.x_train))
    x, y = dp.random_batch(net, data, n, seed=0) if random else (data.x_train[:n], data.y_train[:n])
    # The leaves only: the equations and per-example views cost three of the check's
    # eleven compilations and only diagnose a failure, which prints a second, full check.
    report = check_grads(net, params, x, y, worst_examples=0, check_equations=False)
    say(line(report, n, random))
    if not report.ok:
        say(check_grads(net, params, x, y))
    return {
        "ok": report.ok,
        "point": POINT,
        "examples": n,
        "dtype": report.dtype,
        "max_rel_err": max(leaf.rel_err for leaf in report.leaves),
        "verified": list(report.verified),
        "rounding_level": list(report.rounding_level),
        "leaves": [leaf.to_dict() for leaf in report.leaves],
    }


def line(report, n: int, random: bool = False) -> str:
    """The summary line. PASSED is only ever printed beside a working-dtype tolerance
    below :data:`jbp.verify.report.ROUNDING_LEVEL`."""
    head = f"gradient check on {n} {'random ' * random}examples at {POINT}, manual vs jax.grad ({report.dtype}): "
    if not report.ok:
        worst = max(report.leaves, key=lambda leaf: leaf.rel_err / leaf.tol)
        return head + (f"FAILED, max relative error {worst.rel_err:.1e} ({worst.name}, tolerance "
                       f"{worst.tol:.1e}); wrong: {', '.join(report.failed)}")
    precise = [leaf for leaf in report.leaves if not leaf.at_rounding_level]
    parts = []
    if precise:
        worst = max(precise, key=lambda leaf: leaf.rel_err / leaf.tol)
        who = "" if len(precise) == len(report.leaves) else f" for {', '.join(leaf.name for leaf in precise)}"
        parts.append(f"PASSED{who}, max relative error {worst.rel_err:.1e} ({worst.name}, tolerance {worst.tol:.1e})")
    rounding = [leaf for leaf in report.leaves if leaf.at_rounding_level]
    if rounding:
        checked = [leaf for leaf in rounding if leaf.verified]
        if checked:
            worst = max(checked, key=lambda leaf: leaf.rel_err_f64)
            parts.append(f"{', '.join(leaf.name for leaf in checked)} verified in float64 (relative error "
                         f"{worst.rel_err_f64:.1e}); {report.dtype} gradients are at rounding level here")
    unsure = [leaf.name for leaf in report.leaves if not leaf.verified]
    if unsure:
        parts.append(f"not verified in float64: {', '.join(unsure)}")
    elif not rounding:
        parts.append("every leaf also verified in float64")
    return head + "; ".join(parts)
