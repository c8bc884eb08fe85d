"""Ensembles with vmap: throughput of K networks trained in one compiled call.

Trains K small networks (different initialisations and shuffles, same data) with
``jax.jit(jax.vmap(lambda k: jbp.fit(net, net.init(k), x, y, ..., key=k)[0]))`` for
K = 1, 8, 64, 512, and compares with K separate ``fit`` calls in a Python loop (one
compilation, reused). Times are the best of ``--repeats`` runs. Public API only.
Writes experiments/out/ensembles.json and prints a table. Run from the repository root:

    PYTHONPATH=$PWD python experiments/ensembles.py
"""

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp

OUT = pathlib.Path(__file__).parent / "out"


def spirals(n_per_class, seed=0):
    """Two interleaved spirals in 2-D, generated."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(size=n_per_class)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + 0.02 * rng.normal(size=(2 * n_per_class, 2))
    return jnp.asarray(x, jnp.float32), jnp.asarray(np.repeat([0, 1], n_per_class))


def best_of(repeats, run):
    """The shortest of ``repeats`` timings of ``run()``, and its result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 64, 512])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = parser.parse_args()

    net = jbp.MLP((2, 16, 16, 2), activation="relu", loss="cross_entropy", init="he_normal")
    x, y = spirals(128)
    fit_kwargs = dict(optimizer=optax.adam(1e-2), epochs=args.epochs, batch_size=args.batch_size)
    steps = args.epochs * (x.shape[0] // args.batch_size)

    def train(key):
        params, history = jbp.fit(net, net.init(key, dtype=jnp.float32), x, y, key=key, **fit_kwargs)
        return params, history.loss[-1]

    one = jax.jit(train)
    ensemble = jax.jit(jax.vmap(train))
    jax.block_until_ready(one(jax.random.key(0)))  # compile the single fit once

    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}); "
          f"net {net.sizes}, {x.shape[0]} examples, batch {args.batch_size}, {args.epochs} epochs "
          f"= {steps} steps per network")
    print(f"{'K':>5} {'compile s':>10} {'vmap s':>8} {'loop s':>8} {'speed-up':>9} "
          f"{'net-steps/s (vmap)':>19} {'max |vmap - loop|':>18} {'mean final loss':>16}")
    rows = []
    for k in args.ks:
        keys = jax.random.split(jax.random.key(1), k)
        start = time.perf_counter()
        compiled = ensemble.lower(keys).compile()
        compile_s = time.perf_counter() - start

        vmap_s, (params, losses) = best_of(args.repeats, lambda: jax.block_until_ready(compiled(keys)))
        loop_s, looped = best_of(args.repeats, lambda: [jax.block_until_ready(one(key)) for key in keys])

        diff = max(
            float(jnp.max(jnp.abs(params[l].W[i] - looped[i][0][l].W)))
            for i in range(k) for l in range(net.n_layers)
        )
        row = dict(K=k, compile_s=compile_s, vmap_s=vmap_s, loop_s=loop_s, speedup=loop_s / vmap_s,
                   network_steps_per_s=k * steps / vmap_s, max_abs_diff=diff,
                   mean_final_loss=float(jnp.mean(losses)))
        rows.append(row)
        print(f"{k:>5} {compile_s:>10.2f} {vmap_s:>8.3f} {loop_s:>8.3f} {loop_s / vmap_s:>9.1f} "
              f"{k * steps / vmap_s:>19,.0f} {diff:>18.1e} {row['mean_final_loss']:>16.4f}")

    OUT.mkdir(exist_ok=True)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), sizes=net.sizes,
                examples=int(x.shape[0]), batch_size=args.batch_size, epochs=args.epochs)
    (OUT / "ensembles.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {OUT / 'ensembles.json'}")


if __name__ == "__main__":
    main()
