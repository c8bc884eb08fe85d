"""jbp train on a user's files: --data, --val-fraction, --patience, as a user runs them."""

import gzip
import json

import numpy as np
import pytest

import jbp
from jbp.cli import main
from helpers import idx_bytes

FAST = ["--no-check", "--hidden", "6", "--batch-size", "8"]


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def write_csv(path, n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).round(4)
    label = np.where(x[:, 0] + 0.3 * rng.normal(size=n) > 0, "yes", "no")
    path.write_text("a,b,c,answer\n" + "".join(f"{r[0]},{r[1]},{r[2]},{l}\n" for r, l in zip(x, label)))
    return path


def write_idx(folder, side=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = (np.arange(n) % 3).astype(np.uint8)
        images = (rng.integers(0, 60, size=(n, side, side)) + 60 * labels[:, None, None]).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return folder


def test_csv_trains_with_validation_and_stops_early(tmp_path, capsys):
    argv = ["train", "--data", str(write_csv(tmp_path / "q.csv")), "--target", "answer", "--val-fraction", "0.25",
            "--patience", "2", "--optimizer", "sgd", "--lr", "2.0", "--epochs", "30", "--chunk", "4",
            "--out", str(tmp_path / "run"), *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    m = _metrics(tmp_path / "run")
    v = m["validation"]
    assert m["classes"] == ["no", "yes"] and v["n"] == 16 and m["stop_reason"].startswith("early stopping")
    assert m["epochs_run"] == len(m["train_loss"]) == len(v["val_loss"]) < 30
    assert m["epochs_run"] - 1 - v["best_epoch"] == 2 and v["kept_epoch"] == v["best_epoch"] + 1
    assert v["val_loss"][v["best_epoch"]] == min(v["val_loss"]) == v["best_val_loss"]
    assert f"kept epoch {v['kept_epoch']} (lowest validation loss)" in out
    # the kept parameters are best.npz's, and the test loss is theirs
    best = jbp.load_checkpoint(tmp_path / "run" / "best.npz")
    assert best.epoch == v["kept_epoch"]
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # evaluate reads back the kept epoch's parameters, and names it
    capsys.readouterr()
    assert main(["evaluate", "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"epoch {m['epochs_run']} ({m['stop_reason']}), parameters of the kept epoch "
                             f"{v['kept_epoch']} (lowest validation loss)"), lines[0]
    assert lines[2] == f"test: loss {m['test_loss']:.4g}, accuracy {m['test_accuracy']:.4f}"


def test_npz_and_idx_folders_train_with_validation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 1] > 0).astype(np.int64))
    for data, name in ((tmp_path / "d.npz", "npz"), (write_idx(tmp_path / "mnist"), "idx")):
        out = tmp_path / name
        argv = ["train", "--data", str(data), "--val-fraction", "0.2", "--patience", "3", "--epochs", "4",
                "--chunk", "2", "--out", str(out), *FAST]
        assert main(argv) == 0
        m = _metrics(out)
        assert len(m["validation"]["val_accuracy"]) == m["epochs_run"] and 0 <= m["validation"]["best_epoch"] < 4
        assert 0 <= m["test_accuracy"] <= 1
    assert _metrics(tmp_path / "idx")["network"]["sizes"][0] == 36  # 6x6 images, flattened for the MLP


def test_resume_with_validation_gives_exactly_the_uninterrupted_run(tmp_path):
    data = write_csv(tmp_path / "q.csv", n=60)
    common = ["train", "--data", str(data), "--val-fraction", "0.25", "--patience", "3", "--chunk", "2", *FAST]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(common + ["--epochs", "7", "--out", str(whole)]) == 0
    assert main(common + ["--epochs", "3", "--out", str(split)]) == 0
    assert main(["train", "--resume", "--epochs", "7", "--chunk", "2", "--no-check", "--out", str(split)]) == 0
    a, b = _metrics(whole), _metrics(split)
    assert a["train_loss"] == b["train_loss"] and a["validation"] == b["validation"]
    for name in ("checkpoint.npz", "best.npz"):
        pa, pb = (jbp.load_checkpoint(folder / name).params for folder in (whole, split))
        for la, lb in zip(pa, pb):
            np.testing.assert_array_equal(la.W, lb.W)
            np.testing.assert_array_equal(la.b, lb.b)


def _bad_files(tmp_path):
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,x\n3,4\n")
    (tmp_path / "one.csv").write_text("a,y\n1,x\n2,x\n")
    (tmp_path / "two.csv").write_text("a,y\n1,x\n2,z\n")
    np.savez(tmp_path / "rank.npz", x=np.zeros(5), y=np.arange(5))
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(12))
    (idx / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    return tmp_path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "{d}/ragged.csv"], "ragged.csv, line 3: 2 cells, expected 3 as in the header"),
        (["--data", "{d}/one.csv"], "one.csv: column 'y' holds a single class ('x') on all 2 rows"),
        (["--data", "{d}/ragged.csv", "--target", "z"], "ragged.csv, line 1: no target column 'z'"),
        (["--data", "{d}/rank.npz"], "x has shape (5,); expected at least 2-D inputs"),
        (["--data", "{d}/idx"], "train-images-idx3-ubyte: wrong magic number 0x00000801 at byte offset 0"),
        (["--data", "{d}/missing.csv"], "--data {d}/missing.csv: no such file or folder"),
        (["--data", "{d}/one.csv", "--dataset", "moons"], "give either --dataset NAME or --data PATH, not both"),
        (["--target", "y"], "--target applies to --data PATH, which was not given"),
        (["--patience", "3"], "--patience needs --val-fraction"),
        (["--val-fraction", "1.5"], "--val-fraction must be in (0, 1), got 1.5"),
        (["--data", "{d}/rank.npz", "--task", "ranking"], "unknown task 'ranking'"),
        (["--data", "{d}/idx", "--mmap", "--val-fraction", "0.2"], "--val-fraction is not available with --mmap"),
        (["--data", "{d}/two.csv"], "two.csv has 2 examples: too few to hold out a test split of 0.2"),
        (["--dataset", "moons", "--val-fraction", "0.99"],
         "--val-fraction 0.99 leaves 8 of 800 training examples for training, fewer than one batch (32); use at most 0.96"),
    ],
)
def test_bad_files_and_options_are_one_line_and_exit_2(tmp_path, argv, message, capsys):
    d = _bad_files(tmp_path)
    assert main(["train", *[a.format(d=d) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jbp: error: ") and message.format(d=d) in err, err
