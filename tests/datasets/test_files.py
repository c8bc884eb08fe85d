"""A user's data files: CSV, .npz, .npy folders and IDX folders, and one clear error per malformed file."""

import gzip
import json

import numpy as np
import pytest

from jbp import datasets
from helpers import idx_bytes


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def labelled_rows(n=40, seed=0, names=("ant", "bee", "cat")):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).round(3)
    labels = [names[i % len(names)] for i in range(n)]
    return [[a, b, c] for (a, b), c in zip(x, labels)]


def write_idx(folder, n_train=30, n_test=10, gz=False, test_prefix="t10k", seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    for prefix, n in (("train", n_train), (test_prefix, n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        for kind, a, code in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{kind}-idx{code}-ubyte"
            data = idx_bytes(a)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


def test_csv_with_named_classes_is_split_stratified_and_standardised_on_train(tmp_path):
    rows = labelled_rows(60)
    d = datasets.load_file(write_csv(tmp_path / "zoo.csv", ["u", "v", "kind"], rows), seed=3)
    assert d.name == "zoo.csv" and d.classes == ("ant", "bee", "cat") and d.n_outputs == 3
    assert d.loss == "cross_entropy" and d.y_train.dtype == np.int32 and d.x_train.dtype == np.float32
    assert (len(d.x_train), len(d.x_test)) == (48, 12)
    np.testing.assert_array_equal(np.bincount(d.y_test), [4, 4, 4])  # stratified: 20% of each class
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(0), 1, atol=1e-4)
    # the same seed gives the same split; another seed another one
    again, other = datasets.load_file(tmp_path / "zoo.csv", seed=3), datasets.load_file(tmp_path / "zoo.csv", seed=4)
    np.testing.assert_array_equal(again.x_test, d.x_test)
    assert not np.array_equal(other.x_test, d.x_test)
    # the split is datasets.split's, and the test rows are standardised with the training rows' statistics
    raw, ids = np.array([r[:2] for r in rows], float), np.array([("ant", "bee", "cat").index(r[2]) for r in rows])
    keep, held = datasets.split(ids, 0.2, seed=3)
    mean, std = raw[keep].mean(0), raw[keep].std(0)
    np.testing.assert_allclose(d.x_test, (raw[held] - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(d.y_test, ids[held])


def test_csv_integer_labels_features_and_regression(tmp_path):
    rows = [[i, 2 * i, i % 2 * 5 + 1, 0.5 * i] for i in range(20)]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label", "price"], rows)
    d = datasets.load_file(path, target="label", features=["b"])
    assert d.classes == (1, 6) and d.n_features == 1 and set(np.unique(d.y_train)) == {0, 1}
    r = datasets.load_file(path, target="price", task="regression")
    assert r.loss == "mse" and r.n_features == 3 and r.y_train.shape == (16, 1) and r.y_train.dtype == np.float32
    # regression targets are standardised on the training split, and y_scaling maps them back to the file's prices
    np.testing.assert_allclose([r.y_train.mean(), r.y_train.std()], [0, 1], atol=1e-5)
    back = np.concatenate([r.y_scaling.invert(r.y_train)[:, 0], r.y_scaling.invert(r.y_test)[:, 0]])
    np.testing.assert_allclose(np.sort(back), [0.5 * i for i in range(20)], atol=1e-5)
    raw = datasets.load_file(path, target="price", task="regression", scale_targets=False)
    assert raw.y_scaling is None
    assert set(np.concatenate([raw.y_train[:, 0], raw.y_test[:, 0]]).tolist()) == {0.5 * i for i in range(20)}
    # the CSV's column names and the scaling of the inputs are kept
    assert r.columns == ("a", "b", "label") and r.target == "price"
    np.testing.assert_allclose(r.x_scaling.apply(r.x_scaling.invert(r.x_test)), r.x_test, atol=1e-5)


def test_too_few_rows_for_a_test_split_is_one_line(tmp_path):
    path = write_csv(tmp_path / "two.csv", ["a", "y"], [[1, "x"], [2, "z"]])
    with pytest.raises(ValueError, match=r"two.csv has 2 examples: too few to hold out a test split of 0.2"):
        datasets.load_file(path)


def test_a_scaling_round_trips_through_json_exactly():
    rng = np.random.default_rng(0)
    s = datasets.Scaling.fit(rng.normal(3, 7, size=(10, 2, 3)).astype(np.float32))
    back = datasets.Scaling.from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_array_equal(back.mean, s.mean)
    np.testing.assert_array_equal(back.scale, s.scale)
    with pytest.raises(ValueError, match="a scaling's mean must be finite and its scale finite and > 0"):
        datasets.Scaling.from_dict({"shape": [1], "mean": [0.0], "scale": [0.0]})


def test_npz_with_and_without_a_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), np.arange(30) % 2
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = datasets.load_file(tmp_path / "a.npz")
    assert d.loss == "cross_entropy" and (len(d.x_train), len(d.x_test)) == (24, 6) and d.classes == (0, 1)
    np.savez(tmp_path / "b.npz", x=x, y=y.astype(np.float64) * 0.5, x_test=x[:5], y_test=y[:5] * 0.5)
    r = datasets.load_file(tmp_path / "b.npz")
    assert r.loss == "mse" and len(r.x_train) == 30 and len(r.x_test) == 5


def test_npy_folder_and_its_x_file(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.normal(size=(20, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.array(["no", "yes"] * 10))
    for path in (tmp_path, tmp_path / "x.npy"):
        d = datasets.load_file(path)
        assert d.classes == ("no", "yes") and d.n_features == 3 and len(d.x_train) + len(d.x_test) == 20


@pytest.mark.parametrize("gz, test_prefix", [(False, "t10k"), (True, "t10k"), (True, "test")])
def test_idx_folder_keeps_image_shape_and_flattens_for_an_mlp(tmp_path, gz, test_prefix):
    d = datasets.load_file(write_idx(tmp_path / "mnist", gz=gz, test_prefix=test_prefix))
    assert d.x_train.shape == (30, 28, 28, 1) and d.x_test.shape == (10, 28, 28, 1)
    assert d.n_features == 784 and d.n_outputs == 3 and d.y_train.tolist() == [i % 3 for i in range(30)]
    flat = datasets.flatten(d)
    assert flat.x_train.shape == (30, 784)
    np.testing.assert_array_equal(flat.x_test[4], d.x_test[4].ravel())


def _bad_csv(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


GOOD_ROWS = "a,b,y\n1,2,x\n3,4,z\n5,6,x\n7,8,z\n"


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("a,b,y\n1,2,x\n3,4\n", {}, r"bad.csv, line 3: 2 cells, expected 3 as in the header"),
        ("a,b,y\n1,2,x\n3,four,z\n", {}, r"bad.csv, line 3, column 'b': 'four' is not a number"),
        ("a,b,y\n1,2,x\n3,nan,z\n", {}, r"bad.csv, line 3, column 'b': 'nan'; expected a finite number"),
        ("a,b,y\n1,2,x\n,4,z\n", {}, r"bad.csv, line 3, column 'a': empty cell; expected a number"),
        ("a,b,y\n1,2,x\n3,4,\n", {}, r"bad.csv, line 3, column 'y': empty cell; expected a target"),
        (GOOD_ROWS, {"target": "label"}, r"bad.csv, line 1: no target column 'label'; the header has a, b, y"),
        (GOOD_ROWS, {"features": ["a", "c"]}, r"bad.csv, line 1: no feature column 'c'"),
        ("a,b,y\n1,2,x\n3,4,x\n", {}, r"bad.csv: column 'y' holds a single class \('x'\) on all 2 rows"),
        ("a,b,y\n1,2,0.5\n3,4,1\n", {}, r"bad.csv, line 2, column 'y': '0.5' is not a class label"),
        ("a,b,y\n1,2,x\n3,4,z\n", {"task": "regression"}, r"bad.csv, line 2, column 'y': 'x' is not a number"),
        ("", {}, r"bad.csv, line 1: expected a header row"),
        ("a,a,y\n1,2,x\n", {}, r"bad.csv, line 1: column 'a' appears twice"),
    ],
)
def test_malformed_csv_is_one_line_naming_file_and_line(tmp_path, text, kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        datasets.load_file(_bad_csv(tmp_path, text), **kwargs)
    assert "\n" not in str(e.value) and str(tmp_path / "bad.csv") in str(e.value)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros(5), "y": np.arange(5)}, r"x has shape \(5,\); expected at least 2-D inputs"),
        ({"x": np.zeros((5, 2)), "y": np.zeros((5, 2, 2))}, r"y has shape \(5, 2, 2\); expected targets"),
        ({"x": np.zeros((5, 2))}, r"has no array 'y' \(it holds x\); expected arrays 'x' \(inputs\) and 'y'"),
        ({"inputs": np.zeros((5, 2)), "y": np.arange(5)}, r"has no array 'x' \(it holds inputs, y\)"),
        ({"x": np.zeros((5, 2)), "y": np.arange(4)}, r"x has 5 examples but y has 4"),
        ({"x": np.full((4, 2), np.nan), "y": np.arange(4) % 2}, r"x holds 8 NaN or inf values"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4, int)}, r"bad.npz: y holds a single class \(0\) in all 4 examples"),
        ({"x": np.zeros((4, 2)), "y": np.arange(4) % 2, "x_test": np.zeros((2, 2))}, r"only one of 'x_test' and 'y_test'"),
    ],
)
def test_malformed_npz_is_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as e:
        datasets.load_file(tmp_path / "bad.npz")
    assert "\n" not in str(e.value) and "bad.npz" in str(e.value)


def test_a_file_that_is_not_an_npz_archive(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match=r"junk.npz is not a readable .npz archive"):
        datasets.load_file(tmp_path / "junk.npz")


def _spoil(folder, name, fn):
    path = folder / name
    path.write_bytes(fn(path.read_bytes()))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (("train-images-idx3-ubyte", lambda b: b"\x00\x00\x08\x01" + b[4:]),
         r"train-images-idx3-ubyte: wrong magic number 0x00000801 at byte offset 0; expected 0x00000803"),
        (("train-labels-idx1-ubyte", lambda b: b"\x1f\x8b" + b[2:]),
         r"train-labels-idx1-ubyte: wrong magic number 0x1F8B0801 at byte offset 0; expected 0x00000801"),
        (("t10k-images-idx3-ubyte", lambda b: b[:-100]),
         r"t10k-images-idx3-ubyte: truncated at byte offset 7756; the header announces shape \(10, 28, 28\), "
         r"7840 bytes of data ending at byte offset 7856"),
        (("train-images-idx3-ubyte", lambda b: b[:10]), r"truncated at byte offset 10; expected 3 4-byte dimensions"),
        (("train-labels-idx1-ubyte", lambda b: idx_bytes(np.arange(29, dtype=np.uint8) % 3)),
         r"train-labels-idx1-ubyte: 29 labels \(byte offset 4\) but .*train-images-idx3-ubyte holds 30 images"),
        (("train-labels-idx1-ubyte", lambda b: b + b"\x00\x01"), r"2 unexpected bytes from byte offset 38"),
    ],
)
def test_malformed_idx_names_the_file_and_byte_offset(tmp_path, spoil, message):
    folder = write_idx(tmp_path / "mnist")
    _spoil(folder, *spoil)
    with pytest.raises(ValueError, match=message) as e:
        datasets.load_file(folder)
    assert "\n" not in str(e.value)


def test_truncated_gzip_idx_and_missing_files(tmp_path):
    folder = write_idx(tmp_path / "mnist", gz=True)
    _spoil(folder, "t10k-labels-idx1-ubyte.gz", lambda b: b[: len(b) // 2])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: truncated or corrupted gzip stream"):
        datasets.load_file(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"has no test labels file; expected t10k-labels-idx1-ubyte\[.gz\]"):
        datasets.load_file(folder)


def test_bad_arguments_and_unknown_formats(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file or folder"):
        datasets.load_file(tmp_path / "missing.csv")
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"data.txt: unknown data format; expected a .csv or .npz file"):
        datasets.load_file(tmp_path / "data.txt")
    write_csv(tmp_path / "ok.csv", ["a", "y"], [[1, 0], [2, 1]])
    with pytest.raises(ValueError, match="unknown task 'ranking'; expected one of classification, regression"):
        datasets.load_file(tmp_path / "ok.csv", task="ranking")
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 2)), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match="target and features select CSV columns"):
        datasets.load_file(tmp_path / "a.npz", target="y")


def test_split_keeps_every_class_and_is_deterministic():
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    keep, held = datasets.split(y, 0.2, seed=0)
    assert np.bincount(y[held], minlength=3).tolist() == [2, 1, 0] and len(keep) + len(held) == 17
    assert set(y[keep]) == {0, 1, 2} and not set(keep) & set(held)
    again = datasets.split(y, 0.2, seed=0)
    np.testing.assert_array_equal(again[1], held)
