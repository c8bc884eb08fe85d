"""How often does check_vjp cry wolf? Random correct float32 backwards, many at a time.

Draws random user layers whose backward is right (jbp's own layers as a user's
forward/backward pair over the network output, with random depth, widths, batch,
activations, weight and input scales up to saturation; a hand-written layer norm; a
gated tanh/sigmoid layer; a row-wise logsumexp), checks each at many random points with
``jbp.check_vjp_many`` and counts the verdicts. Any ``WRONG`` is a false alarm.

    PYTHONPATH=. python scripts/false_alarm_study.py --groups 100 --points 200 --seed 1
"""

import argparse
import collections
import time

import jax
import jax.numpy as jnp
import numpy as np

import jbp

HIDDEN = [a for a in jbp.ACTIVATIONS if a != "softmax"]


def mlp(activations):
    def forward(params, x):
        return jbp.forward(params, x, activations)

    def backward(params, cache, dy):
        delta_out = jbp.ACTIVATIONS[activations[-1]].delta(cache.zs[-1], cache.xs[-1], dy)
        deltas = jbp.deltas(params, cache, delta_out, activations)
        return jbp.backward(params, cache, delta_out, activations), deltas[0] @ params[0].W  # BP3 into x

    return forward, backward


def layer_norm():
    def forward(p, x):
        xc = x - x.mean(-1, keepdims=True)
        inv = 1 / jnp.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-3)
        return xc * inv * p["g"] + p["b"], (xc * inv, inv)

    def backward(p, cache, dy):
        xhat, inv = cache
        d = dy * p["g"]
        dx = inv * (d - d.mean(-1, keepdims=True) - xhat * (d * xhat).mean(-1, keepdims=True))
        return {"g": (dy * xhat).sum(0), "b": dy.sum(0)}, dx

    return forward, backward


def gated():
    def forward(p, x):
        a, g = jnp.tanh(x @ p["u"].T), jax.nn.sigmoid(x @ p["v"].T)
        return a * g, (x, a, g)

    def backward(p, cache, dy):
        x, a, g = cache
        da, dg = dy * g * (1 - a * a), dy * a * g * (1 - g)
        return {"u": da.T @ x, "v": dg.T @ x}, da @ p["u"] + dg @ p["v"]

    return forward, backward


def logsumexp_rows():
    def forward(p, x):
        z = x @ p["w"].T
        m = z.max(-1, keepdims=True)
        e = jnp.exp(z - m)
        return (jnp.log(e.sum(-1, keepdims=True)) + m)[:, 0], (x, e / e.sum(-1, keepdims=True))

    def backward(p, cache, dy):
        x, soft = cache
        dz = dy[:, None] * soft
        return {"w": dz.T @ x}, dz @ p["w"]

    return forward, backward


def group(rng, n):
    """One random layer and n random float32 points for it."""
    kind = rng.choice(["mlp"] * 6 + ["layer norm", "gated", "logsumexp"])
    batch = int(rng.integers(1, 17))
    scale = lambda lo, hi, shape: np.exp(rng.uniform(lo, hi, shape))
    if kind == "mlp":
        depth = int(rng.integers(1, 5))
        sizes = [int(rng.integers(1, 11)) for _ in range(depth + 1)]
        activations = tuple(str(rng.choice(HIDDEN)) for _ in range(depth - 1)) + (str(rng.choice(list(jbp.ACTIVATIONS))),)
        if activations[-1] == "softmax":
            sizes[-1] = max(sizes[-1], 2)
        layer = mlp(activations)
        params = tuple(
            jbp.Layer(
                W=rng.normal(size=(n, o, i)) * np.sqrt(2 / (i + o)) * scale(-1, 1.5, (n, 1, 1)),
                b=0.5 * rng.normal(size=(n, o)) * scale(-1, 1, (n, 1)),
            )
            for i, o in zip(sizes[:-1], sizes[1:])
        )
        x = rng.normal(size=(n, batch, sizes[0])) * scale(-1, 1, (n, 1, 1))
        name = f"mlp {sizes} {'/'.join(activations)}, batch {batch}"
    else:
        d, m = int(rng.integers(2, 11)), int(rng.integers(1, 11))
        x = rng.normal(size=(n, batch, d)) * scale(-1, 1, (n, 1, 1))
        if kind == "layer norm":
            layer, params = layer_norm(), {"g": rng.normal(size=(n, d)), "b": rng.normal(size=(n, d))}
        elif kind == "gated":
            layer = gated()
            params = {"u": rng.normal(size=(n, m, d)) * scale(-1.5, 1, (n, 1, 1)), "v": rng.normal(size=(n, m, d))}
        else:
            layer, params = logsumexp_rows(), {"w": rng.normal(size=(n, m, d)) * scale(-1, 2, (n, 1, 1))}
        name = f"{kind} {d}->{m}, batch {batch}"
    f32 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float32), t)
    return name, layer, f32(params), f32(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=20, help="random layers (one compilation each)")
    parser.add_argument("--points", type=int, default=200, help="random points per layer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    verdicts, notes, points = collections.Counter(), collections.defaultdict(list), 0
    start = time.perf_counter()
    for g in range(args.groups):
        name, (forward, backward), params, x = group(rng, args.points)
        reports = jbp.check_vjp_many(forward, backward, params, x, key=jax.random.key(args.seed * 100003 + g))
        points += len(reports)
        for report in reports:
            for leaf in report.leaves:
                verdicts[leaf.verdict] += 1
                if leaf.verdict != "ok":
                    notes[name].append(f"{leaf.name} {leaf.verdict}: {leaf.evidence[:160]}")
    seconds = time.perf_counter() - start
    alarms = verdicts["WRONG"]
    print(f"{points} random correct float32 points ({args.groups} layers x {args.points}), "
          f"{sum(verdicts.values())} leaves, {seconds:.0f} s")
    print("verdicts:", dict(verdicts), f"-> {alarms} false alarm{'s' * (alarms != 1)}")
    for name, lines in notes.items():
        print(f"  {name}: {len(lines)} leaves not ok, e.g. {lines[0]}")


if __name__ == "__main__":
    main()
