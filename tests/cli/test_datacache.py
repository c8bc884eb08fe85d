"""The CLI's cache of scikit-learn's digits split: exactly the arrays of jbp.datasets.load."""

import numpy as np

from jbp import datasets
from jbp.cli import datacache


def test_digits_are_read_back_exactly_and_without_loading_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    real = datasets.load
    monkeypatch.setattr(datasets, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = datacache.load("digits", 3, cache=True)
    second = datacache.load("digits", 3, cache=True)
    assert len(calls) == 1 and len(list((tmp_path / "jbp" / "datasets").iterdir())) == 1
    for a, b in ((first, second), (real("digits", seed=3), second)):
        assert (a.name, a.loss, a.n_outputs) == (b.name, b.loss, b.n_outputs)
        for k in ("x_train", "y_train", "x_test", "y_test"):
            assert getattr(a, k).dtype == getattr(b, k).dtype
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    datacache.load("digits", 3, cache=False)
    datacache.load("xor", 0, cache=True)  # generated datasets are not cached
    assert len(calls) == 3 and len(list((tmp_path / "jbp" / "datasets").iterdir())) == 1


def test_an_unreadable_cache_file_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    file = datacache.path("digits", 0)
    (tmp_path / "jbp" / "datasets").mkdir(parents=True)
    open(file, "wb").write(b"PK\x03\x04 not a zip")
    data = datacache.load("digits", 0, cache=True)
    np.testing.assert_array_equal(data.x_train, datasets.load("digits", seed=0).x_train)
    assert datacache.load("digits", 0, cache=True).x_train.shape == data.x_train.shape
