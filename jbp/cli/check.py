"""``jbp check``: only verify the manual gradients (or plant mistakes and catch them)."""

from __future__ import annotations

import json

import jax

from jbp.cli import common, datacache, runtime
from jbp.cli.common import CHECK_BATCH, say
from jbp.verify.grads import STRESS, check_grads
from jbp.verify.mutations import mutation_test


def add_parser(commands) -> None:
    check = commands.add_parser("check", help="only verify the manual gradients against jax.grad")
    common.network_options(check)
    check.add_argument("--stress", choices=STRESS, help="check at an adversarial point instead")
    check.add_argument("--mutations", action="store_true",
                       help="plant the classic mistakes in jbp's backward and show each is caught")
    check.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                       help="text: a table; markdown: Markdown tables; json: one object (default text)")


def run(args) -> int:
    s = common.settings(args)
    data = datacache.load(s["dataset"], s["seed"], cache=runtime.cache_wanted(args.no_cache))
    net = common.usage(common.network, s, data)
    params = net.init(jax.random.split(jax.random.key(s["seed"]))[0], dtype=data.x_train.dtype)
    n = min(CHECK_BATCH, len(data.x_train))
    x, y = data.x_train[:n], data.y_train[:n]
    verify = mutation_test if args.mutations else check_grads
    report = verify(net, params, x, y, stress=args.stress)
    if args.format == "json":
        say(json.dumps(report.to_dict(), allow_nan=False, indent=1))
    else:
        say(f"jbp check: {data.name}, network {'-'.join(map(str, net.sizes))} {s['activation']} -> "
             f"{net.output_activation} ({net.loss_name}), {n} examples"
             + (f", stress point {args.stress!r}" if args.stress else ""))
        say(report.to_markdown() if args.format == "markdown" else report)
    return 0 if report.ok else 1


