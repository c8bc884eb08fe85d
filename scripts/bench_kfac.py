"""K-FAC against Adam and SGD with momentum on the classic K-FAC task, a deep autoencoder.

The network is Hinton and Salakhutdinov's autoencoder scaled to the bundled 8x8 digits:
64-128-64-32-8-32-64-128-64, tanh, with a sigmoid cross-entropy output
(``jbp.MLP(..., loss="binary_cross_entropy")``), trained to reconstruct its input
(pixels / 16, in [0, 1]) on all 1,797 images. Every optimizer starts from the same
initial weights and sees the same mini-batches (``jbp.fit``, the same key).

Each optimizer (Adam and SGD with momentum over a small learning-rate grid, their best
kept: the one that reaches the target first, else the lowest loss) trains in compiled
chunks of ``--chunk`` epochs; after each chunk the whole training set's loss is
evaluated (not timed). Reported: steps and wall time (compilation excluded, reported
apart) to reach ``--target`` training loss, time per step (median over chunks), and the
loss curve (``--curves FILE`` writes them as JSON). Run from the repository root:

    PYTHONPATH=$PWD python scripts/bench_kfac.py            # the full run
    PYTHONPATH=$PWD python scripts/bench_kfac.py --quick    # a short one, fewer steps and lrs
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp

SIZES = (64, 128, 64, 32, 8, 32, 64, 128, 64)


def data():
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32) / 16.0
    return jnp.asarray(x)


def run(net, params, x, optimizer, *, batch, chunk, max_steps, target, key):
    """Trains in chunks; returns the curve [(steps, seconds, loss)], compile seconds and
    per-step seconds of each timed chunk."""
    loss = jax.jit(lambda p: net.loss(p, x, x))
    steps_per_epoch = x.shape[0] // batch
    opt_state, epoch, steps, seconds = optimizer.init(params), 0, 0, 0.0
    curve, per_step, compile_s = [(0, 0.0, float(loss(params)))], [], 0.0
    while steps < max_steps and curve[-1][2] > target:
        start = time.perf_counter()
        params, h = jbp.fit(net, params, x, x, optimizer=optimizer, epochs=chunk, batch_size=batch, key=key,
                            opt_state=opt_state, start_epoch=epoch)
        jax.block_until_ready(params)
        elapsed = time.perf_counter() - start
        if h.diverged:
            curve.append((steps, seconds, float("inf")))
            break
        done = int(h.epoch) - epoch
        if epoch == 0:  # the first call compiles: time a second, identical chunk shape instead
            compile_s = elapsed
            start = time.perf_counter()
            jax.block_until_ready(jbp.fit(net, params, x, x, optimizer=optimizer, epochs=chunk, batch_size=batch,
                                          key=key, opt_state=h.opt_state, start_epoch=epoch + done)[0])
            elapsed = time.perf_counter() - start
            compile_s -= elapsed
        epoch, opt_state = int(h.epoch), h.opt_state
        steps += done * steps_per_epoch
        seconds += elapsed
        per_step.append(elapsed / (done * steps_per_epoch))
        curve.append((steps, seconds, float(loss(params))))
    return curve, compile_s, per_step


def reached(curve, target):
    return next(((s, t) for s, t, l in curve if l <= target), None)


def best_of(results, target):
    """The run that reached the target in the fewest steps, else the lowest final loss."""
    def rank(item):
        hit = reached(item[1][0], target)
        return (0, hit[0], hit[1]) if hit else (1, item[1][0][-1][2], 0)
    return min(results.items(), key=rank)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and learning rates (a short check)")
    parser.add_argument("--target", type=float, default=None, help="training loss to reach (default 0.24; quick 0.28)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=2, help="epochs per compiled chunk")
    parser.add_argument("--max-steps", type=int, default=None, help="default 6000; quick 700")
    parser.add_argument("--curves", help="write the loss curves here, as JSON")
    args = parser.parse_args()
    target = args.target if args.target is not None else (0.28 if args.quick else 0.24)
    max_steps = args.max_steps or (700 if args.quick else 6000)
    x = data()
    net = jbp.MLP(SIZES, activation="tanh", loss="binary_cross_entropy")
    params = net.init(jax.random.key(0))
    key = jax.random.key(1)
    grids = {
        "jbp K-FAC": {f"lr {lr:g}, damping {d:g}, momentum {m}": jbp.kfac(lr, damping=d, momentum=m)
                      for lr, d, m in ([(1.0, 0.1, None)] if args.quick else
                                       [(1.0, 0.1, None), (0.3, 0.1, 0.9), (1.0, 0.03, None), (3.0, 0.3, None)])},
        "Adam": {f"lr {lr:g}": optax.adam(lr) for lr in ((3e-3, 1e-2) if args.quick else (1e-3, 3e-3, 1e-2, 3e-2))},
        "SGD+momentum 0.9": {f"lr {lr:g}": optax.sgd(lr, momentum=0.9)
                             for lr in ((3.0, 10.0) if args.quick else (1.0, 3.0, 10.0, 30.0))},
    }
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), float32, "
          f"digits autoencoder {'-'.join(map(str, SIZES))} tanh + sigmoid cross-entropy, {x.shape[0]} images, "
          f"batch {args.batch}, target training loss {target}, at most {max_steps} steps"
          + (" (--quick)" if args.quick else ""))
    rows, curves = [], {}
    for name, grid in grids.items():
        results = {}
        for setting, optimizer in grid.items():
            results[setting] = run(net, params, x, optimizer, batch=args.batch, chunk=args.chunk,
                                   max_steps=max_steps, target=target, key=key)
            curve = results[setting][0]
            print(f"  {name} {setting}: final loss {curve[-1][2]:.4f} after {curve[-1][0]} steps", flush=True)
        setting, (curve, compile_s, per_step) = best_of(results, target)
        curves[f"{name} ({setting})"] = curve
        rows.append((name, setting, reached(curve, target), statistics.median(per_step) if per_step else float("nan"),
                     compile_s, curve[-1]))
    print(f"\n| optimizer | setting | steps to {target} | wall s to {target} | ms / step | compile s | final loss (steps) |")
    print("|---|---|---|---|---|---|---|")
    for name, setting, hit, step_s, compile_s, last in rows:
        steps, wall = (f"{hit[0]}", f"{hit[1]:.2f}") if hit else (f"> {last[0]}", f"> {last[1]:.2f}")
        print(f"| {name} | {setting} | {steps} | {wall} | {1e3 * step_s:.2f} | {compile_s:.1f} | "
              f"{last[2]:.4f} ({last[0]}) |")
    kfac_row, adam_row = rows[0], rows[1]
    if kfac_row[2] and adam_row[2]:
        print(f"\nK-FAC / Adam: steps {kfac_row[2][0] / adam_row[2][0]:.2f}, wall time "
              f"{kfac_row[2][1] / adam_row[2][1]:.2f}, time per step {kfac_row[3] / adam_row[3]:.2f}")
    else:
        print(f"\nK-FAC / Adam: time per step {kfac_row[3] / adam_row[3]:.2f} (one of them did not reach the target)")
    if args.curves:
        with open(args.curves, "w") as f:
            json.dump({"target": target, "batch": args.batch, "curves": curves}, f, indent=1)


if __name__ == "__main__":
    main()
