"""``jbp predict`` and ``jbp evaluate``: a saved run's predictions and metrics, from its
checkpoint alone."""

import json

import numpy as np
import pytest

import jbp
from jbp import datasets
from jbp.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    argv = ["train", "--dataset", "moons", "--hidden", "8", "--epochs", "3", "--no-check", "--out", str(folder)]
    assert main(argv) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").unlink()  # both commands must read the checkpoint only
    return folder, metrics


def test_evaluate_recomputes_the_saved_runs_metrics(run, capsys):
    folder, metrics = run
    capsys.readouterr()
    assert main(["evaluate", "--out", str(folder), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["epoch"] == 3 and got["dataset"] == "moons" and got["network"] == "2-8-2"
    for k in ("test_loss", "test_accuracy", "train_accuracy"):
        np.testing.assert_allclose(got[k], metrics[k], rtol=1e-6)
    assert main(["evaluate", "--out", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"jbp evaluate: {folder}: moons, network 2-8-2, epoch 3 (ran all epochs)"
    assert lines[2] == f"test: loss {metrics['test_loss']:.4g}, accuracy {metrics['test_accuracy']:.4f}"


def test_predict_writes_the_test_split_as_csv_and_a_file_as_npy(run, tmp_path, capsys):
    folder, metrics = run
    assert main(["predict", "--out", str(folder)]) == 0
    rows = (folder / "predictions.csv").read_text().splitlines()
    assert rows[0] == "prediction,target,p_0,p_1" and len(rows) == 1 + 200
    table = np.loadtxt(folder / "predictions.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(np.mean(table[:, 0] == table[:, 1]), metrics["test_accuracy"])
    np.testing.assert_allclose(table[:, 2] + table[:, 3], 1.0, atol=1e-5)

    x = datasets.load("moons").x_test[:5]
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--out", str(folder), "--data", str(tmp_path / "x.npy"), "--to", str(tmp_path / "p.npy")]) == 0
    saved = jbp.load_checkpoint(folder / "checkpoint.npz")
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), saved.net.predict(saved.params, x), rtol=1e-6)
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {tmp_path / 'p.npy'}: 5 predictions for {tmp_path / 'x.npy'}"


@pytest.mark.parametrize("make, message", [
    (lambda d: np.save(d / "bad.npy", np.zeros((3, 5), np.float32)), "must hold numbers of shape (n, 2), got float32 (3, 5)"),
    (lambda d: np.savez(d / "bad.npz", inputs=np.zeros((3, 2))), "is not a .npy array or an .npz archive with x"),
    (lambda d: None, "--data must be a .csv, .npy or .npz file or a folder of .npy files, got"),
])
def test_bad_data_files_are_one_line(run, tmp_path, make, message, capsys):
    folder, _ = run
    make(tmp_path)
    path = next(iter(tmp_path.iterdir()), tmp_path / "missing.npy")
    assert main(["predict", "--out", str(folder), "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    for command in ("predict", "evaluate"):
        assert main([command, "--out", str(tmp_path)]) == 2
        assert f"no run in {tmp_path} (looked for" in capsys.readouterr().err


@pytest.mark.parametrize("train_args, network", [
    # a network of layers: digits become 8x8 images, given flat or as images to predict
    (["--dataset", "digits", "--layers", "conv2d:2:3,relu,flatten,dense:10"], "conv2d:2:3,relu,flatten,dense:10"),
    # a data file: read again, split and standardised as train read it
    (["--data", "CSV"], "3-8-2"),
])
def test_runs_of_layers_and_of_data_files_evaluate_and_predict(train_args, network, tmp_path, capsys):
    if "CSV" in train_args:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, 3))
        rows = "".join(f"{a:.4f},{b:.4f},{c:.4f},{int(a > 0)}\n" for a, b, c in x)
        (tmp_path / "d.csv").write_text("a,b,c,label\n" + rows)
        train_args = ["--data", str(tmp_path / "d.csv")]
    folder = tmp_path / "run"
    assert main(["train", *train_args, "--hidden", "8", "--epochs", "2", "--no-check", "--out", str(folder)]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", "--out", str(folder), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["network"] == network
    np.testing.assert_allclose(got["test_accuracy"], metrics["test_accuracy"], rtol=1e-6)
    assert main(["predict", "--out", str(folder)]) == 0
    table = np.loadtxt(folder / "predictions.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(np.mean(table[:, 0] == table[:, 1]), metrics["test_accuracy"], rtol=1e-6)
    if "digits" in train_args:
        flat = datasets.load("digits").x_test[:4]
        for x in (flat, flat.reshape(4, 8, 8, 1)):
            np.save(tmp_path / "x.npy", x)
            assert main(["predict", "--out", str(folder), "--data", str(tmp_path / "x.npy"), "--to", str(tmp_path / "p.npy")]) == 0
            saved = jbp.load_checkpoint(folder / "checkpoint.npz")
            np.testing.assert_allclose(np.load(tmp_path / "p.npy"), saved.net.predict(saved.params, flat.reshape(4, 8, 8, 1)),
                                       rtol=1e-6)


def _houses(n, seed):
    """Raw-scale features (area ~800-2600, price ~1e5-4e5) and string classes, as a user's file."""
    rng = np.random.default_rng(seed)
    area, rooms = rng.uniform(800, 2600, n).round(1), rng.integers(1, 6, n)
    price = (150 * area + 8000 * rooms + rng.normal(0, 1e4, n)).round(0)
    kind = np.where(price < 2.2e5, "cheap", np.where(price < 3.3e5, "mid", "lux"))
    return np.stack([area, rooms, price], 1), kind


def _write_houses(path, x, kind, with_kind=True):
    head = "area,rooms,price" + (",kind" if with_kind else "")
    rows = [f"{a},{int(r)},{p}" + (f",{k}" if with_kind else "") for (a, r, p), k in zip(x, kind)]
    path.write_text("\n".join([head, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def houses(tmp_path_factory):
    d = tmp_path_factory.mktemp("houses")
    x, kind = _houses(300, seed=0)
    argv = ["train", "--data", str(_write_houses(d / "houses.csv", x, kind)), "--target", "kind", "--hidden", "16",
            "--lr", "0.01", "--batch-size", "16", "--epochs", "20", "--no-check", "--out", str(d / "run")]
    assert main(argv) == 0
    return d


def test_predict_on_new_raw_rows_is_as_accurate_as_evaluate_reports(houses, capsys):
    """A user's CSV on raw scales with class names: predict on 200 new raw rows (as .npy,
    as a CSV with and without the target column, as .npz with the names in y) is as
    accurate as evaluate reports, and writes the class names."""
    d, run = houses, str(houses / "run")
    capsys.readouterr()
    assert main(["evaluate", "--out", run, "--format", "json"]) == 0
    reported = json.loads(capsys.readouterr().out)["test_accuracy"]
    assert reported > 0.9
    x, kind = _houses(200, seed=1)
    np.save(d / "new_raw.npy", x)
    np.savez(d / "new.npz", x=x, y=kind)
    inputs = [d / "new_raw.npy", _write_houses(d / "new.csv", x, kind),
              _write_houses(d / "new_no_target.csv", x, kind, with_kind=False), d / "new.npz"]
    for path in inputs:
        assert main(["predict", "--out", run, "--data", str(path), "--to", str(d / "p.csv")]) == 0
        rows = (d / "p.csv").read_text().splitlines()
        head = rows[0].split(",")
        assert head[0] == "prediction" and head[-3:] == ["p_cheap", "p_lux", "p_mid"], head
        predicted = np.array([r.split(",")[0] for r in rows[1:]])
        accuracy = np.mean(predicted == kind)
        assert accuracy >= reported - 0.05, (path, accuracy, reported)
        if "target" in head:
            assert [r.split(",")[1] for r in rows[1:]] == kind.tolist()
    assert capsys.readouterr().err == ""


def test_a_changed_data_file_is_refused_not_re_split(houses, capsys):
    d = houses
    x, kind = _houses(400, seed=0)  # the same file with 100 rows appended
    data = d / "houses.csv"
    before = data.read_text()
    try:
        _write_houses(data, x, kind)
        for command in ("evaluate", "predict"):
            assert main([command, "--out", str(d / "run")]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"--data {data} changed since {d / 'run'} was trained" in err, err
    finally:
        data.write_text(before)
    assert main(["evaluate", "--out", str(d / "run")]) == 0


def test_a_run_saved_before_runs_kept_their_preprocessing_loads_and_says_what_it_lacks(houses, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    c = jbp.load_checkpoint(houses / "run" / "checkpoint.npz")
    extra = {k: v for k, v in c.extra.items() if k != "preprocessing"}
    jbp.save_checkpoint(old / "checkpoint.npz", net=c.net, params=c.params, epoch=c.epoch, extra=extra)
    capsys.readouterr()
    assert main(["evaluate", "--out", str(old)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keeps no preprocessing (feature scaling, target scale, class names)" in err


def test_a_raw_scale_regression_learns_and_reports_in_the_targets_units(tmp_path, capsys):
    x, kind = _houses(300, seed=0)
    rows = [f"{a},{int(r)},{p}" for a, r, p in x]
    (tmp_path / "reg.csv").write_text("\n".join(["area,rooms,price", *rows]) + "\n")
    argv = ["train", "--data", str(tmp_path / "reg.csv"), "--task", "regression", "--hidden", "16", "--lr", "0.01",
            "--batch-size", "16", "--epochs", "20", "--no-check", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the price's noise is 1e4 and its spread ~8e4: an RMSE of 2.6e5 (as before) would be predicting ~0
    assert m["failed_to_learn"] is False and m["test_rmse"] < 2.5e4
    assert f"test RMSE {m['test_rmse']:.4g} (in the target's units)" in out
    new, _ = _houses(50, seed=1)
    (tmp_path / "new.csv").write_text("\n".join(["area,rooms", *(f"{a},{int(r)}" for a, r, _ in new)]) + "\n")
    assert main(["predict", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "new.csv"),
                 "--to", str(tmp_path / "p.npy")]) == 0
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (50, 1) and np.sqrt(np.mean((p[:, 0] - new[:, 2]) ** 2)) < 3e4
    capsys.readouterr()
    assert main(["evaluate", "--out", str(tmp_path / "run"), "--format", "json"]) == 0
    np.testing.assert_allclose(json.loads(capsys.readouterr().out)["test_rmse"], m["test_rmse"], rtol=1e-5)


def test_a_mmap_run_predicts_and_evaluates(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    for name, n in (("", 64), ("_test", 16)):
        x = rng.normal(size=(n, 3)).astype(np.float32)
        np.save(folder / f"x{name}.npy", x)
        np.save(folder / f"y{name}.npy", (x[:, 0] > 0).astype(np.int64))
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(folder), "--mmap", "--hidden", "4", "--epochs", "2", "--no-check",
                 "--out", run]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--out", run, "--format", "json"]) == 0
    captured = capsys.readouterr()
    m = json.loads(captured.out)
    assert 0 <= m["test_accuracy"] <= 1 and m["train_loss"] > 0 and captured.err == ""
    assert main(["predict", "--out", run]) == 0
    table = np.loadtxt(tmp_path / "run" / "predictions.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(np.mean(table[:, 0] == table[:, 1]), m["test_accuracy"], rtol=1e-6)
    assert main(["predict", "--out", run, "--data", str(folder / "x.npy"), "--to", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (64, 2)


def test_targets_are_mapped_to_the_runs_class_ids_however_they_are_written():
    from jbp.cli import preprocess
    from jbp.cli.common import UsageError

    numbered = preprocess.empty()._replace(classes=[1, 6])
    np.testing.assert_array_equal(numbered.class_ids(["6", "1.0", 6.0, np.int64(1)], "y"), [1, 0, 1, 0])
    named = preprocess.empty()._replace(classes=["cheap", "lux", "mid"])
    np.testing.assert_array_equal(named.class_ids(np.array(["mid", "cheap"]), "y"), [2, 0])
    with pytest.raises(UsageError, match=r"y holds labels \['posh'\] that the run does not know; its classes are cheap, lux, mid"):
        named.class_ids(["posh"], "y")
