"""K-FAC against kfac-jax, Adam and SGD with momentum on the classic K-FAC task, a deep autoencoder.

The network is Hinton and Salakhutdinov's autoencoder scaled to the bundled 8x8 digits:
64-128-64-32-8-32-64-128-64, tanh, with a sigmoid cross-entropy output
(``jbp.MLP(..., loss="binary_cross_entropy")``), trained to reconstruct its input
(pixels / 16, in [0, 1]) on all 1,797 images, by default in full batches (as kfac-jax's
own autoencoder example trains). Every optimizer starts from the same initial weights and
sees the same batches (``jbp.fit``, the same key).

Each optimizer (each over a small grid, its best kept: the one that reaches the target
first, else the lowest loss) trains in compiled chunks of ``--chunk`` epochs; after each
chunk the whole training set's loss is evaluated (not timed). Reported: steps and wall
time (compilation excluded, reported apart) to reach ``--target`` training loss, time per
step (median over chunks), and the loss curve (``--curves FILE`` writes them as JSON).

kfac-jax (the ``bench`` extra) runs the same network, loss, weights and settings (its
layers registered with ``kfac_jax.register_dense``) when installed and the batch is the
whole set; ``--compare-factors`` instead compares jbp's factors with kfac-jax's on one
small network and batch in float64 and exits. kfac-jax 0.0.8, its latest release, fails to
trace under jax >= 0.9.2 (``get_bind_params`` returns two values no more); :func:`kfac_jax_shim`
replaces that one function as kfac-jax's own repository has since done. Run from the
repository root:

    PYTHONPATH=$PWD python scripts/bench_kfac.py                     # the full run
    PYTHONPATH=$PWD python scripts/bench_kfac.py --quick             # a short one, smaller grids
    PYTHONPATH=$PWD python scripts/bench_kfac.py --compare-factors   # jbp's A and G against kfac-jax's
    PYTHONPATH=$PWD python scripts/bench_kfac.py --per-step 10       # time per step, interleaved
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
from jbp.curvature import kronecker

SIZES = (64, 128, 64, 32, 8, 32, 64, 128, 64)


def data():
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32) / 16.0
    return jnp.asarray(x)


def kfac_jax_shim():
    """kfac-jax 0.0.8 under jax >= 0.9.2: ``Primitive.get_bind_params`` returns the params
    alone (it returned ``(subfuns, params)`` before), which 0.0.8's ``eval_jaxpr_eqn``
    unpacks; this is that function as kfac-jax's repository now has it. Returns the module."""
    import kfac_jax
    from kfac_jax._src import tag_graph_matcher

    def eval_jaxpr_eqn(eqn, in_values):
        bind_params = eqn.primitive.get_bind_params(eqn.params)
        with jax.extend.source_info_util.user_context(eqn.source_info.traceback):
            output = eqn.primitive.bind(*in_values, **bind_params)
        return output if isinstance(output, list) else [output]

    if kfac_jax.__version__ == "0.0.8":
        tag_graph_matcher.eval_jaxpr_eqn = eval_jaxpr_eqn
    return kfac_jax


def kfac_jax_loss(net):
    """``net``'s loss (a tanh MLP, ``binary_cross_entropy`` or ``cross_entropy``) written
    for kfac-jax: each dense layer and the loss registered, ``W`` stored as ``(n_in, n_out)``."""
    kfac_jax = kfac_jax_shim()

    def loss(params, batch):
        x, y = batch
        h = x
        for i, (w, b) in enumerate(params):
            h = kfac_jax.register_dense(h @ w + b, h, w, b)
            h = jnp.tanh(h) if i < len(params) - 1 else h
        if net.loss_name == "binary_cross_entropy":  # the mean over outputs too: weight 1 / m
            kfac_jax.register_sigmoid_cross_entropy_loss(h, y, weight=1.0 / h.shape[-1])
            return jnp.mean(jnp.maximum(h, 0) - h * y + jnp.log1p(jnp.exp(-jnp.abs(h))))
        kfac_jax.register_softmax_cross_entropy_loss(h, y)
        return jnp.mean(jax.nn.logsumexp(h, axis=-1) - jnp.take_along_axis(h, y[:, None], axis=-1)[:, 0])

    return loss


def to_kfac_jax(params):
    return [(jnp.copy(p.W.T), jnp.copy(p.b)) for p in params]  # kfac-jax donates its arguments


def kfac_jax_optimizer(net, *, damping, ema=0.95, inverse_every=5, damping_every=5, estimation="fisher_gradients"):
    """kfac-jax's optimizer with jbp.kfac(adaptive=True)'s settings (the ``bench`` extra)."""
    kfac_jax = kfac_jax_shim()
    return kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(kfac_jax_loss(net)), l2_reg=0.0, multi_device=False,
        use_adaptive_learning_rate=True, use_adaptive_momentum=True, use_adaptive_damping=True,
        initial_damping=damping, min_damping=1e-8, max_damping=1e8, damping_adaptation_decay=0.95,
        damping_adaptation_interval=damping_every, inverse_update_period=inverse_every, curvature_ema=ema,
        estimation_mode=estimation, num_burnin_steps=0)


def run_kfac_jax(net, params, x, optimizer, *, chunk, max_steps, target, key):
    """``run`` for kfac-jax, in full batches: ``chunk`` steps between evaluations."""
    loss = jax.jit(lambda p: net.loss(p, x, x))
    kparams = to_kfac_jax(params)
    state = optimizer.init(kparams, key, (x, x))
    back = lambda kp: tuple(jbp.Layer(w.T, b) for w, b in kp)
    steps, seconds, compile_s = 0, 0.0, 0.0
    curve, per_step = [(0, 0.0, float(loss(params)))], []

    def run_chunk():
        nonlocal key, kparams, state, steps
        start = time.perf_counter()
        for _ in range(chunk):
            key, sub = jax.random.split(key)
            kparams, state, _ = optimizer.step(kparams, state, sub, batch=(x, x), global_step_int=steps)
            steps += 1
        jax.block_until_ready(kparams)
        return time.perf_counter() - start

    while steps < max_steps and curve[-1][2] > target:
        elapsed = run_chunk()
        if steps == chunk:  # the first chunk compiles: time its steps after the first apart
            compile_s = elapsed
            elapsed = run_chunk()
            compile_s -= elapsed
            seconds += elapsed * 2  # the first chunk's steps, at the second's pace
            per_step.append(elapsed / chunk)
            curve.append((steps, seconds, float(loss(back(kparams)))))
            continue
        seconds += elapsed
        per_step.append(elapsed / chunk)
        l = float(loss(back(kparams)))
        curve.append((steps, seconds, l if np.isfinite(l) else float("inf")))
        if not np.isfinite(l):
            break
    return curve, compile_s, per_step


def exact_fisher_factors(net, params, x):
    """jbp's ``A`` and the true Fisher's ``G``, its expectation over the model's targets taken
    exactly: one more backward pass per column ``u_k`` of a square root of the output's
    Fisher, ``Σ_k u_k u_kᵀ`` (softmax: ``u_k = √p_k (p − e_k)``; sigmoid: ``u_j = √(p_j (1 − p_j)) e_j``),
    ``G = Σ_k G(u_k)`` (what kfac-jax's ``estimation_mode="fisher_exact"`` computes)."""
    b = jbp.curvature.Backward.of(net, params, x, jnp.zeros((x.shape[0], net.output_shape[-1])) if
                                  net.loss_name == "binary_cross_entropy" else jnp.zeros((x.shape[0],), jnp.int32))
    p, (batch, m) = b.cache.out, b.cache.out.shape
    c = 1.0 / m if net.loss_name == "binary_cross_entropy" else 1.0
    if net.loss_name == "binary_cross_entropy":
        columns = [jnp.sqrt(p[:, j] * (1 - p[:, j]))[:, None] * jax.nn.one_hot(j, m, dtype=p.dtype) for j in range(m)]
    else:
        columns = [jnp.sqrt(p[:, k])[:, None] * (p - jax.nn.one_hot(k, m, dtype=p.dtype)) for k in range(m)]
    A, G = [], []
    for i, (layer, pi, r) in enumerate(zip(b.layers, params, b.residuals)):
        if not jax.tree.leaves(pi):
            continue
        parts = [kronecker.factors(*layer.weight_grad_operands(pi, r, b.rerun(c * u / batch)[i]), b.scale)
                 for u in columns]
        A.append(parts[0][0])
        G.append(sum(g for _, g in parts))
    return A, G


def compare_factors():
    """jbp's A and G against kfac-jax's, float64, on the same network, weights and batch:
    the true Fisher's G with its expectation exact (kfac-jax ``fisher_exact``), and the
    empirical Fisher's (``fisher_empirical``, jbp ``fisher="empirical"``)."""
    jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__}, kfac-jax {kfac_jax_shim().__version__}, float64, batch 16")
    err = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
    for loss_name, sizes in (("binary_cross_entropy", (6, 5, 4, 6)), ("cross_entropy", (4, 7, 3))):
        net = jbp.MLP(sizes, activation="tanh", loss=loss_name)
        params = net.init(jax.random.key(0), jnp.float64)
        x = jax.random.uniform(jax.random.key(1), (16, sizes[0]), jnp.float64)
        y = x if loss_name == "binary_cross_entropy" else jnp.arange(16) % sizes[-1]
        opt = jbp.kfac(fisher="empirical")
        empirical = opt.update(net.loss_and_grad(params, x, y)[1], opt.init(params), params,
                               backward=jbp.curvature.Backward.of(net, params, x, y))[1]
        exact = exact_fisher_factors(net, params, x)
        for mode, ours in (("fisher_exact", exact), ("fisher_empirical", (empirical.A, empirical.G))):
            theirs = kfac_jax_optimizer(net, damping=1e-3, estimation=mode)
            state = theirs.init(to_kfac_jax(params), jax.random.key(2), (x, y))
            state = theirs.step(to_kfac_jax(params), state, jax.random.key(3), batch=(x, y), global_step_int=0)[1]
            for i, block in enumerate(state.estimator_state.blocks_states):
                A, G = (f.value for f in block.factors)
                print(f"  {loss_name} {'-'.join(map(str, sizes))}, {mode}, layer {i}: A {A.shape[0]}x{A.shape[0]} "
                      f"rel. err. {err(ours[0][i], A):.1e}; G {G.shape[0]}x{G.shape[0]} rel. err. "
                      f"{err(ours[1][i], G):.1e}, jbp's G / kfac-jax's "
                      f"{float(jnp.trace(ours[1][i]) / jnp.trace(G)):.4g}")


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


def time_per_step(reps):
    """Time per step, each optimizer's steps interleaved with the others' (``reps`` rounds of
    10 steps each, full batches), so that a machine's changing load falls on all alike:
    the minimum and the median over rounds, and their ratios to Adam's."""
    x = data()
    net = jbp.MLP(SIZES, activation="tanh", loss="binary_cross_entropy")
    params = net.init(jax.random.key(0))

    def jbp_steps(optimizer):
        step, state = jbp.make_train_step(net, optimizer, donate=False), [params, optimizer.init(params)]

        def go(n):
            p, s = state
            for _ in range(n):
                p, s, _ = step(p, s, x, x)
            state[:] = jax.block_until_ready((p, s))
        return go

    runners = {
        "Adam, lr 0.003": jbp_steps(optax.adam(3e-3)),
        "jbp K-FAC, adaptive, statistics of 256 rows": jbp_steps(
            jbp.kfac(adaptive=True, damping=0.01, inverse_every=5, statistics_batch=256)),
        "jbp K-FAC, adaptive, statistics of all rows": jbp_steps(
            jbp.kfac(adaptive=True, damping=0.01, inverse_every=5)),
    }
    try:
        optimizer = kfac_jax_optimizer(net, damping=0.01)
    except ImportError:
        optimizer = None
    if optimizer is not None:
        kparams = to_kfac_jax(params)
        kstate = [kparams, optimizer.init(kparams, jax.random.key(1), (x, x)), 0, jax.random.key(2)]

        def kfac_jax_steps(n):
            p, s, t, key = kstate
            for _ in range(n):
                key, sub = jax.random.split(key)
                p, s, _ = optimizer.step(p, s, sub, batch=(x, x), global_step_int=t)
                t += 1
            kstate[:] = [jax.block_until_ready(p), s, t, key]
        runners["kfac-jax, adaptive, statistics of all rows"] = kfac_jax_steps
    for go in runners.values():
        go(10)  # compile
    times = {name: [] for name in runners}
    for _ in range(reps):
        for name, go in runners.items():
            start = time.perf_counter()
            go(10)
            times[name].append((time.perf_counter() - start) / 10)
    adam = times["Adam, lr 0.003"]
    print(f"jax {jax.__version__}, full batches of {x.shape[0]}, {reps} rounds of 10 steps each\n")
    print("| optimizer | ms / step, min | x Adam | ms / step, median | x Adam |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {1e3 * min(t):.2f} | {min(t) / min(adam):.2f} | {1e3 * statistics.median(t):.2f} | "
              f"{statistics.median(t) / statistics.median(adam):.2f} |")


def plot(curves, target, path):
    """The loss curves against steps and against wall seconds, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for name, curve in curves.items():
        steps, seconds, losses = zip(*curve)
        axes[0].plot(steps, losses, label=name.split(" (")[0])
        axes[1].plot(seconds, losses)
    for ax, label in zip(axes, ("steps", "wall seconds (compilation excluded)")):
        ax.axhline(target, color="gray", lw=0.8, ls="--")
        ax.set_xlim(left=0)
        ax.set_xlabel(label)
    axes[0].set_ylabel("training loss")
    axes[0].set_ylim(top=0.7)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids (a short check)")
    parser.add_argument("--target", type=float, default=0.28, help="training loss to reach")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: all 1,797 images)")
    parser.add_argument("--chunk", type=int, default=None, help="epochs per compiled chunk (default: 10 steps)")
    parser.add_argument("--max-steps", type=int, default=None, help="default 1500; quick 600")
    parser.add_argument("--curves", help="write the loss curves here, as JSON")
    parser.add_argument("--plot", help="draw the loss curves here, as PNG")
    parser.add_argument("--per-step", type=int, metavar="ROUNDS",
                        help="only time the steps, interleaved over ROUNDS rounds, and exit")
    parser.add_argument("--compare-factors", action="store_true",
                        help="compare jbp's K-FAC factors with kfac-jax's (float64) and exit")
    args = parser.parse_args()
    if args.compare_factors:
        return compare_factors()
    if args.per_step:
        return time_per_step(args.per_step)
    target, max_steps = args.target, args.max_steps or (600 if args.quick else 1500)
    x = data()
    batch = min(args.batch or x.shape[0], x.shape[0])
    chunk = args.chunk or max(1, (10 * batch) // x.shape[0])
    net = jbp.MLP(SIZES, activation="tanh", loss="binary_cross_entropy")
    params = net.init(jax.random.key(0))
    key = jax.random.key(1)
    adaptive = lambda d: jbp.kfac(adaptive=True, damping=d, inverse_every=5, statistics_batch=256)
    kfac_settings = {f"adaptive, initial damping {d:g}, inverses every 5, statistics of 256 rows": adaptive(d)
                     for d in ((0.01,) if args.quick else (0.01, 0.1, 1.0))}
    if not args.quick:
        kfac_settings["lr 1, damping 0.1, no momentum, inverses every 5"] = jbp.kfac(1.0, damping=0.1, momentum=None,
                                                                                    inverse_every=5)
    grids = {
        "jbp K-FAC": kfac_settings,
        "Adam": {f"lr {lr:g}": optax.adam(lr) for lr in ((3e-3, 1e-2) if args.quick else (1e-3, 3e-3, 1e-2, 3e-2))},
        "SGD+momentum 0.9": {f"lr {lr:g}": optax.sgd(lr, momentum=0.9)
                             for lr in ((1.0, 3.0) if args.quick else (1.0, 3.0, 10.0))},
    }
    try:
        kfac_jax = kfac_jax_shim() if batch == x.shape[0] else None
    except ImportError:
        kfac_jax = None
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), float32, "
          f"digits autoencoder {'-'.join(map(str, SIZES))} tanh + sigmoid cross-entropy, {x.shape[0]} images, "
          f"batch {batch}, target training loss {target}, at most {max_steps} steps"
          + (" (--quick)" if args.quick else "")
          + (f"; kfac-jax {kfac_jax.__version__}" if kfac_jax else "; kfac-jax not run (not installed, or a batch "
             "smaller than the set)"))
    rows, curves = [], {}
    for name, grid in grids.items():
        results = {}
        for setting, optimizer in grid.items():
            results[setting] = run(net, params, x, optimizer, batch=batch, chunk=chunk,
                                   max_steps=max_steps, target=target, key=key)
            curve = results[setting][0]
            print(f"  {name} {setting}: final loss {curve[-1][2]:.4f} after {curve[-1][0]} steps", flush=True)
        setting, (curve, compile_s, per_step) = best_of(results, target)
        curves[f"{name} ({setting})"] = curve
        rows.append((name, setting, reached(curve, target), statistics.median(per_step) if per_step else float("nan"),
                     compile_s, curve[-1]))
        if name == "jbp K-FAC" and kfac_jax:
            setting = "adaptive, initial damping 0.01, inverses every 5, statistics of all rows"
            curve, compile_s, per_step = run_kfac_jax(net, params, x, kfac_jax_optimizer(net, damping=0.01),
                                                      chunk=10, max_steps=max_steps, target=target, key=key)
            print(f"  kfac-jax {setting}: final loss {curve[-1][2]:.4f} after {curve[-1][0]} steps", flush=True)
            curves[f"kfac-jax ({setting})"] = curve
            rows.append(("kfac-jax", setting, reached(curve, target), statistics.median(per_step), compile_s,
                         curve[-1]))
    print(f"\n| optimizer | setting | steps to {target} | wall s to {target} | ms / step | compile s | final loss (steps) |")
    print("|---|---|---|---|---|---|---|")
    for name, setting, hit, step_s, compile_s, last in rows:
        steps, wall = (f"{hit[0]}", f"{hit[1]:.2f}") if hit else (f"> {last[0]}", f"> {last[1]:.2f}")
        print(f"| {name} | {setting} | {steps} | {wall} | {1e3 * step_s:.2f} | {compile_s:.1f} | "
              f"{last[2]:.4f} ({last[0]}) |")
    by_name = {row[0]: row for row in rows}
    kfac_row = by_name["jbp K-FAC"]
    for other in ("Adam", "kfac-jax"):
        row = by_name.get(other)
        if row is None:
            continue
        ratios = f"time per step {kfac_row[3] / row[3]:.2f}"
        if kfac_row[2] and row[2]:
            ratios = (f"steps {kfac_row[2][0] / row[2][0]:.2f}, wall time {kfac_row[2][1] / row[2][1]:.2f}, "
                      + ratios)
        print(f"jbp K-FAC / {other}: {ratios}")
    if args.plot:
        plot(curves, target, args.plot)
    if args.curves:
        with open(args.curves, "w") as f:
            json.dump({"target": target, "batch": batch, "curves": curves}, f, indent=1)


if __name__ == "__main__":
    main()
