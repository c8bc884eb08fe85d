"""Datasets: shapes, heads, determinism, and the digits split's promises."""

import numpy as np
import pytest

import jbp
from jbp import datasets


@pytest.mark.parametrize("name", list(datasets.DATASETS))
def test_shapes_dtypes_and_head(name):
    d = datasets.load(name)
    assert d.name == name
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.x_train.shape[1] == d.x_test.shape[1] == d.n_features
    assert len(d.x_train) == len(d.y_train) and len(d.x_test) == len(d.y_test)
    if d.loss == "cross_entropy":
        assert d.y_train.ndim == 1 and np.issubdtype(d.y_train.dtype, np.integer)
        assert set(np.unique(d.y_train)) == set(range(d.n_outputs))
    else:
        assert d.y_train.shape == (len(d.x_train), d.n_outputs) and d.y_train.dtype == np.float32
    # the declared head builds a network without further choices
    net = jbp.MLP((d.n_features, 4, d.n_outputs), loss=d.loss)
    assert net.output_activation == {"mse": "identity", "cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}[d.loss]


@pytest.mark.parametrize("name", ["sine", "moons", "spirals", "digits"])
def test_deterministic_in_the_seed(name):
    a, b, c = datasets.load(name, seed=1), datasets.load(name, seed=1), datasets.load(name, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_digits_split_is_stratified_and_standardised_on_train_only():
    d = datasets.load("digits")
    assert (len(d.x_train), len(d.x_test)) == (1437, 360) and d.n_outputs == 10
    train_share = np.bincount(d.y_train) / len(d.y_train)
    test_share = np.bincount(d.y_test) / len(d.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)
    # training columns: mean 0 and std 1 (or 0 for constant pixels); the test split is not re-fitted
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
    std = d.x_train.std(0)
    assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))
    assert np.max(np.abs(d.x_test.mean(0))) > 0.01


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; expected one of xor, sine, moons, spirals, digits"):
        datasets.load("mnist")
