"""A saved run, read back from its folder (``predict`` and ``evaluate``).

Prediction needs only the checkpoint (and ``best.npz``, the kept epoch's parameters of a
run with validation): the network, its parameters and what the run learned from its data
(:mod:`jbp.cli.preprocess`). The training data is read only to evaluate, or to predict on
the run's own test split, and then only if the file is still the one the run was trained
on.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple, Optional

from jbp import datasets
from jbp.cli import common, datacache, datafiles, layers_spec, preprocess
from jbp.cli.common import CHECKPOINT, UsageError
from jbp.training.checkpoint import Checkpoint, load_checkpoint


class SavedRun(NamedTuple):
    """A run's folder read back.

    Attributes:
      out: the folder.
      checkpoint: ``checkpoint.npz``, the last epoch's state.
      settings: the run's settings.
      preprocessing: what the run learned from its data (empty for a run saved before
        runs kept it; then ``recorded`` is false).
      recorded: whether the run kept its preprocessing.
      params: the parameters the run keeps: the lowest validation loss's (``best.npz``)
        with validation, else the last epoch's.
      kept_epoch: the epoch those parameters are from (1-based), ``None`` without validation.
    """

    out: str
    checkpoint: Checkpoint
    settings: dict
    preprocessing: preprocess.Preprocessing
    recorded: bool
    params: object
    kept_epoch: Optional[int]


def load(out: str) -> SavedRun:
    """The run saved in ``out``; a run saved before runs kept their preprocessing says so
    in one line on stderr."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out must be the folder of a run, got {out!r}, which is a file")
    path = os.path.join(out, CHECKPOINT)
    if not os.path.exists(path):
        raise UsageError(f"no run in {out} (looked for {path}); train one with jbp train --out {out}")
    ckpt = common.usage(load_checkpoint, path)
    if "settings" not in ckpt.extra:
        raise UsageError(f"{path} holds no run settings: it was not written by jbp train")
    if "vocab" in ckpt.extra:
        raise UsageError(f"{out} holds a language model ({ckpt.extra['settings'].get('model')}); "
                         f"sample it with jbp generate --out {out}")
    s = common.with_lr(dict(ckpt.extra["settings"]))
    record = ckpt.extra.get("preprocessing")
    if record is None:
        print(f"jbp: note: {out} {preprocess.MISSING}", file=sys.stderr, flush=True)
        pre = preprocess.empty()
    else:
        pre = preprocess.Preprocessing.from_record(record, path)
    params, kept = ckpt.params, None
    best = os.path.join(out, datafiles.BEST)
    if s.get("val_fraction") is not None and os.path.exists(best):
        b = common.usage(load_checkpoint, best)
        params, kept = b.params, int(b.extra.get("best_epoch", b.epoch - 1)) + 1
    return SavedRun(out, ckpt, s, pre, record is not None, params, kept)


def dataset(run: SavedRun, *, cache: bool) -> datasets.Dataset:
    """The run's dataset read as ``jbp train`` read it: a built-in dataset or ``--data
    FILE`` (the split of its seed, standardised alike, without the ``--val-fraction``
    rows), as images for a network of layers. A data file that changed since the run was
    trained is refused in one line: its split would not be the run's."""
    s = run.settings
    if s.get("mmap"):
        raise UsageError(f"{run.out} is a --mmap run: its data is read by jbp.cli.mmap")
    if s.get("data"):
        preprocess.check_unchanged(s["data"], run.preprocessing.data_file, run.out)
    data, _ = datafiles.load(s, builtin=lambda name, seed: datacache.load(name, seed, cache=cache),
                             scale_targets=run.recorded)
    return layers_spec.shaped_data(run.checkpoint.net, data)


def input_shape(net) -> tuple:
    """One example's input shape, ``net.input_shape`` (``(sizes[0],)`` for an MLP)."""
    return tuple(net.input_shape)


def network_text(run: SavedRun) -> str:
    """The network as ``jbp train`` was told it: its sizes, or its ``--layers`` spec."""
    return run.settings.get("layers") or "-".join(map(str, run.checkpoint.net.sizes))
