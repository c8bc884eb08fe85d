"""The command line, as a user runs it: results, outputs, exact resume, one-line errors."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import jbp
from jbp.cli import main


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_defaults_reach_097_on_digits_and_write_outputs(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gradient check on 64 examples, manual vs jax.grad (float32): PASSED" in out
    m = _metrics(tmp_path)
    assert m["dataset"] == "digits" and m["test_accuracy"] >= 0.97
    assert len(m["train_loss"]) == m["epochs_run"] == 100
    assert m["settings"]["hidden"] == "256" and m["gradient_check"]["ok"] is True
    assert f"test accuracy {m['test_accuracy']:.4f}" in out
    assert {"train_s", "steps_per_s"} <= set(m["timings"])
    for name in ("loss.png", "checkpoint.npz"):
        assert (tmp_path / name).stat().st_size > 1000
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_d_dataset_writes_a_decision_boundary(tmp_path):
    assert main(["train", "--dataset", "moons", "--epochs", "3", "--no-check", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "decision_boundary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_gives_exactly_the_uninterrupted_run(tmp_path):
    common = ["train", "--dataset", "moons", "--hidden", "16", "--batch-size", "50", "--no-check", "--chunk", "2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(common + ["--epochs", "8", "--out", str(whole)]) == 0
    assert main(common + ["--epochs", "5", "--out", str(split)]) == 0
    assert main(["train", "--resume", "--epochs", "8", "--no-check", "--chunk", "2", "--out", str(split)]) == 0
    a, b = _metrics(whole), _metrics(split)
    assert len(a["train_loss"]) == 8
    assert a["train_loss"] == b["train_loss"]  # bit-identical floats, as a list
    pa = jbp.load_checkpoint(whole / "checkpoint.npz").params
    pb = jbp.load_checkpoint(split / "checkpoint.npz").params
    for la, lb in zip(pa, pb):
        np.testing.assert_array_equal(la.W, lb.W)
        np.testing.assert_array_equal(la.b, lb.b)


def test_check_command_prints_the_table(capsys):
    # relu on XOR puts a kink exactly at the input (0, 0): finite differences there must
    # not be mistaken for a wrong gradient
    assert main(["check", "--dataset", "xor", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    assert "params[1].b" in out and out.rstrip().endswith("PASSED")


def test_check_command_json_and_mutations(capsys):
    assert main(["check", "--dataset", "xor", "--hidden", "4", "--activation", "tanh", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and len(report["leaves"]) == 4
    assert main(["check", "--dataset", "xor", "--hidden", "4", "--activation", "tanh", "--mutations"]) == 0
    out = capsys.readouterr().out
    assert "missing f'(z)" in out and "bias averaged" in out and out.rstrip().endswith("PASSED")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'; expected one of xor, sine, moons, spirals, digits"),
        (["train", "--hidden", "12a"], "--hidden must be comma-separated positive widths like 128 or 256,128, got '12a'"),
        (["train", "--hidden", "64,0"], "--hidden must be comma-separated positive widths"),
        (["train", "--resume"], "--resume needs --out DIR"),
        (["train", "--activation", "swish"], "unknown activation 'swish'"),
        (["train", "--optimizer", "rmsprop"], "unknown --optimizer 'rmsprop'; expected one of sgd, momentum, adam"),
        (["train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jbp: error: ") and message in err


def test_resume_without_a_checkpoint_and_with_changed_settings(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert "no checkpoint to resume in" in capsys.readouterr().err
    assert main(["train", "--dataset", "xor", "--epochs", "2", "--no-check", "--out", str(tmp_path)]) == 0
    assert main(["train", "--resume", "--lr", "0.5", "--out", str(tmp_path)]) == 2
    assert "--lr 0.5 differs from the run in" in capsys.readouterr().err


def test_a_corrupted_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip")
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert "is not a readable jbp checkpoint" in capsys.readouterr().err


def test_module_entry_point_prints_no_traceback():
    run = subprocess.run([sys.executable, "-m", "jbp", "train", "--dataset", "mnist"], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "jbp: error: unknown dataset 'mnist'; expected one of xor, sine, moons, spirals, digits"
    ]


def test_divergence_is_one_line_exit_1_and_keeps_the_last_finite_parameters(tmp_path, capsys):
    argv = ["train", "--dataset", "sine", "--hidden", "8", "--optimizer", "sgd", "--lr", "1e6",
            "--epochs", "3", "--no-check", "--out", str(tmp_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    diverged = [line for line in out if "diverged" in line and not line.startswith("result:")]
    assert len(diverged) == 1, out
    assert re.fullmatch(r"training diverged at epoch (\d+): the loss became (nan|inf|-inf); "
                        r"keeping the parameters of epoch (\d+)", diverged[0]), diverged[0]
    m = _metrics(tmp_path)
    assert m["stop_reason"] == "diverged: the training loss became non-finite"
    assert np.all(np.isfinite(m["train_loss"])) and len(m["train_loss"]) == m["epochs_run"] < 3
    saved = jbp.load_checkpoint(tmp_path / "checkpoint.npz")
    assert saved.epoch == m["epochs_run"]
    assert all(np.all(np.isfinite(a)) for layer in saved.params for a in layer)
