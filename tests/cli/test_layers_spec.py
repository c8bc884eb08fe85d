"""``jbp train --layers SPEC`` (jbp/cli/layers_spec.py): the grammar, one-line errors,
a network of layers trained, checkpointed and resumed."""

import json

import pytest

import jbp
from jbp.cli import main


@pytest.mark.parametrize("spec, message", [
    ("dense:16,relu,dense", "--layers item 'dense': dense takes 1 integer arguments, got 0"),
    ("dense:16,,dense:10", "--layers must be comma-separated layers like dense:64,relu,dense:10"),
    ("dense:x", "--layers item 'dense:x': dense's arguments must be integers"),
    ("dense:0", "--layers item 'dense:0': dense's arguments must be >= 1"),
    ("swish,dense:10", "--layers item 'swish' is not a layer"),
    ("dense:16,relu", "--layers 'dense:16,relu': the last layer gives 16 outputs but digits needs 10; end with dense:10"),
])
def test_bad_specs_are_one_line_and_exit_2(spec, message, capsys):
    assert main(["train", "--layers", spec, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jbp: error: ") and message in err


def test_model_and_layers_together_are_refused(capsys):
    assert main(["train", "--model", "cnn", "--layers", "dense:10"]) == 2
    assert "give --model or --layers, not both" in capsys.readouterr().err


def test_layers_train_checkpoint_and_resume(tmp_path):
    argv = ["train", "--layers", "dense:16,tanh,dense:10", "--no-check", "--chunk", "1", "--out", str(tmp_path)]
    assert main(argv + ["--epochs", "1"]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--no-check", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["network"]["layers"] == "dense:16,tanh,dense:10"
    assert len(metrics["train_loss"]) == 2 and metrics["train_loss"][1] < metrics["train_loss"][0]
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1
    saved = jbp.load_checkpoint(tmp_path / "checkpoint.npz")  # built-in layers: rebuilt from JSON
    assert isinstance(saved.net, jbp.Sequential) and saved.net.input_shape == (64,) and saved.epoch == 2
