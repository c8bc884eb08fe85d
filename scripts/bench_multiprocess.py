"""Steps per second of ``jbp train`` in 1, 2 and 4 processes (``jbp launch``) on this host.

Each configuration is the command line a user runs, timed by ``train`` itself
(``metrics.json``'s ``timings.steps_per_s``: chunks after the first, so compilation is
left out). ``plain`` is ``jbp train`` with no launcher (one process, one device, the
compiled loop of ``fit``); ``launch -n N`` runs N processes of one CPU device each,
joined by ``jax.distributed`` over gloo on 127.0.0.1, the gradients averaged across
processes after every step. The configurations run interleaved, in a random order
each round, one at a time; the table shows the median over rounds and its ratio to
``plain``. Run from the repository root:

    python scripts/bench_multiprocess.py                  # 3 rounds
    python scripts/bench_multiprocess.py --rounds 1 --epochs 3

What it can show on one host: the cost of the multi-process machinery (a gloo
all-reduce of the gradients and a host round trip per epoch). What it cannot show: a
speed-up from more hosts. The processes share this machine's cores, so N processes do
not add compute; the all-reduce goes over the loopback, not a network.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

CONFIGS = {"plain": None, "launch -n 1": 1, "launch -n 2": 2, "launch -n 4": 4}


def run(processes, args, out):
    train = ["train", "--dataset", args.dataset, "--hidden", args.hidden, "--batch-size", str(args.batch_size),
             "--epochs", str(args.epochs), "--chunk", "1", "--no-check", "--out", out]
    launch = [] if processes is None else ["launch", "-n", str(processes), "--"]
    done = subprocess.run([sys.executable, "-m", "jbp", *launch, *train], capture_output=True, text=True,
                          timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(launch + train)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)["timings"]["steps_per_s"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is compilation")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--hidden", default="256")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (a multiple of 4)")
    p.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    args = p.parse_args()
    results = {name: [] for name in CONFIGS}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(CONFIGS)
            rng.shuffle(order)
            for name in order:
                results[name].append(run(CONFIGS[name], args, os.path.join(tmp, f"{r}-{name.replace(' ', '')}")))
                print(f"round {r + 1}: {name}: {results[name][-1]:,.0f} steps/s", file=sys.stderr, flush=True)
    plain = statistics.median(results["plain"])
    print(f"{args.dataset}, hidden {args.hidden}, batch {args.batch_size}, {args.epochs} epochs, "
          f"{args.rounds} rounds, {os.cpu_count()} cores")
    print(f"{'configuration':<14} {'steps/s (median)':>17} {'vs plain':>9}   all rounds")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<14} {median:>17,.0f} {median / plain:>9.2f}   {', '.join(f'{v:,.0f}' for v in values)}")


if __name__ == "__main__":
    main()
