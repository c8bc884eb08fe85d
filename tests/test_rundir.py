"""``--out`` is never silently written over; a refused command changes no byte."""

import pytest

from jbp.cli import main

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
