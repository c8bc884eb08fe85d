"""``jbp generate``: samples text from a language model saved by ``jbp train --model
gpt|lstm|gru|rnn`` (:mod:`jbp.cli.lm`).

The prompt is encoded with the vocabulary kept in the run; a character the training text
never held is one line naming it, exit status 2. Sampling is
:func:`jbp.models.generate`: every model here maps a window of ``context`` ids to the next
id's logits at each position, causally (the GPT by its mask, a recurrent layer by running
forward in time), so the same window-sliding sampler serves both; a recurrent model thus
sees the last ``context`` characters, each window from a zero state, as in training.
"""

from __future__ import annotations

import os

import jax

from jbp.cli import common, flags
from jbp.cli.common import CHECKPOINT, UsageError
from jbp.datasets.text import Vocabulary
from jbp.models import generate
from jbp.training.checkpoint import load_checkpoint


def add_parser(commands) -> None:
    p = commands.add_parser("generate", help="sample text from a language model saved by jbp train --model gpt|lstm")
    p.add_argument("--out", required=True, help="the folder of the run (jbp train --out)")
    p.add_argument("--prompt", help="the text to continue (default: a newline, or the vocabulary's first "
                                    "character when the training text has none)")
    p.add_argument("--tokens", type=flags.integer("--tokens", 0, flags.MAX_EPOCHS), default=300,
                   help="characters to sample (default 300)")
    p.add_argument("--temperature", type=flags.real("--temperature", low=0.0, low_open=True,
                                                    expected="a finite number > 0"), default=1.0,
                   help="> 0; lower is greedier (default 1)")
    p.add_argument("--seed", type=flags.seed, default=0, help="seed of the sampling (default 0)")
    common.cache_option(p)


def run(args) -> int:
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out must be the folder of a run, got {args.out!r}, which is a file")
    path = os.path.join(args.out, CHECKPOINT)
    if not os.path.exists(path):
        raise UsageError(f"no run in {args.out} (looked for {path}); train one with jbp train --model gpt --out {args.out}")
    ckpt = common.usage(load_checkpoint, path)
    if "vocab" not in ckpt.extra:
        raise UsageError(f"{args.out} holds no language model (its run keeps no vocabulary); "
                         "train one with jbp train --model gpt or --model lstm")
    vocab = Vocabulary(ckpt.extra["vocab"])
    start = args.prompt if args.prompt is not None else ("\n" if "\n" in vocab.chars else vocab.chars[0])
    if not start:
        raise UsageError("--prompt must hold at least one character")
    try:
        prompt = vocab.encode(start)
    except ValueError as e:
        raise UsageError(f"--prompt: {e}") from None
    ids = generate(ckpt.net, ckpt.params, prompt, args.tokens, key=jax.random.key(args.seed),
                   temperature=args.temperature)
    print(vocab.decode(ids), flush=True)
    return 0
