"""The ``--out`` folder of a run: never silently written over.

A folder that already holds a run (its ``checkpoint.npz`` or ``metrics.json``) is refused
unless ``--resume`` continues that run or ``--overwrite`` replaces it; the refusal comes
before anything is written, so the old files stay byte-identical.
"""

from __future__ import annotations

import os
from typing import Optional

from jbp.cli.common import CHECKPOINT, UsageError

#: The files that make a folder hold a run.
RUN_FILES = (CHECKPOINT, "metrics.json")


def check(out: Optional[str], *, resume: bool, overwrite: bool) -> None:
    """Refuses an ``--out`` that is a file, or that holds a run neither resumed nor to be
    overwritten. Writes nothing."""
    if out is None:
        if overwrite:
            raise UsageError("--overwrite needs --out DIR, the folder of the run to replace")
        return
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out must be a folder, got {out!r}, which is a file")
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if held and not resume and not overwrite:
        raise UsageError(f"--out {out} already holds a run ({', '.join(held)}); pass --resume to continue "
                         f"it or --overwrite to replace it")


def create(out: str, *, overwrite: bool) -> None:
    """Makes the folder; with ``overwrite``, removes the old run's files first (so an
    interrupted new run never sits beside the old run's checkpoint)."""
    try:
        os.makedirs(out, exist_ok=True)
        if overwrite:
            for f in RUN_FILES:
                path = os.path.join(out, f)
                if os.path.exists(path):
                    os.remove(path)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None
