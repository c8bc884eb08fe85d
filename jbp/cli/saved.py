"""A saved run, read back from its checkpoint alone (``predict`` and ``evaluate``)."""

from __future__ import annotations

import os
from typing import NamedTuple

from jbp import datasets
from jbp.cli import common, datacache
from jbp.cli.common import CHECKPOINT, UsageError
from jbp.training.checkpoint import Checkpoint, load_checkpoint


class SavedRun(NamedTuple):
    checkpoint: Checkpoint
    settings: dict
    data: datasets.Dataset


def load(out: str, *, cache: bool) -> SavedRun:
    """The checkpoint in ``out``, its settings and its dataset (the split of its seed)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out must be the folder of a run, got {out!r}, which is a file")
    path = os.path.join(out, CHECKPOINT)
    if not os.path.exists(path):
        raise UsageError(f"no run in {out} (looked for {path}); train one with jbp train --out {out}")
    ckpt = common.usage(load_checkpoint, path)
    if "settings" not in ckpt.extra:
        raise UsageError(f"{path} holds no run settings: it was not written by jbp train")
    s = common.with_lr(dict(ckpt.extra["settings"]))
    data = datacache.load(s["dataset"], s["seed"], cache=cache)
    return SavedRun(ckpt, s, data)
