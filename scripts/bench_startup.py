"""The main job end to end, as a user waits for it: whole processes, cold and warm.

    python scripts/bench_startup.py [--rounds 5] [--out runs/bench_startup.json]

Each round runs, in a random order, each as a fresh process (wall time from spawn to exit):

- ``jbp train --out DIR`` with an empty compilation cache (cold: every program compiled);
- the same with the cache a previous run filled (warm);
- the same, warm, with ``--no-check`` (what the gradient check costs);
- ``jbp train`` and ``jbp train --no-check`` without ``--out``, warm: the literal command,
  which writes no figures and no checkpoint (like the scikit-learn process);
- scikit-learn's ``MLPClassifier(256,)`` on the same digits split (jbp's seed-0 split,
  standardised alike), fitted and scored: the process a user would run instead;
- the gradient check alone (``check_grads`` on 64 digits, no cache), in full and as the CLI
  runs it (leaves only), counting XLA compilations.

It prints medians over the rounds, and the test accuracy each process printed. Runs go
to a temporary folder; nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SKLEARN = """
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
x, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
mean, std = x_train.mean(axis=0), x_train.std(axis=0)
std[std == 0] = 1.0
clf = MLPClassifier(hidden_layer_sizes=(256,), random_state=0).fit((x_train - mean) / std, y_train)
print(f"test accuracy {clf.score((x_test - mean) / std, y_test):.4f}")
"""

CHECK = """
import sys, time
from jax import monitoring
count = [0]
monitoring.register_event_duration_secs_listener(
    lambda e, d, **kw: count.__setitem__(0, count[0] + (e == "/jax/core/compile/backend_compile_duration")))
import jax, jbp
d = jbp.datasets.load("digits")
net = jbp.MLP((64, 256, 10), activation="relu", loss="cross_entropy", init="he_normal")
params = net.init(jax.random.split(jax.random.key(0))[0])
count[0] = 0
start = time.perf_counter()
full = sys.argv[1] == "full"
jbp.check_grads(net, params, d.x_train[:64], d.y_train[:64], worst_examples=5 if full else 0, check_equations=full)
print(f"seconds {time.perf_counter() - start:.3f} compilations {count[0]}")
"""


def timed(cmd, env) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {run.returncode}: {run.stderr[-2000:]}")
    return seconds, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="jbp-bench-startup-")
    base = {k: v for k, v in os.environ.items() if k not in ("JBP_NO_CACHE", "XDG_CACHE_HOME")}
    warm = os.path.join(root, "warm-cache")
    train = [sys.executable, "-m", "jbp", "train"]
    try:
        timed(train + ["--out", os.path.join(root, "fill")], {**base, "XDG_CACHE_HOME": warm})  # fills the cache
        arms = {
            "jbp train, cold cache": lambda i: (train + ["--out", os.path.join(root, f"cold{i}")],
                                                {**base, "XDG_CACHE_HOME": os.path.join(root, f"cache{i}")}),
            "jbp train, warm cache": lambda i: (train + ["--out", os.path.join(root, f"warm{i}")],
                                                {**base, "XDG_CACHE_HOME": warm}),
            "jbp train --no-check, warm cache": lambda i: (train + ["--no-check", "--out", os.path.join(root, f"nc{i}")],
                                                           {**base, "XDG_CACHE_HOME": warm}),
            # Without --out: no figures, no checkpoint, no per-layer statistics, as the
            # scikit-learn process writes nothing either.
            "jbp train (no --out), warm cache": lambda i: (train, {**base, "XDG_CACHE_HOME": warm}),
            "jbp train --no-check (no --out), warm cache": lambda i: (train + ["--no-check"],
                                                                      {**base, "XDG_CACHE_HOME": warm}),
            "sklearn MLPClassifier(256,)": lambda i: ([sys.executable, "-c", SKLEARN], base),
            "check_grads in full, no cache": lambda i: ([sys.executable, "-c", CHECK, "full"], {**base, "JBP_NO_CACHE": "1"}),
            "check_grads as the CLI runs it, no cache": lambda i: ([sys.executable, "-c", CHECK, "cli"], {**base, "JBP_NO_CACHE": "1"}),
        }
        results = {name: {"seconds": [], "accuracy": set(), "inner": [], "compilations": set()} for name in arms}
        rng = random.Random(0)
        for i in range(args.rounds):
            order = list(arms)
            rng.shuffle(order)
            for name in order:
                seconds, out = timed(*arms[name](i))
                r = results[name]
                r["seconds"].append(seconds)
                r["accuracy"].update(re.findall(r"test accuracy (\d\.\d+)", out))
                inner = re.search(r"seconds ([\d.]+) compilations (\d+)", out)
                if inner:
                    r["inner"].append(float(inner.group(1)))
                    r["compilations"].add(int(inner.group(2)))
            report(results, i + 1, args.out)  # after every round: a killed run keeps its rounds
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict, rounds: int, out) -> None:
    sk = statistics.median(results["sklearn MLPClassifier(256,)"]["seconds"])
    print(f"\nwhole processes, median of {rounds} interleaved rounds (load average now: "
          f"{os.getloadavg()[0]:.1f})\n", flush=True)
    print("| process | wall time (median) | range | / sklearn | test accuracy | check_grads alone (in-process) | XLA compilations |")
    print("|---|---|---|---|---|---|---|")
    table = {}
    for name, r in results.items():
        med = statistics.median(r["seconds"])
        inner = f"{statistics.median(r['inner']):.2f} s" if r["inner"] else "-"
        comps = ", ".join(map(str, sorted(r["compilations"]))) or "-"
        acc = ", ".join(sorted(r["accuracy"])) or "-"
        print(f"| {name} | {med:.2f} s | {min(r['seconds']):.2f}-{max(r['seconds']):.2f} s | {med / sk:.2f} | {acc} | {inner} | {comps} |")
        table[name] = {"median_s": med, "seconds": r["seconds"], "accuracy": sorted(r["accuracy"]),
                       "inner_s": r["inner"], "compilations": sorted(r["compilations"])}
    sys.stdout.flush()
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
