"""The command line: ``python -m jbp train|check|predict|evaluate|generate`` (also installed as ``jbp``).

``train`` checks the hand-derived gradients on a batch, trains with :func:`jbp.fit` in
compiled chunks of epochs (a progress bar moves between chunks), prints a summary and,
with ``--out DIR``, writes a checkpoint after every chunk (with what the run learned from
its data: :mod:`jbp.cli.preprocess`), plots and ``metrics.json``, each atomically, from
which ``--resume`` continues exactly, or completes an interrupted run's files
(:mod:`jbp.cli.rundir`). ``check`` only verifies the gradients. ``predict`` and
``evaluate`` read a saved run back: ``predict`` maps raw inputs in the training file's
format to class names or the target's units. ``generate`` samples text from a saved
language model (``train --model gpt|lstm|gru|rnn``, :mod:`jbp.cli.lm`). ``launch``
runs a command in several processes joined by ``jax.distributed`` (see :mod:`jbp.cli.launch`). Mistakes in the
arguments print one line and exit with status 2. Before a command computes anything, JAX's
persistent compilation cache is switched on (unless ``--no-cache``) and the backend is
started, so a missing platform is one line too (:mod:`jbp.cli.runtime`).

Each command is a module with ``add_parser(commands)`` and ``run(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import jbp
from jbp.cli import check, evaluate, generate, launch, predict, runtime, train
from jbp.cli.common import CHECKPOINT, Parser, UsageError
from jbp.training.distributed import ProcessLost

COMMANDS = {"train": train, "check": check, "predict": predict, "evaluate": evaluate, "generate": generate,
            "launch": launch}

__all__ = ["COMMANDS", "UsageError", "main", "parser", "run"]


def parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    p = Parser(prog="jbp", description="Backpropagation with hand-derived gradients, in JAX.")
    p.add_argument("--version", action="version", version=f"jbp {jbp.__version__}")
    commands = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(commands)
    return p


def run(args) -> int:
    """Runs the parsed command; returns its exit status."""
    if runtime.cache_wanted(getattr(args, "no_cache", False)):
        runtime.enable_cache()
    runtime.first_device_use()
    return COMMANDS[args.command].run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    if not argv:
        p.print_help(sys.stderr)
        return 2
    args = None
    try:
        args = p.parse_args(argv)
        launch.join_from_env()  # in a process of `jbp launch`: jax.distributed first
        return run(args)
    except SystemExit as e:  # --help and --version print and exit 0
        return e.code if isinstance(e.code, int) else 0
    except UsageError as e:
        # Every mistake in the arguments ends here, as one line.
        print(f"jbp: error: {e}", file=sys.stderr)
        return 2
    except ProcessLost as e:  # under `jbp launch`: a peer died
        print(f"jbp: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # A normal exit would wait in jax.distributed's shutdown barrier for the dead peer
        # (then abort): leave now.
        os._exit(1)
    except KeyboardInterrupt:
        print(f"jbp: interrupted; {_after_interrupt(args)}", file=sys.stderr)
        return 130


def _after_interrupt(args) -> str:
    """What an interrupted command leaves: a run that ``--resume`` completes, or nothing."""
    out = getattr(args, "out", None)
    if getattr(args, "command", None) == "train" and out:
        if os.path.exists(os.path.join(out, CHECKPOINT)):
            return f"jbp train --resume --out {out} continues the run from its last checkpoint"
        return f"nothing was saved in {out}; run the command again"
    return "nothing was saved"
