"""The CLI's gradient-check line and the report's evidence: PASSED is never printed beside
a tolerance that verifies nothing, and "verified" needs float64 evidence."""

import dataclasses

import pytest

from jbp.cli.gradcheck import line
from jbp.verify.grads import GradCheckReport
from jbp.verify.report import LeafCheck


def _leaf(name, rel_err, tol, rel_err_f64=1e-16, tol_f64=1e-13, fd_rel_err=1e-10, verdict="ok"):
    return LeafCheck(name=name, shape=(2,), max_abs_err=rel_err, rel_err=rel_err, tol=tol, cosine=1.0,
                     norm_ratio=1.0, worst_index=(0,), rel_err_f64=rel_err_f64, fd_rel_err=fd_rel_err,
                     verdict=verdict, tol_f64=tol_f64)


def _report(*leaves):
    return GradCheckReport(leaves=leaves, dtype="float32", rtol=None, loss=0.1, ok=all(x.ok for x in leaves))


def test_leaf_evidence():
    assert _leaf("a", 1e-7, 1e-5).verified and not _leaf("a", 1e-7, 1e-5).at_rounding_level
    assert _leaf("a", 1.0, 16.0).at_rounding_level and _leaf("a", 1.0, 0.01).at_rounding_level
    # neither the float64 re-run (loose tolerance) nor finite differences (not run) agree tightly
    assert not _leaf("a", 1e-7, 1e-5, rel_err_f64=1e-5, tol_f64=1e-4, fd_rel_err=None).verified
    assert _leaf("a", 1e-7, 1e-5, rel_err_f64=1e-5, tol_f64=1e-4, fd_rel_err=1e-9).verified
    assert not _leaf("a", 1e-7, 1e-5, verdict="imprecise").verified


def test_rounding_level_leaves_are_reported_as_verified_in_float64_not_passed():
    report = _report(_leaf("params[0].W", 3e-7, 6e-5), _leaf("params[1].W", 1.0, 16.0, rel_err_f64=2e-16))
    text = line(report, 64)
    assert text == (
        "gradient check on 64 examples at the initial parameters, manual vs jax.grad (float32): PASSED for "
        "params[0].W, max relative error 3.0e-07 (params[0].W, tolerance 6.0e-05); params[1].W verified in "
        "float64 (relative error 2.0e-16); float32 gradients are at rounding level here"
    )
    assert report.rounding_level == ("params[1].W",) and report.verified == ("params[0].W", "params[1].W")
    assert str(report).endswith("PASSED (params[1].W verified in float64; float32 gradients are at rounding level here)")


@pytest.mark.parametrize("leaves", [
    (_leaf("w", 1.0, 16.0), _leaf("b", 0.5, 0.02)),
    (_leaf("w", 1.0, 16.0, rel_err_f64=1e-3, tol_f64=1e-2, fd_rel_err=None),),
])
def test_no_line_shows_passed_beside_a_tolerance_of_001_or_more(leaves):
    text = line(_report(*leaves), 8)
    assert "PASSED" not in text and "tolerance" not in text


def test_a_leaf_without_float64_evidence_is_named():
    report = _report(_leaf("w", 1e-7, 1e-5), _leaf("b", 1e-7, 1e-5, rel_err_f64=1e-5, tol_f64=1e-4, fd_rel_err=None))
    assert line(report, 8).endswith("; not verified in float64: b")
    assert "not verified (no float64 agreement within 1e-06): b" in str(report)


def test_a_failure_names_the_wrong_leaves():
    report = _report(_leaf("w", 1e-7, 1e-5), dataclasses.replace(_leaf("b", 0.9, 1e-5), verdict="WRONG"))
    assert line(report, 8).endswith("FAILED, max relative error 9.0e-01 (b, tolerance 1.0e-05); wrong: b")
