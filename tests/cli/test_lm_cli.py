"""``jbp train --model gpt|lstm|gru|rnn`` on a text and ``jbp generate``: outputs, exact
resume, one-line errors."""

import json
import subprocess

import jax
import numpy as np
import pytest

import jbp
from jbp.cli import main
from jbp.datasets import text

TINY = ["--context", "8", "--features", "8", "--batch-size", "4", "--eval-every", "2", "--no-cache", "--no-check"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["ROMEO:", "JULIET:", "the", "light", "window", "breaks", "love", "night"]
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text(" ".join(rng.choice(words, 80)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt_run(text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt") / "run"
    argv = ["train", "--model", "gpt", "--data", str(text_file), "--blocks", "1", "--heads", "2", "--dropout", "0.1",
            "--steps", "4", "--out", str(out), *TINY]
    assert main(argv) == 0
    return out, argv


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_gpt_run_reports_tokens_per_second_and_validation_loss_and_writes_its_files(gpt_run, capsys):
    out, _ = gpt_run
    assert {"checkpoint.npz", "loss.png", "metrics.json"} <= {p.name for p in out.iterdir()}
    m = _metrics(out)
    assert m["model"] == "gpt" and m["steps_run"] == 4 and len(m["train_loss"]) == 4
    assert [s for s, _ in m["val_loss_curve"]] == [0, 2, 4]
    assert len(m["tokens_per_s"]) == 2 and all(t > 0 for t in m["tokens_per_s"])
    ckpt = jbp.load_checkpoint(out / "checkpoint.npz")
    assert ckpt.extra["vocab"] == text.load_text(m["settings"]["data"]).vocab.chars
    assert ckpt.net.input_vocab == len(ckpt.extra["vocab"])
    assert all(leaf.dtype == np.float32 for leaf in jax_leaves(ckpt.params))  # also where JAX enables float64


def test_a_txt_file_trains_a_gpt_with_progress_lines(text_file, tmp_path, capsys):
    assert main(["train", "--data", str(text_file), "--blocks", "1", "--heads", "2", "--dropout", "0.1", "--steps", "2",
                 "--out", str(tmp_path / "r"), *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    step = [line for line in lines if line.startswith("step 2/2:")]
    assert len(step) == 1 and "validation loss" in step[0] and "tokens/s" in step[0]
    assert _metrics(tmp_path / "r")["model"] == "gpt"


def test_resume_gives_exactly_the_uninterrupted_run(text_file, tmp_path):
    common = ["train", "--model", "gpt", "--data", str(text_file), "--blocks", "1", "--heads", "2", "--dropout", "0.1",
              *TINY]  # the dropout masks too are those of the uninterrupted run
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(common + ["--steps", "6", "--out", str(whole)]) == 0
    assert main(common + ["--steps", "2", "--out", str(split)]) == 0
    assert main(["train", "--resume", "--steps", "6", "--no-cache", "--no-check", "--out", str(split)]) == 0
    a, b = _metrics(whole), _metrics(split)
    assert len(a["train_loss"]) == 6
    assert a["train_loss"] == b["train_loss"]  # bit-identical floats, as a list
    assert a["val_loss_curve"] == b["val_loss_curve"]
    pa = jbp.load_checkpoint(whole / "checkpoint.npz").params
    pb = jbp.load_checkpoint(split / "checkpoint.npz").params
    for la, lb in zip(jax_leaves(pa), jax_leaves(pb)):
        np.testing.assert_array_equal(la, lb)


def jax_leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def test_a_recurrent_run_carries_its_state_and_resumes_exactly(text_file, tmp_path):
    common = ["train", "--model", "lstm", "--data", str(text_file), "--hidden", "4", "--context", "5",
              "--features", "4", "--batch-size", "3", "--eval-every", "2", "--no-cache", "--no-check"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(common + ["--steps", "6", "--out", str(whole)]) == 0
    assert main(common + ["--steps", "2", "--out", str(split)]) == 0
    assert main(["train", "--resume", "--steps", "6", "--no-cache", "--no-check", "--out", str(split)]) == 0
    a, b = _metrics(whole), _metrics(split)
    assert a["settings"]["carry_state"] is True and a["train_loss"] == b["train_loss"]
    ca, cb = (jbp.load_checkpoint(out / "checkpoint.npz") for out in (whole, split))
    for la, lb in zip(jax_leaves((ca.params, ca.state)), jax_leaves((cb.params, cb.state))):
        np.testing.assert_array_equal(la, lb)
    assert ca.state[1].h.shape == (3, 4) and np.any(ca.state[1].h != 0)  # the carried state, not zeros


def test_the_gradient_check_runs_first_at_the_initial_parameters(text_file, tmp_path, capsys):
    tiny = [a for a in TINY if a != "--no-check"]
    assert main(["train", "--model", "rnn", "--data", str(text_file), "--hidden", "4", "--features", "4",
                 "--steps", "1", "--out", str(tmp_path / "r"), *tiny]) == 0
    out = capsys.readouterr().out
    assert "gradient check on 4 examples at the initial parameters, manual vs jax.grad (float32): PASSED" in out
    assert out.index("gradient check") < out.index("step 1/1")
    check = _metrics(tmp_path / "r")["gradient_check"]
    assert check["ok"] and check["examples"] == 4


def test_dropout_is_kept_in_the_run_for_resume_and_generate(gpt_run, capsys):
    out, _ = gpt_run  # trained with --dropout 0.1
    ckpt = jbp.load_checkpoint(out / "checkpoint.npz")
    assert ckpt.extra["settings"]["dropout"] == 0.1
    assert [layer.rate for layer in ckpt.net.layers if isinstance(layer, jbp.layers.Dropout)] == [0.1]
    # --resume rebuilds the network from the saved settings, which hold the rate
    assert main(["train", "--resume", "--dropout", "0.5", "--steps", "6", "--no-cache", "--out", str(out)]) == 2
    assert "--dropout 0.5 differs from the run" in capsys.readouterr().err
    # generate samples in evaluation mode: the sample is that of the same network without dropout
    assert main(["generate", "--out", str(out), "--prompt", "ROMEO:", "--tokens", "30", "--no-cache"]) == 0
    plain = jbp.models.gpt(ckpt.net.input_vocab, 8, 1, 2, 8)  # the same leaves, without the dropout layers' ()
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(plain.init(jax.random.key(0))),
                                          jax_leaves(ckpt.params))
    vocab = text.Vocabulary(ckpt.extra["vocab"])
    ids = jbp.models.generate(plain, params, vocab.encode("ROMEO:"), 30, key=jax.random.key(0))
    assert capsys.readouterr().out == vocab.decode(ids) + "\n"


def test_resume_refuses_a_changed_setting(gpt_run, capsys):
    out, _ = gpt_run
    assert main(["train", "--resume", "--context", "4", "--out", str(out)]) == 2
    assert "--context 4 differs from the run" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_a_recurrent_model_trains_and_generate_samples_from_it(model, text_file, tmp_path, capsys):
    out = tmp_path / model
    assert main(["train", "--model", model, "--data", str(text_file), "--hidden", "8", "--steps", "2",
                 "--out", str(out), *TINY]) == 0
    ckpt = jbp.load_checkpoint(out / "checkpoint.npz")
    assert type(ckpt.net.layers[1]).__name__ == model.upper()
    capsys.readouterr()
    # a prompt longer than the context: the window slides
    argv = ["generate", "--out", str(out), "--prompt", "ROMEO: the light", "--tokens", "20", "--seed", "1",
            "--no-cache"]
    assert main(argv) == 0
    sample = capsys.readouterr().out
    assert sample.startswith("ROMEO: the light") and len(sample) == len("ROMEO: the light") + 20 + 1
    assert set(sample) <= set(ckpt.extra["vocab"])
    assert main(argv) == 0
    assert capsys.readouterr().out == sample  # the seed fixes the sample


def test_generate_without_a_prompt_starts_from_a_newline(gpt_run, capsys):
    out, _ = gpt_run
    capsys.readouterr()
    assert main(["generate", "--out", str(out), "--tokens", "5", "--no-cache"]) == 0
    sample = capsys.readouterr().out
    assert sample.startswith("\n") and len(sample) == 1 + 5 + 1


def test_generate_from_a_gpt_run_follows_the_seed(gpt_run, capsys):
    out, _ = gpt_run
    capsys.readouterr()
    base = ["generate", "--out", str(out), "--prompt", "ROMEO:", "--tokens", "30", "--temperature", "0.8",
            "--no-cache"]
    samples = []
    for seed in ("0", "0", "1"):
        assert main(base + ["--seed", seed]) == 0
        samples.append(capsys.readouterr().out)
    assert samples[0] == samples[1] and samples[0] != samples[2]
    assert all(s.startswith("ROMEO:") and len(s) == 6 + 30 + 1 for s in samples)


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "ROMEO? x"], "--prompt: text holds 2 character(s) not in the vocabulary"),
    (["--prompt", ""], "--prompt must hold at least one character"),
    (["--temperature", "0"], "--temperature must be a finite number > 0, got 0"),
    (["--tokens", "-1"], "--tokens must be >= 0, got -1"),
])
def test_generate_mistakes_are_one_line_and_exit_2(gpt_run, argv, message, capsys):
    out, _ = gpt_run
    assert main(["generate", "--out", str(out), "--no-cache", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_generate_needs_a_language_model_run(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path), "--no-cache"]) == 2
    assert "no run in" in capsys.readouterr().err
    assert main(["train", "--dataset", "xor", "--epochs", "1", "--no-check", "--no-cache",
                 "--out", str(tmp_path / "mlp")]) == 0
    capsys.readouterr()
    assert main(["generate", "--out", str(tmp_path / "mlp"), "--no-cache"]) == 2
    assert "holds no language model" in capsys.readouterr().err


def test_offline_shakespeare_says_to_give_a_text_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    offline = subprocess.CompletedProcess([], returncode=1, stdout="", stderr="no network")
    monkeypatch.setattr(text.subprocess, "run", lambda *a, **k: offline)
    assert main(["train", "--model", "gpt", "--dataset", "shakespeare", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give a text file" in err and "--data my.txt" in err


@pytest.mark.parametrize("argv, message", [
    (["--model", "lstm", "--dataset", "digits"], "--model lstm trains on text: give --dataset shakespeare or"),
    (["--model", "gpt", "--data", "TEXT", "--epochs", "3"], "--epochs does not apply to a language model"),
    (["--model", "gpt", "--data", "TEXT", "--context", "8", "--heads", "3"], "--heads 3 must divide --features 8"),
    (["--model", "gpt", "--data", "TEXT", "--context", "100"], "fewer than --context + 1 = 101"),
    (["--model", "gpt", "--data", "TEXT", "--steps", "0"], "--steps must be a positive integer, got 0"),
    (["--model", "gpt", "--data", "TEXT", "--features", "x"], "--features must be a positive integer, got 'x'"),
    (["--model", "gpt", "--data", "TEXT", "--hidden", "16"], "--hidden applies to --model lstm, gru or rnn"),
    (["--model", "gpt", "--data", "TEXT", "--optimizer", "rmsprop"], "--optimizer 'rmsprop' is not available for a"),
    (["--model", "lstm", "--data", "TEXT", "--heads", "2"], "--heads applies to --model gpt, not lstm"),
    (["--model", "gpt", "--data", "TEXT", "--dropout", "1"], "--dropout must be a number in [0, 1), got 1"),
    (["--model", "gpt", "--data", "TEXT", "--dropout", "-0.1"], "--dropout must be a number in [0, 1), got -0.1"),
    (["--model", "rnn", "--data", "TEXT", "--dropout", "0.1"], "--dropout applies to --model gpt, not rnn"),
    (["--dataset", "xor", "--dropout", "0.1"], "--dropout applies to a language model"),
    (["--model", "gpt", "--data", "TEXT", "--carry-state"], "--carry-state applies to --model lstm, gru or rnn"),
    (["--model", "lstm", "--data", "TEXT", "--context", "8", "--batch-size", "100"], "too few for --batch-size 100 streams"),
])
def test_train_mistakes_are_one_line_and_exit_2(text_file, argv, message, capsys):
    argv = [str(text_file) if a == "TEXT" else a for a in argv]
    assert main(["train", *argv, "--features", "8", "--no-cache"] if "--features" not in argv
                else ["train", *argv, "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_point_a_language_model_to_generate(gpt_run, command, capsys):
    out, _ = gpt_run
    assert main([command, "--out", str(out), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert f"holds a language model (gpt); sample it with jbp generate --out {out}" in err and err.count("\n") == 1


def test_check_points_a_language_model_to_train(capsys):
    assert main(["check", "--model", "lstm", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "a language model's gradients are checked when it trains: jbp train --model lstm" in err
    assert err.count("\n") == 1


def test_resume_completes_an_interrupted_runs_files_or_says_nothing_is_left(gpt_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(gpt_run[0], out)
    (out / "metrics.json").unlink()  # as an interrupt after the last checkpoint leaves it
    assert main(["train", "--resume", "--no-cache", "--no-check", "--out", str(out)]) == 0
    assert _metrics(out)["train_loss"] == _metrics(gpt_run[0])["train_loss"]
    capsys.readouterr()
    assert main(["train", "--resume", "--no-cache", "--out", str(out)]) == 0
    assert "nothing left to run" in capsys.readouterr().out
