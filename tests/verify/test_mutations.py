"""mutation_test: every classic mistake planted in jbp's backward is caught, exactly."""

import json

import numpy as np
import pytest

import jbp
from jbp.verify.mutations import MutationResult
from helpers import problem

# W^(2) is square (6 x 6), so that a transposed W is a silent mistake rather than a shape error.
NET = jbp.MLP((4, 6, 6, 3), activation="tanh", loss="cross_entropy")

# What each mistake really changes on NET, worked out by hand from the equations:
EXPECTED = {
    # BP4 of the hidden layers: delta^(2) and everything below it.
    "missing f'(z)": (("params[0].W", "params[0].b", "params[1].W", "params[1].b"), "layer 2, BP4"),
    # BP6 at every layer.
    "bias averaged": (("params[0].b", "params[1].b", "params[2].b"), "layer 3, BP6"),
    # BP3 negates dL/dx^(2), hence delta^(2); the second flip, into delta^(1), undoes it.
    "sign flip in dx": (("params[1].W", "params[1].b"), "layer 2, BP3"),
    # BP5 of layers 2 and 3 reads z^(l-1); layer 1 reads the input, which has no z.
    "dW from the wrong input": (("params[1].W", "params[2].W"), "layer 3, BP5"),
    # BP3 through the square W^(2) only: delta^(1) and layer 1's gradients.
    "transposed W": (("params[0].W", "params[0].b"), "layer 1, BP3"),
}


@pytest.fixture(scope="module")
def point():
    return problem(NET, 8, np.float32)


@pytest.mark.parametrize("stress", [None, "saturate"])
def test_every_classic_mistake_is_caught_with_exactly_its_leaves_and_equation(point, stress):
    report = jbp.mutation_test(NET, *point, stress=stress)
    assert [r.mutation for r in report.results] == [m.name for m in jbp.MUTATIONS] == list(EXPECTED)
    for r in report.results:
        leaves, first = EXPECTED[r.mutation]
        assert r.changed == leaves  # the float64 ground truth agrees with the hand count
        assert r.caught and r.named == leaves, (r.mutation, r.named)
        assert r.first_failure.startswith(first + ":") and r.first_equation == r.equation
    assert report.ok is True and str(report).endswith("PASSED") and report.stress == stress
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["ok"] is True
    assert report.to_markdown().count("\n| ") == 1 + len(EXPECTED)


def test_a_mistake_that_changes_nothing_must_raise_no_alarm():
    quiet = MutationResult("bias averaged", "BP6", changed=(), named=(), first_failure=None, first_equation=None)
    cried_wolf = MutationResult("bias averaged", "BP6", changed=(), named=("params[0].b",), first_failure=None, first_equation=None)
    missed = MutationResult("bias averaged", "BP6", changed=("params[0].b",), named=(), first_failure=None, first_equation=None)
    assert (quiet.ok, quiet.applicable, quiet.caught) == (True, False, False)
    assert cried_wolf.ok is False and missed.ok is False
