"""jbp train --data FOLDER --mmap: memory-mapped .npy files, streamed; exact resume."""

import json

import numpy as np

from jbp.cli import main

FAST = ["--no-check", "--hidden", "6", "--batch-size", "8"]


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_memory_mapped_npy_folder_trains_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "big"
    folder.mkdir()
    x = rng.normal(size=(100, 3)).astype(np.float32)
    for suffix, a in (("", x), ("_test", x[:20])):
        np.save(folder / f"x{suffix}.npy", a)
        np.save(folder / f"y{suffix}.npy", (a[:, 0] > 0).astype(np.int64))
    common = ["train", "--data", str(folder), "--mmap", "--chunk", "2", *FAST]
    assert main(common + ["--epochs", "4", "--out", str(tmp_path / "whole")]) == 0
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--resume", "--epochs", "4", "--chunk", "2", "--no-check", "--out", str(tmp_path / "split")]) == 0
    a, b = _metrics(tmp_path / "whole"), _metrics(tmp_path / "split")
    assert a["memory_mapped"] and len(a["train_loss"]) == 4 and a["train_loss"] == b["train_loss"]
    assert a["test_accuracy"] == b["test_accuracy"]
