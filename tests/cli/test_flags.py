"""Every flag's value is checked when parsed: one line, exit status 2, nothing written."""

import pytest

from jbp.cli import main

CASES = [
    (["train", "--lr", "0"], "--lr must be a finite number > 0, got 0"),
    (["train", "--lr", "-0.1"], "--lr must be a finite number > 0, got -0.1"),
    (["train", "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["train", "--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["train", "--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["train", "--lr-decay", "0"], "--lr-decay must be a number in (0, 1], got 0"),
    (["train", "--lr-decay", "1.5"], "--lr-decay must be a number in (0, 1], got 1.5"),
    (["train", "--lr-decay", "nan"], "--lr-decay must be a number in (0, 1], got nan"),
    (["train", "--tol", "nan"], "--tol must be a finite number >= 0, got nan"),
    (["train", "--tol", "-1"], "--tol must be a finite number >= 0, got -1"),
    (["train", "--tol", "inf"], "--tol must be a finite number >= 0, got inf"),
    (["train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["train", "--epochs", "ten"], "--epochs must be an integer, got 'ten'"),
    (["train", "--epochs", "2.5"], "--epochs must be an integer, got '2.5'"),
    (["train", "--epochs", "3000000000"], "--epochs must be <= 2147483647, got 3000000000"),
    (["train", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["train", "--batch-size", "-4"], "--batch-size must be >= 1, got -4"),
    (["train", "--chunk", "0"], "--chunk must be >= 1, got 0"),
    (["train", "--chunk", "x"], "--chunk must be an integer, got 'x'"),
    (["train", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["train", "--seed", "4294967296"], "--seed must be <= 4294967295, got 4294967296"),
    (["check", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["train", "--hidden", "12a"], "--hidden must be comma-separated positive widths like 128 or 256,128, got '12a'"),
    (["train", "--dataset", "xor", "--init", "zeros"], "unknown init 'zeros'"),
    (["train", "--dataset", "xor", "--activation", "swish"], "unknown activation 'swish'"),
    (["train", "--dataset", "xor", "--optimizer", "rmsprop"], "unknown --optimizer 'rmsprop'"),
    (["train", "--overwrite"], "--overwrite needs --out DIR"),
    (["check", "--format", "html"], "argument --format: invalid choice: 'html'"),
    (["evaluate"], "the following arguments are required: --out"),
    (["predict", "--out", "runs/x", "--to", "p.txt"], "--to must end in .csv or .npy, got 'p.txt'"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_bad_flag_value_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("jbp: error: "), captured.err
    assert message in captured.err
