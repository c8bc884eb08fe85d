"""``--out`` is never silently written over; a refused command changes no byte."""

import json

import pytest

from jbp.cli import diagnostics, main, plots, rundir, train

XOR = ["train", "--dataset", "xor", "--hidden", "4", "--epochs", "2", "--no-check"]


def _files(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    assert main(XOR + ["--out", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("extra, message", [
    ([], "already holds a run (checkpoint.npz, metrics.json); pass --resume to continue it or --overwrite to replace it"),
    (["--resume", "--overwrite"], "--resume continues the run in --out and --overwrite replaces it; pass one of them"),
])
def test_a_folder_holding_a_run_is_refused_and_left_byte_identical(run_folder, extra, message, capsys):
    before = _files(run_folder)
    capsys.readouterr()
    assert main(XOR + ["--epochs", "3", "--out", str(run_folder), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert _files(run_folder) == before


def test_overwrite_replaces_the_run(tmp_path, capsys):
    assert main(XOR + ["--out", str(tmp_path)]) == 0
    (tmp_path / "checkpoint.npz").write_bytes(b"an old run")
    assert main(XOR + ["--epochs", "3", "--out", str(tmp_path), "--overwrite"]) == 0
    assert (tmp_path / "checkpoint.npz").read_bytes()[:2] == b"PK"
    assert '"epochs_run": 3' in (tmp_path / "metrics.json").read_text()


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert main(XOR + ["--out", str(target)]) == 2
    assert f"--out must be a folder, got '{target}', which is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_out_that_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(XOR + ["--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jbp: error: --out ") and "cannot write there" in err and err.count("\n") == 1


RUN = ["train", "--dataset", "xor", "--hidden", "4", "--epochs", "6", "--chunk", "2", "--no-check"]


def _nth_call_interrupts(fn, n, half=None):
    """``fn`` whose ``n``-th call is interrupted (after ``half(*args)`` when given), as by SIGINT."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            if half is not None:
                half(*args, **kwargs)
            raise KeyboardInterrupt
        return fn(*args, **kwargs)

    return wrapper


def _half_a_png(fig, path):
    with rundir.write_atomic(path) as tmp:
        fig.savefig(tmp)
        raise KeyboardInterrupt  # after the temporary file was written, before the rename


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    assert main(RUN + ["--out", str(folder)]) == 0
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize("where", ["first chunk", "third chunk", "checkpoint of chunk 2", "loss.png", "layers.png",
                                   "metrics.json"])
def test_an_interrupt_at_any_moment_leaves_a_run_that_resume_completes(where, uninterrupted, tmp_path, monkeypatch, capsys):
    if where.endswith("chunk"):
        monkeypatch.setattr(train, "fit", _nth_call_interrupts(train.fit, 1 if where == "first chunk" else 3))
    elif where.startswith("checkpoint"):
        monkeypatch.setattr(train, "save_checkpoint", _nth_call_interrupts(train.save_checkpoint, 3))
    elif where == "loss.png":
        monkeypatch.setattr(plots, "save", lambda fig, path: _half_a_png(fig, path))
    elif where == "layers.png":
        monkeypatch.setattr(diagnostics, "save", lambda fig, path: _half_a_png(fig, path))
    else:
        monkeypatch.setattr(json, "dump", _nth_call_interrupts(json.dump, 1, half=lambda obj, f, **kw: f.write("{\"epo")))
    assert main(RUN + ["--out", str(tmp_path)]) == 130
    monkeypatch.undo()
    assert f"jbp: interrupted; jbp train --resume --out {tmp_path} continues the run" in capsys.readouterr().err
    assert not rundir.complete(str(tmp_path), 6)  # recognisably incomplete
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert main(["train", "--resume", "--no-check", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["train_loss"] == uninterrupted["train_loss"] and m["epochs_run"] == 6
    for name in ("loss.png", "layers.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rundir.complete(str(tmp_path), 6)
    capsys.readouterr()
    assert main(["train", "--resume", "--no-check", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"nothing left to run in {tmp_path}")
