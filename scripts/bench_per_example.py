"""Per-example gradients: vmap of the manual backward vs a direct batched form.

Both are the hand-derived backward pass; they differ in how the per-example
``dL/dW = delta x_prev^T`` (BP5) is formed:

- ``vmap``: ``jax.vmap`` of ``net.loss_and_grad`` over single examples (batches of one).
- ``batched``: one forward pass and one set of deltas (BP3, BP4) for the whole batch,
  the output delta scaled by ``B`` so that each row is its own example's, then BP5 and
  BP6 mapped over the rows (an outer product per example).

Prints a table of milliseconds per call (best of several, compiled, float32) and the
ratio; ``jbp.per_example_grads`` uses the faster form. Run from the repository root:

    PYTHONPATH=$PWD python scripts/bench_per_example.py
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jbp
from jbp.model.backward_pass import bias_grad, weight_grad

CASES = [  # (sizes, batch)
    ((10, 32, 32, 2), 128),
    ((64, 256, 256, 10), 256),
    ((784, 512, 512, 10), 512),
]


def by_vmap(net, params, x, y):
    one = lambda xi, yi: net.loss_and_grad(params, xi[None], yi[None])[1]
    return jax.vmap(one)(x, y)


def by_batch(net, params, x, y):
    _, cache = jbp.forward(params, x, net.activations)
    delta_out = x.shape[0] * net.output_delta(cache, y)  # undo the mean's 1/B: one row per example
    ds = jbp.deltas(params, cache, delta_out, net.activations)
    rows = lambda a: a[:, None]  # (B, n) -> (B, 1, n): a batch of one per example
    return tuple(
        jbp.Layer(W=jax.vmap(weight_grad)(rows(d), rows(xp)), b=jax.vmap(bias_grad)(rows(d)))
        for d, xp in zip(ds, cache.xs)
    )


def best_ms(fs, args, repeats):
    """Best time of each function in ms; the calls interleave, so that load from other
    processes on the machine falls on all of them alike."""
    for f in fs:
        jax.block_until_ready(f(*args))  # compile
    times = [[] for _ in fs]
    for _ in range(repeats):
        for f, t in zip(fs, times):
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            t.append(time.perf_counter() - start)
    return [1e3 * min(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), float32")
    print(f"{'sizes':>22} {'batch':>6} {'vmap ms':>9} {'batched ms':>11} {'jbp ms':>8} {'vmap/batched':>13}")
    for sizes, batch in CASES:
        net = jbp.MLP(sizes, activation="relu", loss="cross_entropy")
        params = net.init(jax.random.key(0), dtype=jnp.float32)
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(batch, sizes[0])), jnp.float32)
        y = jnp.asarray(rng.integers(0, sizes[-1], size=batch))
        a = jax.jit(by_vmap, static_argnums=0)
        b = jax.jit(by_batch, static_argnums=0)
        c = jax.jit(jbp.per_example_grads, static_argnums=0)
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6),
                     a(net, params, x, y), b(net, params, x, y))
        ta, tb, tc = best_ms((a, b, c), (net, params, x, y), args.repeats)
        print(f"{str(sizes):>22} {batch:>6} {ta:>9.3f} {tb:>11.3f} {tc:>8.3f} {ta / tb:>13.2f}")


if __name__ == "__main__":
    main()
