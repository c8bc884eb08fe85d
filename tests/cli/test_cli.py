"""The command line, as a user runs it: results, outputs, exact resume, one-line errors."""

import json
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import jbp
from jbp.cli import common, main, parser


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_defaults_reach_0975_on_digits_and_write_outputs(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("gradient check on 64 examples at the initial parameters, manual vs jax.grad (float32): PASSED, "
            "max relative error") in out
    assert "every leaf also verified in float64" in out
    m = _metrics(tmp_path)
    assert m["dataset"] == "digits" and m["test_accuracy"] >= 0.975
    assert len(m["train_loss"]) == m["epochs_run"] == 40
    assert m["settings"]["hidden"] == "256" and m["gradient_check"]["ok"] is True
    assert f"test accuracy {m['test_accuracy']:.4f}" in out
    assert {"total_s", "compile_s", "check_s", "train_s", "steady_steps_per_s", "steps_per_s"} <= set(m["timings"])
    assert m["timings"]["steady_steps_per_s"] > 0 and m["timings"]["compile_s"] > 0
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
    assert main(["check", "--dataset", "xor", "--hidden", "4", "--activation", "relu"]) == 0
    out = capsys.readouterr().out
    assert "params[1].b" in out and out.rstrip().endswith("PASSED")


@pytest.mark.parametrize("dataset", ["xor", "sine", "digits"])
def test_mutations_pass_on_correct_gradients_on_kinks_and_both_heads(dataset, capsys):
    # relu: XOR's (0, 0) row and digits' blank pixels put every unit on its kink at zero
    # biases; sine is the squared-error head. (moons and spirals are two real inputs and
    # a softmax head, as xor is, with no point on a kink.)
    argv = ["check", "--mutations", "--dataset", dataset, "--hidden", "6,6", "--activation", "relu"]
    assert main(argv) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "with biases ~ N(0, 0.1²)" in out.splitlines()[0] and out.rstrip().endswith("PASSED")


def test_check_takes_layers_model_and_data_like_train(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)) * [1000, 1]
    (tmp_path / "d.csv").write_text("a,b,y\n" + "".join(f"{a:.2f},{b:.3f},{'hi' if b > 0 else 'lo'}\n" for a, b in x))
    assert main(["check", "--data", str(tmp_path / "d.csv"), "--hidden", "5"]) == 0
    assert capsys.readouterr().out.startswith("jbp check: d.csv, network 2-5-2 relu -> softmax (cross_entropy), 32 examples")
    assert main(["check", "--dataset", "moons", "--layers", "dense:4,relu,dense:4,relu,dense:2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("jbp check: moons, network dense:4,relu,dense:4,relu,dense:2 -> softmax") and out.rstrip().endswith("PASSED")
    assert main(["check", "--model", "cnn", "--layers", "dense:10"]) == 2
    assert "give --model or --layers, not both" in capsys.readouterr().err


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
        (["train", "--optimizer", "rmsprop"], "unknown --optimizer 'rmsprop'; expected one of sgd, momentum, adam, kfac"),
        (["train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["train", "--epochs", "ten"], "--epochs must be an integer, got 'ten'"),
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
    # the saved value, the dataset's declared lr resolved (not "(None)")
    assert f"--lr 0.5 differs from the run in {tmp_path} (0.05); a resumed run keeps" in capsys.readouterr().err
    assert main(["train", "--resume", "--lr", "0.05", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == f"nothing left to run in {tmp_path}: it is at epoch 2 and --epochs is 1; pass a larger --epochs to continue\n"


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


XOR4 = ["train", "--dataset", "xor", "--hidden", "4", "--no-check"]


def test_the_header_prints_the_lr_used_and_the_run_saves_it(tmp_path, capsys):
    assert main(XOR4 + ["--optimizer", "sgd", "--lr", "0.25", "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    assert "sgd lr 0.25, batch 4" in capsys.readouterr().out
    assert _metrics(tmp_path / "a")["settings"]["lr"] == 0.25
    assert main(XOR4 + ["--optimizer", "sgd", "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert "sgd lr 0.1, batch 4" in capsys.readouterr().out
    assert _metrics(tmp_path / "b")["settings"]["lr"] == 0.1


def test_a_loss_that_rises_far_above_its_start_says_so_and_exits_1(tmp_path, capsys):
    assert main(XOR4 + ["--lr", "1e6", "--epochs", "5", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^training failed: the training loss rose from \S+ \(at the initial parameters\) to \S+; "
                     r"the learning rate \(1e\+06\) is likely too high, try a smaller --lr$", out, re.M), out
    m = _metrics(tmp_path)
    assert m["failed_to_learn"] is True and m["train_loss"][-1] > 10 * m["initial_train_loss"]


def test_test_loss_per_chunk_and_honest_timings_in_metrics(tmp_path, capsys):
    # an lr no other test uses: this process has not compiled these programs before
    assert main(XOR4 + ["--epochs", "7", "--chunk", "2", "--lr", "0.0271", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    m = _metrics(tmp_path)
    assert [e for e, _ in m["test_loss_curve"]] == [0, 2, 4, 6, 7]
    assert m["test_loss_curve"][-1][1] == m["test_loss"]
    t = m["timings"]
    # chunks 2 and 3 reuse chunk 1's program; the last (1 epoch) compiles its own
    assert t["steps"] == 7 and t["steady_steps"] == 4 and t["steady_steps_per_s"] > 0
    assert t["total_s"] >= t["train_s"] > 0 and t["compile_s"] > 0
    # the parts account for the whole total
    parts = t["setup_s"] + t["check_s"] + t["train_s"] + t["finish_s"]
    assert min(t["setup_s"], t["finish_s"]) > 0 and abs(parts - t["total_s"]) < 1e-9
    assert re.search(r"^time: total [\d.]+ s \(setup [\d.]+ s, training [\d.]+ s, metrics and files [\d.]+ s; "
                     r"compiling [\d.]+ s of it\), [\d,]+ steps/s steady "
                     r"\(over 4 steps run without compiling\)$", out, re.M), out
    # one chunk of a program not compiled before (its own lr): no steady figure to report
    assert main(XOR4 + ["--epochs", "2", "--lr", "0.0123", "--out", str(tmp_path / "one")]) == 0
    assert _metrics(tmp_path / "one")["timings"]["steady_steps_per_s"] is None
    assert "no steady steps/s: every chunk of epochs compiled" in capsys.readouterr().out


def test_a_loss_that_barely_moves_over_a_whole_run_says_so_and_exits_1(tmp_path, capsys):
    argv = ["train", "--dataset", "moons", "--hidden", "4", "--optimizer", "sgd", "--lr", "1e-6", "--epochs", "4",
            "--no-check", "--out", str(tmp_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert re.search(r"^training failed: the training loss barely moved over 100 steps, from \S+ \(at the initial "
                     r"parameters\) to \S+, never 5% below its start; try another --lr \(now 1e-06\)", out, re.M), out
    m = _metrics(tmp_path)
    assert m["failed_to_learn"] is True and min(m["train_loss"]) > 0.95 * m["initial_train_loss"]


def test_the_gradient_check_runs_at_the_initial_parameters_also_on_resume(tmp_path, capsys):
    argv = ["train", "--dataset", "xor", "--hidden", "4", "--activation", "tanh", "--lr", "0.05", "--out", str(tmp_path)]
    assert main(argv + ["--epochs", "30"]) == 0
    fresh = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gradient check")]
    assert main(["train", "--resume", "--epochs", "31", "--out", str(tmp_path)]) == 0
    resumed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gradient check")]
    assert resumed == fresh and len(fresh) == 1
    assert "at the initial parameters" in fresh[0] and "every leaf also verified in float64" in fresh[0]
    check = _metrics(tmp_path)["gradient_check"]
    assert check["point"] == "the initial parameters" and len(check["verified"]) == 4


def test_a_checkpoint_not_written_by_train_is_one_line(tmp_path, capsys):
    net = jbp.MLP((2, 3, 1), activation="tanh", loss="binary_cross_entropy", output_activation="sigmoid")
    jbp.save_checkpoint(tmp_path / "checkpoint.npz", net=net, params=net.init(jax.random.key(0), dtype=np.float32))
    for argv in (["train", "--resume"], ["evaluate"]):
        assert main([*argv, "--out", str(tmp_path)]) == 2
        assert "holds no run settings: it was not written by jbp train" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", sorted(jbp.datasets.SETTINGS))
def test_a_built_in_dataset_declares_the_settings_train_uses(dataset):
    declared = jbp.datasets.SETTINGS[dataset]
    args = parser().parse_args(["train", "--dataset", dataset])
    s = common.settings(args)
    assert s["hidden"] == ",".join(map(str, declared["hidden"])) and s["activation"] == declared["activation"]
    assert (s["optimizer"], s["lr"], s["batch_size"], s["epochs"]) == tuple(
        declared[k] for k in ("optimizer", "lr", "batch_size", "epochs"))
    assert set(common.from_dataset(args)) == set(declared)
    # a flag wins over the declaration, and a declared lr goes with the declared optimizer only
    args = parser().parse_args(["train", "--dataset", dataset, "--optimizer", "sgd", "--hidden", "3"])
    s = common.settings(args)
    assert (s["hidden"], s["optimizer"], s["lr"]) == ("3", "sgd", 0.1)
    assert set(common.from_dataset(args)) == set(declared) - {"hidden", "optimizer", "lr"}


def test_the_header_says_which_settings_came_from_the_dataset(tmp_path, capsys):
    assert main(["train", "--dataset", "xor", "--epochs", "2", "--no-check", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("settings declared by the xor dataset (where no flag was given): hidden 8, activation tanh, "
                        "optimizer adam, lr 0.05, batch size 4"), lines
    assert _metrics(tmp_path)["settings_from_dataset"] == ["activation", "batch_size", "hidden", "lr", "optimizer"]
