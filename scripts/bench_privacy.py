"""Benchmark: per-example clipping by jbp's one backward pass, against vmap(grad) and Opacus.

    python scripts/bench_privacy.py                       # medium, large and wide
    python scripts/bench_privacy.py --quick --configs medium --out runs/bench_privacy.json
    python scripts/bench_privacy.py --configs cnn         # a network of layers (jbp.Sequential)

For each configuration (a network and a batch, from ``scripts/bench.py`` plus a wide one;
``cnn`` is ``scripts/bench.py``'s small convolutional network, without Opacus) it times, in this one process, interleaved round after round in a random order (the
harness of ``scripts/bench.py``), one SGD training step of:

- ``jbp``: ``jbp.make_train_step``, the ordinary step (no clipping), the baseline;
- ``jbp clipped``: ``jbp.clipped_grad`` (each example's gradient clipped to ``C``, the
  mean) then the same update: one forward and one backward pass;
- ``jbp DP``: the same plus the Gaussian noise ``σ C`` on the clipped sum, divided by
  the batch: one DP-SGD step at a fixed batch (what ``optax.contrib.dpsgd`` does);
- ``vmap DP``: the usual JAX way: ``jax.vmap(jax.grad(net.loss))`` over single examples
  (B copies of every weight gradient) then ``optax.contrib.dpsgd`` (clip, sum, noise);
- ``opacus hooks`` and ``opacus ghost``: PyTorch on the CPU with Opacus's
  ``PrivacyEngine.make_private`` (``grad_sample_mode="hooks"``, its default, and
  ``"ghost"``, ghost clipping), when the ``bench`` extra is installed.

All run in float32 on the same parameters and batch. Implementations whose per-example
gradients would take more than ``--max-per-example-gib`` (B x parameters x 4 bytes) are
not run (their memory is still reported from XLA's plan). The table gives medians per
step, the median over rounds of each round's ratio, and the temporary memory XLA plans
for each compiled JAX step (``memory_analysis()``). Before timing, the clipped gradients
of ``jbp clipped`` and of vmap + clipping must agree within float32 tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import CONFIGS, Config, LayersConfig, Timed, interleave, paired_ratio, problem  # noqa: E402

try:
    import torch
    import opacus
except ImportError:  # the optional extra: pip install -e ".[bench]"
    torch = opacus = None

LR, CLIP, SIGMA = 0.01, 1.0, 1.0
BENCH_CONFIGS = {
    "medium": CONFIGS["medium"],
    "large": CONFIGS["large"],
    "wide": Config("wide", (784, 8192, 10), 64, "relu", "softmax", "cross_entropy", 0, 0),
    "cnn": CONFIGS["cnn"],
}


# ----------------------------------------------------------------------------- steps


def _jitted(net, kind: str):
    """A compiled step ``(params, opt_state, x, y, key) -> (params, opt_state, loss)``."""
    if kind == "jbp":
        opt = optax.sgd(LR)
        step = jbp.make_train_step(net, opt)
        return (lambda p, s, x, y, k: step(p, s, x, y)), opt
    if kind in ("jbp clipped", "jbp DP"):
        opt = optax.sgd(LR)
        noise = kind == "jbp DP"

        def jbp_step(params, opt_state, x, y, key):
            loss, grads = jbp.clipped_grad(net, params, x, y, CLIP)
            if noise:  # σ C on the clipped sum, over the batch: σ C / B on the mean
                leaves, tree = jax.tree.flatten(grads)
                keys = jax.random.split(key, len(leaves))
                grads = jax.tree.unflatten(tree, [g + SIGMA * CLIP / x.shape[0] * jax.random.normal(k, g.shape, g.dtype)
                                                  for g, k in zip(leaves, keys)])
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return jax.jit(jbp_step, donate_argnums=(0, 1)), opt
    # vmap DP: per-example gradients by autodiff, then optax.contrib.dpsgd
    opt = optax.contrib.dpsgd(LR, CLIP, SIGMA, seed=0)

    def vmap_step(params, opt_state, x, y, key):
        loss = net.loss(params, x, y)
        grads = jax.vmap(jax.grad(net.loss), in_axes=(None, 0, 0))(params, x[:, None], y[:, None])
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(vmap_step, donate_argnums=(0, 1)), opt


def jax_impl(net, params, x, y, kind: str):
    jitted, opt = _jitted(net, kind)
    params = jax.tree.map(jnp.array, params)  # its own copy: donation deletes it
    state = (params, opt.init(params), jax.random.key(0))

    def step(state):
        params, opt_state, key = state
        key, sub = jax.random.split(key)
        params, opt_state, loss = jitted(params, opt_state, x, y, sub)
        return (params, opt_state, key), loss

    return step, state, jitted, opt


def temp_mib(jitted, opt, params, x, y) -> float:
    """XLA's planned temporary memory of the compiled step, MiB."""
    compiled = jax.jit(jitted).lower(params, opt.init(params), x, y, jax.random.key(0)).compile()
    memory = compiled.memory_analysis()
    return None if memory is None else memory.temp_size_in_bytes / 2**20


def opacus_impl(config: Config, params, x, y, mode: str):
    """PyTorch + Opacus on the CPU: make_private with ``grad_sample_mode`` ``mode``."""
    layers = []
    for i, p in enumerate(params):
        lin = torch.nn.Linear(p.W.shape[1], p.W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(p.W)))
            lin.bias.copy_(torch.from_numpy(np.array(p.b)))
        layers.append(lin)
        if i < len(params) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    xt, yt = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y).astype(np.int64))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=len(xt))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = torch.nn.CrossEntropyLoss()
    engine = opacus.PrivacyEngine()
    kwargs = dict(module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=SIGMA,
                  max_grad_norm=CLIP, poisson_sampling=False, grad_sample_mode=mode)
    if mode == "ghost":
        model, optimizer, criterion, _ = engine.make_private(criterion=criterion, **kwargs)
    else:
        model, optimizer, _ = engine.make_private(**kwargs)

    def step(state):
        optimizer.zero_grad()
        loss = criterion(model(xt), yt)
        loss.backward()
        optimizer.step()
        return state, loss.detach()

    return step


# ----------------------------------------------------------------------------- one config


def agreement(net, params, x, y) -> float:
    """Max relative difference of jbp's clipped mean gradient from vmap(grad) + clipping."""
    _, got = jax.jit(lambda p: jbp.clipped_grad(net, p, x, y, CLIP))(params)
    g = jax.jit(jax.vmap(jax.grad(net.loss), in_axes=(None, 0, 0)))(params, x[:, None], y[:, None])
    norms = jnp.sqrt(sum(jnp.sum(l.reshape(l.shape[0], -1) ** 2, axis=1) for l in jax.tree.leaves(g)))
    c = jnp.minimum(1, CLIP / norms)
    want = jax.tree.map(lambda l: jnp.tensordot(c, l, 1) / x.shape[0], g)
    return max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))


def run_config(config: Config, quick: bool, max_gib: float) -> dict:
    net = config.net
    params = net.init(jax.random.key(0), dtype=jnp.float32)
    xn, yn = problem(config, config.batch)
    x, y = jnp.asarray(xn), jnp.asarray(yn)
    n_params = sum(a.size for a in jax.tree.leaves(params))
    per_example_gib = config.batch * n_params * 4 / 2**30
    fits = per_example_gib <= max_gib
    layers = isinstance(config, LayersConfig)
    result = {"config": config.name, "sizes": [] if layers else list(config.sizes), "batch": config.batch,
              "params": n_params, "per_example_grads_gib": per_example_gib}
    if layers:
        result["description"] = config.description
    if fits:
        result["agree_rel_diff"] = agreement(net, params, x, y)
    impls, temp = {}, {}
    for kind in ("jbp", "jbp clipped", "jbp DP", "vmap DP"):
        step, state, jitted, opt = jax_impl(net, params, x, y, kind)
        temp[kind] = temp_mib(jitted, opt, params, x, y)
        if kind != "vmap DP" or fits:
            impls[kind] = Timed(step, state)
    if opacus is not None and not layers:  # opacus_impl builds the MLP's torch.nn.Linear layers only
        for mode in ("hooks", "ghost"):
            if mode == "hooks" and not fits:
                continue
            impls[f"opacus {mode}"] = Timed(opacus_impl(config, params, xn, yn, mode), None)
    target, max_k, budget, (min_rounds, max_rounds) = (
        (0.002, 20, 0.5, (3, 5)) if quick else (0.005, 200, 25.0, (10, 100))
    )
    for impl in impls.values():
        impl.calibrate(target, max_k)
    result["rounds"] = interleave(impls, min_rounds, max_rounds, budget)
    s = {name: impl.samples for name, impl in impls.items()}
    cpu = {name: impl.cpu_samples for name, impl in impls.items()}
    for name, impl in impls.items():
        result[name] = {"step_s": statistics.median(impl.samples),
                        "step_cpu_s": statistics.median(impl.cpu_samples),
                        "vs_jbp": paired_ratio(impl.samples, s["jbp"]),
                        "vs_jbp_DP": paired_ratio(impl.samples, s["jbp DP"]),
                        "vs_jbp_cpu": paired_ratio(impl.cpu_samples, cpu["jbp"]),
                        "vs_jbp_DP_cpu": paired_ratio(impl.cpu_samples, cpu["jbp DP"]),
                        "temp_mib": temp.get(name)}
    if not fits:
        result["vmap DP"] = {"temp_mib": temp["vmap DP"], "skipped": f"per-example grads {per_example_gib:.1f} GiB"}
    return result


def table(results: list) -> str:
    """Ratios as ``wall [CPU time]``: medians over rounds of each round's ratio."""
    ran = lambda r, k: "step_s" in r.get(k, {})

    def cpu_ratio(r, k, base):
        if base + "_cpu" in r[k]:
            return r[k][base + "_cpu"]
        # runs saved before the paired CPU ratios: the ratio of the CPU-time medians
        return r[k]["step_cpu_s"] / r["jbp" if base == "vs_jbp" else "jbp DP"]["step_cpu_s"]

    ms = lambda r, k: f"{r[k]['step_s'] * 1e3:.3g}" if ran(r, k) else "-"
    ratio = lambda r, k, base: (f"{r[k][base]:.2f}x [{cpu_ratio(r, k, base):.2f}x]" if ran(r, k) else "not run")
    lines = [
        "| config | jbp step ms | clipped ms | clipped / jbp | DP step ms | vmap DP ms | vmap DP / jbp DP "
        "| Opacus hooks / jbp DP | Opacus ghost / jbp DP | temp MiB: jbp / clipped / DP / vmap DP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mib = lambda k: f"{r[k]['temp_mib']:.4g}" if r.get(k, {}).get("temp_mib") is not None else "-"
        lines.append(
            f"| {r['config']} {r.get('description') or '-'.join(map(str, r['sizes']))} B={r['batch']} | {ms(r, 'jbp')} | "
            f"{ms(r, 'jbp clipped')} | {ratio(r, 'jbp clipped', 'vs_jbp')} | {ms(r, 'jbp DP')} | "
            f"{ms(r, 'vmap DP')} | {ratio(r, 'vmap DP', 'vs_jbp_DP')} | {ratio(r, 'opacus hooks', 'vs_jbp_DP')} | "
            f"{ratio(r, 'opacus ghost', 'vs_jbp_DP')} | {mib('jbp')} / {mib('jbp clipped')} / {mib('jbp DP')} / {mib('vmap DP')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="medium,large,wide")
    p.add_argument("--quick", action="store_true", help="a few rounds only (a smoke test)")
    p.add_argument("--max-per-example-gib", type=float, default=2.0,
                   help="skip vmap and Opacus hooks where B x params x 4 bytes exceeds this")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--table", help="only print the table of a run saved with --out")
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            saved = json.load(f)
        print(saved["header"])
        print(table(saved["results"]))
        return 0
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    results = []
    for name in args.configs.split(","):
        r = run_config(BENCH_CONFIGS[name], args.quick, args.max_per_example_gib)
        results.append(r)
        print(json.dumps(r), flush=True)
    header = (f"jax {jax.__version__} on {jax.default_backend()}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs; " + (f"torch {torch.__version__}, opacus {opacus.__version__}"
                                           if torch is not None else "no opacus (pip install -e '.[bench]')"))
    print(header)
    print(table(results))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"header": header, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
