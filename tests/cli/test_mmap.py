"""jbp train --data FOLDER --mmap: memory-mapped .npy files, streamed; exact resume."""

import json

import numpy as np
import pytest

import jbp
from jbp.cli import main

FAST = ["--no-check", "--hidden", "6", "--batch-size", "8"]


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize("rule", ["bp", "fa"])
def test_memory_mapped_npy_folder_trains_and_resumes_exactly(tmp_path, capsys, rule):
    rng = np.random.default_rng(0)
    folder = tmp_path / "big"
    folder.mkdir()
    x = rng.normal(size=(100, 3)).astype(np.float32)
    for suffix, a in (("", x), ("_test", x[:20])):
        np.save(folder / f"x{suffix}.npy", a)
        np.save(folder / f"y{suffix}.npy", (a[:, 0] > 0).astype(np.int64))
    common = ["train", "--data", str(folder), "--mmap", "--chunk", "2", "--rule", rule, *FAST]
    assert main(common + ["--epochs", "4", "--out", str(tmp_path / "whole")]) == 0
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--resume", "--epochs", "4", "--chunk", "2", "--no-check", "--out", str(tmp_path / "split")]) == 0
    a, b = _metrics(tmp_path / "whole"), _metrics(tmp_path / "split")
    assert a["memory_mapped"] and len(a["train_loss"]) == 4 and a["train_loss"] == b["train_loss"]
    assert a["test_accuracy"] == b["test_accuracy"] and a["settings"]["rule"] == rule
    # the per-layer statistics, and under FA its feedback weights, kept for the resume
    assert (tmp_path / "whole" / "layers.png").exists() and (tmp_path / "split" / "layers.png").exists()
    saved = jbp.load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    assert len(saved.extra["layer_stats"]["delta_norm"]) == 4 and len(saved.feedback) == (rule == "fa")
    capsys.readouterr()
    assert main(["evaluate", "--out", str(tmp_path / "whole"), "--format", "json"]) == 0  # read back in slices
    np.testing.assert_allclose(json.loads(capsys.readouterr().out)["test_accuracy"], a["test_accuracy"], rtol=1e-6)


def test_what_the_memory_mapped_path_does_not_do_is_one_line(tmp_path, capsys):
    folder = tmp_path / "big"
    folder.mkdir()
    np.save(folder / "x.npy", np.zeros((10, 3), np.float32))
    np.save(folder / "y.npy", np.arange(10) % 2)
    base = ["train", "--data", str(folder), "--mmap", *FAST, "--out", str(tmp_path / "run")]
    for extra, flag in ((["--layers", "dense:4,relu,dense:2"], "--layers/--model"),
                        (["--dp-clip", "1", "--dp-noise", "1"], "--dp-*")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("jbp: error: --mmap trains a jbp.MLP") and flag in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
