"""jbp train --rule and its per-layer statistics: exact resume, layers.png, metrics.json."""

import json

import jax
import numpy as np

import jbp
from jbp.cli import main


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_resume_with_feedback_alignment_gives_exactly_the_uninterrupted_run(tmp_path):
    common = ["train", "--dataset", "moons", "--hidden", "8,8", "--batch-size", "100", "--no-check",
              "--chunk", "2", "--rule", "fa"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(common + ["--epochs", "4", "--out", str(whole)]) == 0
    assert main(common + ["--epochs", "2", "--out", str(split)]) == 0
    assert main(["train", "--resume", "--epochs", "4", "--no-check", "--chunk", "2", "--out", str(split)]) == 0
    a, b = _metrics(whole), _metrics(split)
    assert a["settings"]["rule"] == "fa" and a["train_loss"] == b["train_loss"]  # bit-identical floats
    assert a["layer_stats"] == b["layer_stats"]  # concatenated over chunks and across the resume
    stats = a["layer_stats"]
    assert sorted(stats) == sorted(["delta_norm", "grad_norm", "weight_norm", "update_ratio", "dead_fraction", "alignment"])
    assert np.array(stats["alignment"], float).shape == (4, 3)
    assert all(row[-1] == 0.0 and 0 < row[0] < 180 for row in stats["alignment"])
    assert all(row[-1] is None for row in stats["dead_fraction"])  # softmax: JSON null, not NaN
    ca, cb = (jbp.load_checkpoint(d / "checkpoint.npz") for d in (whole, split))
    assert [B.shape for B in ca.feedback] == [(8, 8), (2, 8)]
    for u, v in zip(jax.tree.leaves((ca.params, ca.feedback)), jax.tree.leaves((cb.params, cb.feedback))):
        np.testing.assert_array_equal(u, v)
    assert (whole / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_network_of_dense_layers_written_as_layers_resumes_exactly_and_draws_layers_png(tmp_path):
    """--layers with dropout between dense layers, direct feedback alignment: the feedback
    weights and the dropout masks of a resumed run are those of the uninterrupted one."""
    common = ["train", "--dataset", "moons", "--layers", "dense:8,relu,dropout:0.2,dense:6,dense:2",
              "--batch-size", "100", "--no-check", "--chunk", "1", "--rule", "dfa"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(common + ["--epochs", "2", "--out", str(whole)]) == 0
    assert main(common + ["--epochs", "1", "--out", str(split)]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--no-check", "--chunk", "1", "--out", str(split)]) == 0
    a, b = _metrics(whole), _metrics(split)
    assert a["train_loss"] == b["train_loss"] and a["layer_stats"] == b["layer_stats"]  # bit-identical floats
    assert np.array(a["layer_stats"]["alignment"], float).shape == (2, 3)  # one column per dense layer
    assert all(row[0] is not None and row[1] is None for row in a["layer_stats"]["dead_fraction"])  # relu, none
    ca, cb = (jbp.load_checkpoint(d / "checkpoint.npz") for d in (whole, split))
    assert [B.shape for B in ca.feedback] == [(2, 8), (2, 6)]
    for u, v in zip(jax.tree.leaves((ca.params, ca.feedback)), jax.tree.leaves((cb.params, cb.feedback))):
        np.testing.assert_array_equal(u, v)
    assert (whole / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backprop_run_records_zero_alignment_and_a_bad_rule_is_one_line(tmp_path, capsys):
    assert main(["train", "--dataset", "xor", "--hidden", "4", "--epochs", "2", "--no-check", "--out", str(tmp_path)]) == 0
    m = _metrics(tmp_path)
    assert m["settings"]["rule"] == "bp" and m["layer_stats"]["alignment"] == [[0.0, 0.0]] * 2
    assert (tmp_path / "layers.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["train", "--rule", "hebb"]) == 2
    err = capsys.readouterr().err
    assert err == "jbp: error: unknown rule 'hebb'; expected one of bp, fa, ss, dfa\n"
    assert main(["train", "--resume", "--rule", "fa", "--out", str(tmp_path)]) == 2
    assert "--rule fa differs from the run in" in capsys.readouterr().err
    assert main(["train", "--layers", "dense:8,layernorm,dense:10", "--rule", "fa"]) == 2
    assert capsys.readouterr().err == (
        "jbp: error: --rule fa needs every layer with parameters to have weights (--hidden, or --layers of dense "
        "and conv items with parameter-free items between them), but --layers item 'layernorm' is a LayerNorm\n")
