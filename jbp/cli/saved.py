"""A saved run, read back from its checkpoint alone (``predict`` and ``evaluate``)."""

from __future__ import annotations

import os
from typing import NamedTuple

from jbp import datasets
from jbp.cli import common, datacache, datafiles, layers_spec
from jbp.cli.common import CHECKPOINT, UsageError
from jbp.training.checkpoint import Checkpoint, load_checkpoint


class SavedRun(NamedTuple):
    checkpoint: Checkpoint
    settings: dict
    data: datasets.Dataset


def load(out: str, *, cache: bool) -> SavedRun:
    """The checkpoint in ``out``, its settings and its dataset, read as ``jbp train`` read
    it: a built-in dataset or ``--data FILE`` (the split of its seed, standardised alike,
    without the ``--val-fraction`` rows), as images for a network of layers."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out must be the folder of a run, got {out!r}, which is a file")
    path = os.path.join(out, CHECKPOINT)
    if not os.path.exists(path):
        raise UsageError(f"no run in {out} (looked for {path}); train one with jbp train --out {out}")
    ckpt = common.usage(load_checkpoint, path)
    if "settings" not in ckpt.extra:
        raise UsageError(f"{path} holds no run settings: it was not written by jbp train")
    s = common.with_lr(dict(ckpt.extra["settings"]))
    if s.get("mmap"):
        raise UsageError(f"{out} is a --mmap run (streamed from {s['data']}); predict and evaluate "
                         "read runs trained on data in memory")
    data, _ = datafiles.load(s, builtin=lambda name, seed: datacache.load(name, seed, cache=cache))
    data = layers_spec.shaped_data(ckpt.net, data)
    return SavedRun(ckpt, s, data)


def input_shape(net) -> tuple:
    """One example's input shape, ``net.input_shape`` (``(sizes[0],)`` for an MLP)."""
    return tuple(net.input_shape)


def network_text(run: SavedRun) -> str:
    """The network as ``jbp train`` was told it: its sizes, or its ``--layers`` spec."""
    return run.settings.get("layers") or "-".join(map(str, run.checkpoint.net.sizes))
