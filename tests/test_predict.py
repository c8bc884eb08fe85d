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
    (lambda d: None, "--data must be a .npy or .npz file, got"),
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
