"""check_layer: every built-in layer passes in float32; a user's layer with a planted
mistake in its backward is named by the leaf, and passes once corrected."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jbp
from jbp.layers import (ActivationLayer, AvgPool2D, Conv1D, Conv2D, Dense, Dropout, Flatten, LayerNorm, MaxPool1D,
                        Residual)

KEY = jax.random.key(0)

# (layer, input_shape, train, leaves named by the report)
BUILT_IN = [
    (Dense(3), (4,), False, ("params.W", "params.b", "x")),
    (ActivationLayer("gelu"), (5,), False, ("x",)),
    (ActivationLayer("softmax"), (5,), False, ("x",)),
    (Conv1D(3, 4, stride=2), (7, 2), False, ("params.W", "params.b", "x")),
    (Conv2D(2, 3, strides=(2, 1), padding="VALID"), (6, 5, 2), False, ("params.W", "params.b", "x")),
    (MaxPool1D(3, stride=2), (7, 2), False, ("x",)),
    (AvgPool2D(2, strides=1), (3, 4, 2), False, ("x",)),
    (Flatten(), (3, 2, 2), False, ("x",)),
    (Dropout(0.5), (6,), True, ("x",)),
    (LayerNorm(), (6,), False, ("params.scale", "params.offset", "x")),
    (Residual([Dense(4), "tanh", Dropout(0.2)]), (4,), True, ("params[0].W", "params[0].b", "x")),
]


@pytest.mark.parametrize("layer, input_shape, train, leaves", BUILT_IN, ids=lambda v: repr(v)[:40])
def test_every_built_in_layer_passes_in_float32(layer, input_shape, train, leaves):
    report = jbp.check_layer(layer, input_shape, key=KEY, train=train)
    assert report.ok is True and report.failed == () and report.unverified == (), str(report)
    assert tuple(leaf.name for leaf in report.leaves) == leaves
    assert report.dtype == "float32" and all(leaf.rel_err <= 1e-5 for leaf in report.leaves), str(report)
    # the per-example norms of DP-SGD, where the layer has its own (Dense, the convolutions, LayerNorm,
    # Residual: its inner layers')
    has_norms = type(layer) in (Dense, Conv1D, Conv2D, LayerNorm, Residual)
    assert (report.per_example is not None) == has_norms
    assert report.per_example is None or report.per_example.rel_err <= 1e-12, str(report)


# --- A user's layer: y = tanh(x W^T + b), with one classic mistake planted. ------------


@dataclasses.dataclass(frozen=True)
class TanhDense:
    features: int
    mistake: str = ""

    def init(self, key, input_shape, dtype):
        W = jax.random.normal(key, (self.features, input_shape[0]), dtype) / float(np.sqrt(input_shape[0]))
        return {"W": W, "b": jnp.zeros((self.features,), dtype)}, (self.features,)

    def forward(self, params, x, *, key=None, train=False):
        y = jnp.tanh(x @ params["W"].T + params["b"])
        return y, (x, y)

    def backward(self, params, residuals, dy):
        x, y = residuals
        delta = dy * (1 - y * y)  # BP4
        db = delta.mean(0) if self.mistake == "bias averaged" else delta.sum(0)  # BP6
        dx = delta @ (params["W"].T if self.mistake == "transposed W" else params["W"])  # BP3
        return {"W": delta.T @ x, "b": db}, dx  # BP5


@pytest.mark.parametrize("mistake, wrong", [("bias averaged", ("params['b']",)), ("transposed W", ("x",))])
def test_a_planted_mistake_is_named_by_its_leaf_and_the_corrected_layer_passes(mistake, wrong):
    shape = (4,)  # square W: a transposed W keeps its shape
    report = jbp.check_layer(TanhDense(4, mistake), shape, key=KEY)
    assert report.ok is False and report.failed == wrong, str(report)
    assert all("confirmed" in leaf.evidence for leaf in report.leaves if leaf.name in wrong)
    fixed = jbp.check_layer(TanhDense(4), shape, key=KEY)
    assert fixed.ok is True and fixed.failed == (), str(fixed)


def test_the_report_reads_as_a_table_and_as_json():
    report = jbp.check_layer(TanhDense(4, "bias averaged"), (4,), key=KEY)
    text = str(report)
    assert text.startswith("check_layer: TanhDense(features=4, mistake='bias averaged') backward vs jax.vjp")
    assert text.endswith("FAILED: params['b']")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["check"] == "check_layer" and data["failed"] == ["params['b']"] and data["train"] is False
    with pytest.raises(jbp.GradCheckFailure, match=r"FAILED: params\['b'\]"):
        jbp.check_layer(TanhDense(4, "bias averaged"), (4,), key=KEY, raise_on_failure=True)


def test_a_point_of_your_own():
    params = {"W": np.eye(3, dtype=np.float64), "b": np.ones(3)}
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    report = jbp.check_layer(TanhDense(3), (3,), key=KEY, params=params, x=x)
    assert report.ok is True and report.dtype == "float64"
    assert [leaf.shape for leaf in report.leaves] == [(3, 3), (3,), (2, 3)]


@dataclasses.dataclass(frozen=True)
class WrongShape(TanhDense):
    def init(self, key, input_shape, dtype):
        params, _ = super().init(key, input_shape, dtype)
        return params, (self.features + 1,)


@pytest.mark.parametrize("call, error, match", [
    (lambda: jbp.check_layer(WrongShape(2), (3,), key=KEY), ValueError,
     r"layer.init says the output shape is \(3,\) but forward gives \(2,\)"),
    (lambda: jbp.check_layer(jnp.tanh, (3,), key=KEY), TypeError, "layer must be a layer"),
    (lambda: jbp.check_layer(Dense(2), (3,), key=0), TypeError, "key must be a PRNG key"),
    (lambda: jbp.check_layer(Dense(2), (3,), key=KEY, batch=0), ValueError, "batch must be >= 1, got 0"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@dataclasses.dataclass(frozen=True)
class DenseWithWrongNorms:
    """A dense layer whose per-example norms forget the bias (``‖delta_i‖² ‖x_i‖²`` only),
    or return one value per feature instead of per example."""

    features: int
    mistake: str = "bias forgotten"

    def init(self, key, input_shape, dtype):
        return Dense(self.features).init(key, input_shape, dtype)

    def forward(self, params, x, *, key=None, train=False):
        return Dense(self.features).forward(params, x)

    def backward(self, params, x, dy):
        return Dense(self.features).backward(params, x, dy)

    def per_example_sq_norms(self, params, x, dy):
        if self.mistake == "per feature":
            return jnp.sum(dy * dy, axis=0)
        return jnp.sum(dy * dy, axis=1) * jnp.sum(x * x, axis=1)


@pytest.mark.parametrize("mistake, detail", [("bias forgotten", ""), ("per feature", "one value per example")])
def test_a_wrong_per_example_norm_method_is_named(mistake, detail):
    report = jbp.check_layer(DenseWithWrongNorms(3, mistake), (5,), key=KEY)
    assert report.ok is False and report.failed == ("per_example_sq_norms",), str(report)
    assert all(leaf.ok for leaf in report.leaves)  # the backward itself is right
    assert detail in report.per_example.detail and "per_example_sq_norms" in str(report) and "WRONG" in str(report)
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["per_example_sq_norms"]["ok"] is False
