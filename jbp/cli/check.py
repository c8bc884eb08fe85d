"""``jbp check``: only verify the manual gradients (or plant mistakes and catch them).

The network and data are given as to ``jbp train`` (``--dataset``/``--data``, ``--hidden``
or ``--layers``/``--model``, with a built-in dataset's declared settings). The check runs on
the first :data:`jbp.cli.common.CHECK_BATCH` training examples at the run's initial weights
with small random biases (:func:`off_kinks`): with the zero biases of an initialisation,
an input row of zeros (XOR's ``(0, 0)``, digits' blank pixels) puts every ReLU exactly on
its kink, where the gradient is not defined and no check can verify the leaves it reaches.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from jbp.cli import common, datacache, datafiles, layers_spec, lm, runtime
from jbp.cli.common import CHECK_BATCH, UsageError, say
from jbp.verify.grads import STRESS, check_grads
from jbp.verify.mutations import mutation_test

#: The standard deviation of the biases :func:`off_kinks` draws.
BIAS_STD = 0.1


def add_parser(commands) -> None:
    check = commands.add_parser("check", help="only verify the manual gradients against jax.grad")
    common.network_options(check)
    check.add_argument("--layers", metavar="SPEC", help=layers_spec.HELP)
    check.add_argument("--model", help=f"a named network of layers: {', '.join(layers_spec.MODELS)}")
    datafiles.add_data_option(check)
    check.add_argument("--stress", choices=STRESS, help="check at an adversarial point instead")
    check.add_argument("--mutations", action="store_true",
                       help="plant the classic mistakes in jbp's backward and show each is caught")
    check.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                       help="text: a table; markdown: Markdown tables; json: one object (default text)")


def off_kinks(params, key):
    """``params`` with each all-zero leaf (the biases of an initialisation) replaced by
    small random values, ``N(0, BIAS_STD²)``: a point where no pre-activation is exactly 0."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    moved = [BIAS_STD * jax.random.normal(k, a.shape, a.dtype) if not np.any(np.asarray(a)) else a
             for k, a in zip(keys, leaves)]
    return jax.tree.unflatten(tree, moved)


def run(args) -> int:
    if args.model in lm.MODELS:
        raise UsageError(f"jbp check takes a network of a table or image dataset; a language model's gradients "
                         f"are checked when it trains: jbp train --model {args.model} --data FILE.txt (--check)")
    spec = layers_spec.option(args)
    if args.data is not None and args.dataset is not None:
        raise UsageError("give either --dataset NAME or --data PATH, not both")
    s = common.settings(args)
    s["layers"] = spec
    if s["data"] is not None:
        s["dataset"] = None
    datafiles.check(s)
    cache = runtime.cache_wanted(args.no_cache)
    data, _ = datafiles.load(s, builtin=lambda name, seed: datacache.load(name, seed, cache=cache))
    if spec:
        net = layers_spec.network(spec, data)
        data = layers_spec.shaped_data(net, data)
        shape = spec
    else:
        net = common.usage(common.network, s, data)
        shape = f"{'-'.join(map(str, net.sizes))} {s['activation']}"
    init_key, point_key = jax.random.split(jax.random.key(s["seed"]))
    params = off_kinks(net.init(init_key, dtype=data.x_train.dtype), point_key)
    n = min(CHECK_BATCH, len(data.x_train))
    x, y = data.x_train[:n], data.y_train[:n]
    verify = mutation_test if args.mutations else check_grads
    report = verify(net, params, x, y, stress=args.stress)
    if args.format == "json":
        say(json.dumps(report.to_dict(), allow_nan=False, indent=1))
    else:
        say(f"jbp check: {data.name}, network {shape} -> {net.output_activation} ({net.loss_name}), {n} examples, "
            f"at the initial weights with biases ~ N(0, {BIAS_STD:g}²)"
            + (f", stress point {args.stress!r}" if args.stress else ""))
        say(report.to_markdown() if args.format == "markdown" else report)
    return 0 if report.ok else 1
