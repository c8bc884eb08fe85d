"""The cost of ``fit(..., monitor=True)``: per-layer statistics from inside the compiled loop.

For each network, times whole compiled ``jbp.fit`` calls (digits, adam, mini-batches) with
and without ``monitor=True``, under backprop and under feedback alignment (whose
alignment angle needs the true gradient too: one more backward pass per epoch). The
calls of a configuration interleave in a random order each round, so that load from
other processes falls on all arms alike; the table gives medians of the wall time and
of the process's CPU time (steadier on a shared machine), their ratios monitored /
plain, and the median over the rounds of each round's own CPU-time ratio ("paired":
the two calls of a round ran close together, so slow drifts of the load cancel). Run
from the repository root:

    PYTHONPATH=$PWD python scripts/bench_monitor.py           # or --quick: 3 rounds of 2 epochs

The networks are MLPs and the digits CNN of ``jbp train --model cnn`` (the monitor
records every layer with weights, convolutions included).
"""

import argparse
import random
import statistics
import time

import jax
import optax

import jbp
from jbp import datasets
from jbp.layers import Conv2D, Dense, Flatten, MaxPool2D

CASES = [  # (hidden sizes or "cnn", activation, batch size)
    ((256,), "relu", 32),  # the CLI's default network
    ((30, 30, 30), "sigmoid", 10),  # Nielsen's chapter 5 network
    ((512, 512), "relu", 128),
    ("cnn", "relu", 32),  # jbp train --model cnn
]
CNN = [Conv2D(16, (3, 3)), "relu", Conv2D(32, (3, 3)), "relu", MaxPool2D((2, 2)), Flatten(), Dense(64), "relu",
       Dense(10)]


def network(hidden, activation):
    if hidden == "cnn":
        return jbp.Sequential((8, 8, 1), CNN, loss="cross_entropy"), "digits cnn"
    return (jbp.MLP((64, *hidden, 10), activation=activation, loss="cross_entropy"),
            f"64-{'-'.join(map(str, hidden))}-10 {activation}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 epochs: a sanity run, not a measurement")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs = 3, 2
    data = datasets.load("digits", seed=0)
    optimizer = optax.adam(1e-3)
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), float32, "
          f"digits ({len(data.x_train)} train), {args.epochs} epochs per call, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'network':>24} {'batch':>5} {'rule':>4} {'plain ms':>9} {'monitor ms':>11} {'ratio':>6} "
          f"{'plain cpu ms':>13} {'monitor cpu ms':>15} {'cpu ratio':>10} {'paired':>7}")
    rng = random.Random(0)
    for hidden, activation, batch in CASES:
        net, label = network(hidden, activation)
        params = net.init(jax.random.key(0))
        x = data.x_train.reshape(-1, *net.input_shape)
        arms = {}
        for rule in (jbp.rules.backprop(), jbp.rules.feedback_alignment(jax.random.key(1))):
            feedback = rule.init(net, params)
            for monitor in (False, True):
                arms[rule.name, monitor] = lambda rule=rule, feedback=feedback, monitor=monitor: jbp.fit(
                    net, params, x, data.y_train, optimizer=optimizer, epochs=args.epochs,
                    batch_size=batch, key=jax.random.key(2), rule=rule, feedback=feedback, monitor=monitor)
        for f in arms.values():
            jax.block_until_ready(f())  # compile
        times = {name: [] for name in arms}
        cpu = {name: [] for name in arms}
        for _ in range(args.rounds):
            order = list(arms)
            rng.shuffle(order)
            for name in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                jax.block_until_ready(arms[name]())
                times[name].append(1e3 * (time.perf_counter() - start))
                cpu[name].append(1e3 * (time.process_time() - start_cpu))
        for rule_name in ("bp", "fa"):
            plain, watched = (statistics.median(times[rule_name, m]) for m in (False, True))
            plain_cpu, watched_cpu = (statistics.median(cpu[rule_name, m]) for m in (False, True))
            paired = statistics.median(w / p for p, w in zip(cpu[rule_name, False], cpu[rule_name, True]))
            print(f"{label:>24} {batch:>5} {rule_name:>4} {plain:>9.1f} {watched:>11.1f} {watched / plain:>6.3f} "
                  f"{plain_cpu:>13.1f} {watched_cpu:>15.1f} {watched_cpu / plain_cpu:>10.3f} {paired:>7.3f}")


if __name__ == "__main__":
    main()
