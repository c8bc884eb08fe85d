"""Argument types of the command line: each flag's value is checked when it is parsed, so
a bad one is one line and exit status 2 before anything is loaded or written.

Each checker is an ``argparse`` ``type=``; it raises :class:`jbp.cli.common.UsageError`
(argparse passes other exceptions through) with the flag, what was expected and what
was got, e.g. ``--lr must be a finite number > 0, got 0``.
"""

from __future__ import annotations

import math

from jbp.cli.common import UsageError

#: Epoch counts and seeds are int32 / uint32 inside JAX.
MAX_EPOCHS = 2**31 - 1
MAX_SEED = 2**32 - 1


def _number(flag: str, text: str, kind):
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{flag} must be {what}, got {text!r}") from None


def integer(flag: str, low: int, high: int):
    """An int in ``[low, high]``."""

    def parse(text: str) -> int:
        value = _number(flag, text, int)
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
        if value > high:
            raise UsageError(f"{flag} must be <= {high}, got {value}")
        return value

    return parse


def real(flag: str, *, low: float, low_open: bool, high: float = math.inf, high_open: bool = False,
         expected: str):
    """A finite float in ``(low, high]`` (``low_open``) or ``[low, high]``, or the same
    with ``high`` excluded (``high_open``)."""

    def parse(text: str) -> float:
        value = _number(flag, text, float)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise UsageError(f"{flag} must be {expected}, got {text}")
        return value

    return parse


lr = real("--lr", low=0.0, low_open=True, expected="a finite number > 0")
lr_decay = real("--lr-decay", low=0.0, low_open=True, high=1.0, expected="a number in (0, 1]")
dropout = real("--dropout", low=0.0, low_open=False, high=1.0, high_open=True, expected="a number in [0, 1)")
tol = real("--tol", low=0.0, low_open=False, expected="a finite number >= 0")
epochs = integer("--epochs", 1, MAX_EPOCHS)
batch_size = integer("--batch-size", 1, MAX_EPOCHS)
chunk = integer("--chunk", 1, MAX_EPOCHS)
seed = integer("--seed", 0, MAX_SEED)
