"""`jbp launch` (jbp/cli/launch.py): N real processes on 127.0.0.1 give what one gives;
a failed process stops the others and is named; a busy port is one line."""

import json
import os
import signal
import socket
import sys
import time

import numpy as np
import pytest

import jbp
from jbp.cli import main
from jbp.cli.launch import environment
from processes import alive, children, env, finish, started

LAUNCH = [sys.executable, "-m", "jbp", "launch"]
#: A small digits run: 1437 examples, 44 batches of 32 per epoch.
DIGITS = ["train", "--dataset", "digits", "--seed", "0", "--hidden", "32", "--batch-size", "32", "--no-check"]


def _launch(*argv, timeout=120):
    """Runs `jbp launch ARGV` to the end; returns (status, stdout, stderr)."""
    with started([LAUNCH + list(argv)], [env()]) as (p,):
        ((status, out, err),) = finish([p], timeout=timeout)
    return status, out, err


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_two_processes_train_and_resume_as_one(tmp_path):
    """launch -n 2 -- train (1 epoch, then --resume to 2) writes what one train of 2 epochs writes."""
    a, b = tmp_path / "a", tmp_path / "b"
    status, out, err = _launch("-n", "2", "--", *DIGITS, "--epochs", "1", "--out", str(a))
    assert status == 0, err[-3000:]
    assert out.count("jbp train: digits") == 1  # process 0's output only
    status, out, err = _launch("-n", "2", "--", "train", "--resume", "--epochs", "2", "--no-check", "--out", str(a))
    assert status == 0, err[-3000:]
    assert f"resuming {a} at epoch 1 of 2" in out
    assert main([*DIGITS, "--epochs", "2", "--out", str(b)]) == 0
    got, want = _metrics(a), _metrics(b)
    assert len(got["train_loss"]) == 2
    np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=1e-5)
    assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=1e-9)  # same k / 360
    for la, lb in zip(jbp.load_checkpoint(a / "checkpoint.npz").params, jbp.load_checkpoint(b / "checkpoint.npz").params):
        np.testing.assert_allclose(la.W, lb.W, rtol=1e-4, atol=1e-6)
    # process 0 alone wrote, atomically: no temporary files left beside the outputs
    # The single process also records per-layer statistics (layers.png); a launched run does not.
    assert sorted(os.listdir(a)) == ["checkpoint.npz", "loss.png", "metrics.json"]
    assert sorted(os.listdir(b)) == ["checkpoint.npz", "layers.png", "loss.png", "metrics.json"]


def test_a_killed_process_stops_the_run_and_is_named(tmp_path):
    argv = ["-n", "2", "--log-dir", str(tmp_path), "--", "train", "--dataset", "moons", "--epochs", "100000",
            "--batch-size", "8", "--chunk", "1", "--no-check"]
    with started([LAUNCH + argv], [env()]) as (launcher,):
        assert launcher.stdout.readline().startswith("jbp train: moons")  # process 0 is training
        log, deadline = tmp_path / "process-1.log", time.monotonic() + 60
        while "jbp train: moons" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # and so is process 1
        workers = children(launcher.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        ((status, _, err),) = finish([launcher], timeout=30)
        assert time.monotonic() - killed < 10
        assert not any(alive(w) for w in workers)
    assert status == 1
    assert "jbp: error: process 1 of 2 was killed by SIGKILL; stopped the other processes" in err
    assert f"its output, in {tmp_path / 'process-1.log'}, ends:\n  | jbp train: moons" in err


def test_a_failing_command_fails_the_launch_with_its_status():
    status, out, err = _launch("-n", "2", "--", "train", "--dataset", "moons", "--batch-size", "33", "--epochs", "1")
    assert status == 2
    assert "jbp: error: --batch-size 33 must be a multiple of the run's 2 devices (2 processes x 1)" in err
    assert "failed" not in out and "jbp: error: process " in err and " exited with status 2" in err


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_busy_port_is_one_line(busy_port, capsys):
    assert main(["launch", "-n", "2", "--port", str(busy_port), "--", "train"]) == 2
    assert capsys.readouterr().err == (
        f"jbp: error: port {busy_port} on 127.0.0.1 is already in use (Address already in use); "
        "choose another --port, or leave it out to take a free one\n"
    )


def test_a_coordinator_that_cannot_start_is_one_line(busy_port):
    """Without the launcher's check (another program took the port after it): process 0 says so."""
    argv = [sys.executable, "-m", "jbp", "train", "--dataset", "xor", "--epochs", "1"]
    with started([argv], [env(**environment(2, 0, 1, f"127.0.0.1:{busy_port}"))]) as procs:
        ((status, _, err),) = finish(procs, timeout=60)
    assert status == 2
    assert (f"jbp: error: process 0 of 2 could not start the coordinator at 127.0.0.1:{busy_port}: "
            f"port {busy_port} on 127.0.0.1 is already in use") in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-n", "2"], "launch needs a command after --, e.g. jbp launch -n 2 -- train --dataset moons"),
        (["-n", "2", "--", "launch", "-n", "2"], "launch cannot launch itself"),
        (["-n", "0", "--", "train"], "-n must be >= 1 processes, got 0"),
        (["-n", "2", "--devices-per-process", "0", "--", "train"], "--devices-per-process must be >= 1, got 0"),
        (["-n", "2", "--port", "70000", "--", "train"], "--port must be in 1..65535, got 70000"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(argv, message, capsys):
    assert main(["launch", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jbp: error: {message}") and err.count("\n") == 1
