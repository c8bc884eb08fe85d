"""The ``--out`` folder of a run: never silently written over, and written as one.

A folder that already holds a run (its ``checkpoint.npz`` or ``metrics.json``) is refused
unless ``--resume`` continues that run or ``--overwrite`` replaces it; the refusal comes
before anything is written, so the old files stay byte-identical.

Every file of a run is written atomically (:func:`write_atomic`: a temporary file in the
folder, then ``os.replace``), so a file is either its old or its new version, never half
written. ``metrics.json`` is written last, after the figures: a folder whose
``metrics.json`` is missing, or older than its checkpoint (:func:`complete`), is an
incomplete run, which ``--resume`` completes. A new run writes its checkpoint at epoch 0
first, so that an interrupt at any later moment leaves a run that ``--resume`` continues.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Optional

from jbp.cli.common import CHECKPOINT, UsageError

METRICS = "metrics.json"
#: The files that make a folder hold a run.
RUN_FILES = (CHECKPOINT, METRICS)
#: Files a run may write beside them (removed by ``--overwrite``, so that none of the old
#: run's stays beside the new one's).
OTHER_FILES = ("best.npz", "loss.png", "layers.png", "decision_boundary.png", "prediction.png")


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
    """Makes the folder; with ``overwrite``, removes the old run's files first,
    ``metrics.json`` first (so an interrupted removal leaves a recognisably incomplete
    run, and an interrupted new run never sits beside the old run's files)."""
    try:
        os.makedirs(out, exist_ok=True)
        if overwrite:
            for f in (METRICS, *OTHER_FILES, CHECKPOINT):
                path = os.path.join(out, f)
                if os.path.exists(path):
                    os.remove(path)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None


@contextlib.contextmanager
def write_atomic(path: str):
    """Yields a temporary path in ``path``'s folder to write; renames it over ``path``
    when the block ends, or removes it if the block raises (an interrupt included)."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp{os.path.splitext(name)[1]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_metrics(out: str, metrics: dict) -> None:
    """Writes ``metrics.json`` atomically: the run's last file, which marks it complete."""
    with write_atomic(os.path.join(out, METRICS)) as tmp:
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=1)


def complete(out: str, epoch: int) -> bool:
    """Whether the run in ``out`` finished writing its files for the checkpoint at
    ``epoch``: ``metrics.json`` is there and reports that many epochs."""
    try:
        with open(os.path.join(out, METRICS)) as f:
            return json.load(f).get("epochs_run") == epoch
    except (OSError, ValueError, AttributeError):
        return False


def mark_incomplete(out: str) -> None:
    """Removes ``metrics.json`` before a resumed run writes anything new, so that the
    folder reads as incomplete until the run has written all its files again."""
    path = os.path.join(out, METRICS)
    if os.path.exists(path):
        os.remove(path)
