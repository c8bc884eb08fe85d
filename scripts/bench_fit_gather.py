"""fit's epoch: a gather ``x[idx]`` in every step against one permutation per epoch and a
scan over the pre-permuted slices (what ``jbp.fit`` now does).

Both take exactly the same batches in the same order (checked: bit-identical parameters).
In one process, after a warm-up, the two are timed round after round in a random order;
reported are the median time per step of each and the median of the paired ratios.

    python scripts/bench_fit_gather.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp

CONFIGS = {  # name: (sizes, activation, loss, batch, examples)
    "tiny": ((2, 8, 1), "tanh", "mse", 4, 256),
    "small": ((64, 128, 10), "relu", "cross_entropy", 128, 8192),
}


def _step(net, opt):
    def step(carry, batch):
        params, opt_state, loss = jbp.train_step(net, opt, *carry, *batch)
        return (params, opt_state), loss
    return step


@partial(jax.jit, static_argnums=(0, 1, 2))
def epoch_gather(net, opt, batch_size, params, opt_state, x, y, key):
    steps = x.shape[0] // batch_size
    batches = jax.random.permutation(key, x.shape[0])[: steps * batch_size].reshape(steps, batch_size)
    step = _step(net, opt)
    return jax.lax.scan(lambda carry, idx: step(carry, (x[idx], y[idx])), (params, opt_state), batches)


@partial(jax.jit, static_argnums=(0, 1, 2))
def epoch_slices(net, opt, batch_size, params, opt_state, x, y, key):
    steps = x.shape[0] // batch_size
    order = jax.random.permutation(key, x.shape[0])[: steps * batch_size]
    batches = jax.tree.map(lambda a: a[order].reshape(steps, batch_size, *a.shape[1:]), (x, y))
    return jax.lax.scan(_step(net, opt), (params, opt_state), batches)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--epochs-per-sample", type=int, default=10)
    args = p.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}, {platform.processor() or platform.machine()}")
    print("| config | gather per step | slices per step | slices / gather (median of paired ratios) | identical |")
    print("|---|---|---|---|---|")
    for name, (sizes, activation, loss, batch, n) in CONFIGS.items():
        net = jbp.MLP(sizes, activation=activation, loss=loss)
        opt = optax.sgd(0.01)
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(n, sizes[0])), jnp.float32)
        y = (jnp.asarray(rng.integers(0, sizes[-1], n)) if loss == "cross_entropy"
             else jnp.asarray(rng.normal(size=(n, sizes[-1])), jnp.float32))
        params = net.init(jax.random.key(0), dtype=jnp.float32)
        state = opt.init(params)
        key = jax.random.key(1)
        forms = {"gather": epoch_gather, "slices": epoch_slices}
        out = {k: f(net, opt, batch, params, state, x, y, key) for k, f in forms.items()}  # compile, warm up
        identical = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(out["gather"]), jax.tree.leaves(out["slices"])))
        steps = (n // batch) * args.epochs_per_sample
        times = {k: [] for k in forms}
        for _ in range(args.rounds):
            for k in random.sample(list(forms), len(forms)):
                start = time.perf_counter()
                for _ in range(args.epochs_per_sample):
                    result = forms[k](net, opt, batch, params, state, x, y, key)
                jax.block_until_ready(result)
                times[k].append((time.perf_counter() - start) / steps)
        ratio = statistics.median(s / g for s, g in zip(times["slices"], times["gather"]))
        med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        print(f"| {name} | {med['gather']:.2f} µs | {med['slices']:.2f} µs | **{ratio:.2f}** | {'yes' if identical else 'NO'} |")


if __name__ == "__main__":
    main()
