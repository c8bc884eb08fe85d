"""Benchmark: jbp's hand-derived training step against autodiff, NumPy and PyTorch.

    python scripts/bench.py                      # every configuration, full run
    python scripts/bench.py --quick --configs tiny --out runs/bench.json
    python scripts/bench.py --configs cnn,resmlp  # networks of layers: jbp vs autodiff

For each configuration (a network, a batch, plain SGD) it times, in this one process,
interleaved round after round (in a random order each round) after a warm-up, one
training step of:

- ``jbp``: ``jbp.make_train_step(net, optax.sgd(lr))``: the hand-derived backward, with
  its default donation (the parameters are updated in place where that pays: every
  configuration here but medium);
- ``autodiff``: the same network's step written the usual way, ``jax.value_and_grad
  (net.loss)`` then the same optax update, under ``jax.jit``;
- ``autodiff+donate``: that step with the parameters and optimizer state donated,
  updated in place (what XLA makes of an in-place update of autodiff's step);
- ``numpy``: a plain NumPy backprop written by hand;
- ``torch``: PyTorch eager on CPU (skipped with a note when torch is not installed);
- ``gemm``: an fp32 ``jnp.dot`` of two 2048 x 2048 matrices on JAX's default backend:
  the machine's matmul rate, measured in the same rounds.

Each timing sample takes one untimed step, then runs a few steps back to back (enough
for ~5 ms, or one step) and waits for the result. The rounds come in two phases of up
to ~12.5 s each (15 to 150 rounds): first XLA's programs among themselves (``jbp``,
``autodiff``, ``autodiff+donate``, ``gemm``), which give the ratios to autodiff; then
``jbp`` among ``numpy`` and ``torch``, whose threads keep spinning after their step and
slow whatever runs next, so that they would otherwise blur the first comparison. The
table shows medians per step. The ratios are medians over rounds of the
ratio of the two implementations' samples in that round, so that a slow moment of the
machine hits both; they are given for wall-clock time and for the process's CPU time,
which other processes on a shared machine disturb less. FLOPs per step are
``6 · batch · Σ n_in·n_out`` (forward, input gradients and weight gradients). It also
reports the steps per second of the compiled epoch loop (``jbp.fit``) against
Python-dispatched ``jbp`` steps, the compile time, the bytes XLA counts each compiled
step reading and writing (``cost_analysis()``; the load does not change them), and the
temporary and peak memory it plans for it (``memory_analysis()``).

Before timing, every implementation takes one step from the same parameters and data;
the loss and the new parameters must agree with ``jbp``'s within float32 tolerance.

Uses only jbp's public API, jax, optax, numpy and (optionally) torch. Runs unchanged on
any JAX backend; NumPy and PyTorch always run on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp

try:
    import torch
except ImportError:  # the optional extra: pip install -e ".[bench]"
    torch = None

LR = 0.01
GEMM_N = 2048
#: Agreement of one step with jbp's, relative to the largest entry: float32 tolerance.
AGREE_RTOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple
    batch: int
    activation: str
    output_activation: str
    loss: str
    fit_steps: int  # mini-batches per epoch in the compiled-loop measurement
    fit_epochs: int

    @property
    def net(self) -> jbp.MLP:
        return jbp.MLP(self.sizes, activation=self.activation,
                       output_activation=self.output_activation, loss=self.loss)

    @property
    def flops(self) -> int:
        return 6 * self.batch * sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))


@dataclasses.dataclass(frozen=True)
class LayersConfig:
    """A network of layers (``jbp.Sequential``): jbp against autodiff only (NumPy and
    PyTorch have no hand-written counterparts here)."""

    name: str
    input_shape: tuple
    layers: Callable  # () -> the layers (built on use: jbp.layers is imported lazily)
    batch: int
    fit_steps: int
    fit_epochs: int
    description: str
    loss: str = "cross_entropy"

    @property
    def net(self) -> jbp.Sequential:
        return _sequential(self)


@functools.lru_cache(maxsize=None)
def _sequential(config: LayersConfig) -> jbp.Sequential:
    return jbp.Sequential(config.input_shape, config.layers(), loss=config.loss)


def _cnn():
    from jbp.layers import Conv2D, Dense, Flatten, MaxPool2D

    return [Conv2D(16, (3, 3)), "relu", Conv2D(32, (3, 3)), "relu", MaxPool2D((2, 2), (2, 2)),
            Flatten(), Dense(10)]


def _resmlp():
    from jbp.layers import Dense, LayerNorm, Residual

    block = lambda: Residual((LayerNorm(), Dense(256), "relu"))
    return [Dense(256), *[block() for _ in range(8)], Dense(10)]


CONFIGS = {
    c.name: c
    for c in (
        Config("tiny", (2, 8, 1), 4, "tanh", "sigmoid", "mse", 256, 8),
        Config("small", (64, 128, 10), 128, "relu", "softmax", "cross_entropy", 64, 4),
        Config("medium", (784, 512, 512, 10), 256, "relu", "softmax", "cross_entropy", 16, 2),
        Config("large", (4096, 4096, 4096, 10), 128, "relu", "softmax", "cross_entropy", 4, 1),
        LayersConfig("cnn", (8, 8, 1), _cnn, 128, 16, 4,
                     "8x8x1 -> conv 16@3x3, relu, conv 32@3x3, relu, maxpool 2, dense 10"),
        LayersConfig("resmlp", (64,), _resmlp, 128, 16, 4,
                     "64 -> dense 256, 8 x residual(layernorm, dense 256, relu), dense 10"),
    )
}


# ----------------------------------------------------------------------------- data


def problem(config: Config, rows: int, seed: int = 0):
    """Float32 inputs and targets: ``rows`` examples for ``config``'s loss."""
    rng = np.random.default_rng(seed)
    if isinstance(config, LayersConfig):
        x = rng.normal(size=(rows, *config.input_shape)).astype(np.float32)
        return x, rng.integers(0, config.net.output_shape[0], size=rows).astype(np.int32)
    x = rng.normal(size=(rows, config.sizes[0])).astype(np.float32)
    n_out = config.sizes[-1]
    if config.loss == "cross_entropy":
        y = rng.integers(0, n_out, size=rows).astype(np.int32)
    else:
        y = rng.uniform(size=(rows, n_out)).astype(np.float32)
    return x, y


# ----------------------------------------------------------------------------- steps
# Each step maker returns step, state (and more): step(state) -> (state, loss) runs one
# step from the implementation's own state.


def jax_step(config, params, x, y, *, manual: bool, donate):
    """jbp's step (``manual``) or the autodiff one, jitted; state is (params, opt_state).
    ``donate``: True, False, or (jbp only) None for make_train_step's default."""
    net, optimizer = config.net, optax.sgd(LR)
    if manual:
        jitted = jbp.make_train_step(net, optimizer, donate=donate)
    else:
        def autodiff_step(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(net.loss)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        jitted = jax.jit(autodiff_step, donate_argnums=(0, 1) if donate else ())
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = jax.tree.map(jnp.array, params)  # a copy of its own: donation deletes it
    state = (params, optimizer.init(params))

    def step(state):
        params, opt_state, loss = jitted(*state, x, y)
        return (params, opt_state), loss

    return step, state, jitted


def numpy_step(config, params, x, y):
    """The seed's algorithm in plain NumPy, float32: BP1-BP7 written out by hand."""
    f = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0),
         "sigmoid": lambda z: 1 / (1 + np.exp(-z))}
    df = {"tanh": lambda z, a: 1 - a * a, "relu": lambda z, a: (z > 0).astype(z.dtype),
          "sigmoid": lambda z, a: a * (1 - a)}
    acts = [config.activation] * (len(config.sizes) - 2)
    batch = x.shape[0]

    def step(state):
        Ws, bs = state
        a, zs, xs = x, [], [x]
        for W, b, act in zip(Ws, bs, acts + [config.output_activation]):
            z = a @ W.T + b
            if act == "softmax":
                e = np.exp(z - z.max(axis=1, keepdims=True))
                a = e / e.sum(axis=1, keepdims=True)
            else:
                a = f[act](z)
            zs.append(z)
            xs.append(a)
        out = xs[-1]
        if config.loss == "cross_entropy":
            rows = np.arange(batch)
            loss = -np.log(out[rows, y]).mean()
            delta = out.copy()
            delta[rows, y] -= 1
            delta /= batch
        else:
            loss = 0.5 * ((out - y) ** 2).sum() / batch
            delta = (out - y) / batch * df[config.output_activation](zs[-1], out)
        for l in range(len(Ws) - 1, -1, -1):
            dW, db = delta.T @ xs[l], delta.sum(axis=0)
            if l > 0:
                delta = (delta @ Ws[l]) * df[acts[l - 1]](zs[l - 1], xs[l])
            Ws[l] -= np.float32(LR) * dW  # in place, as NumPy code usually does
            bs[l] -= np.float32(LR) * db
        return (Ws, bs), np.float32(loss)

    state = ([np.array(p.W) for p in params], [np.array(p.b) for p in params])
    return step, state


def torch_step(config, params, x, y):
    """PyTorch eager on CPU: autograd and torch.optim.SGD, the usual way."""
    acts = [config.activation] * (len(config.sizes) - 2) + [config.output_activation]
    f = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}
    tensors = []
    for p in params:
        tensors += [torch.tensor(np.array(p.W), requires_grad=True),
                    torch.tensor(np.array(p.b), requires_grad=True)]
    optimizer = torch.optim.SGD(tensors, lr=LR)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64) if config.loss == "cross_entropy" else y)

    def step(state):
        optimizer.zero_grad()
        h = xt
        for i, act in enumerate(acts):
            h = torch.nn.functional.linear(h, tensors[2 * i], tensors[2 * i + 1])
            if act != "softmax":  # cross_entropy takes the logits
                h = f[act](h)
        if config.loss == "cross_entropy":
            loss = torch.nn.functional.cross_entropy(h, yt)
        else:
            loss = 0.5 * ((h - yt) ** 2).sum() / h.shape[0]
        loss.backward()
        optimizer.step()
        return state, loss.detach()

    def params_now():
        return [t.detach().numpy() for t in tensors]

    return step, None, params_now


def gemm_step():
    a = jax.random.normal(jax.random.key(0), (GEMM_N, GEMM_N), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (GEMM_N, GEMM_N), jnp.float32)
    dot = jax.jit(jnp.dot)

    def step(state):
        return state, dot(a, b)

    return step, None


# ----------------------------------------------------------------------------- timing


def _block(tree) -> None:
    """Waits for JAX's asynchronous dispatch; NumPy and PyTorch on CPU are synchronous."""
    jax.block_until_ready([a for a in jax.tree.leaves(tree) if isinstance(a, jax.Array)])


class Timed:
    """One implementation under timing: its step, its own state, steps per sample."""

    def __init__(self, step: Callable, state):
        self.step, self.state, self.k = step, state, 1
        self.samples, self.cpu_samples = [], []

    def sample(self) -> tuple[float, float]:
        """Seconds per step: wall clock, and CPU time of this process (all its threads),
        of ``k`` steps after one untimed step, which takes the switch from whatever ran
        before (another runtime's threads still spinning, caches holding its data)."""
        self.state, out = self.step(self.state)
        _block((self.state, out))
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(self.k):
            self.state, out = self.step(self.state)
        _block((self.state, out))
        return (time.perf_counter() - t) / self.k, (time.process_time() - cpu) / self.k

    def calibrate(self, target_s: float, max_k: int) -> None:
        """Warms up (compiles), then picks the steps per sample for ``target_s``."""
        self.sample()
        one = min(self.sample()[0] for _ in range(2))
        self.k = int(min(max_k, max(1, round(target_s / one))))
        self.sample()


def interleave(impls: dict, min_rounds: int, max_rounds: int, budget_s: float) -> int:
    """One sample of each implementation per round, in a new random order each round,
    until ``max_rounds``, or ``budget_s`` seconds once ``min_rounds`` are done.

    The order matters on a small machine: a sample runs slower right after another
    runtime's (NumPy's BLAS or PyTorch's threads, a big GEMM), so no implementation may
    always follow the same one. Returns the number of rounds.
    """
    rng = np.random.default_rng(0)
    names, start, rounds = list(impls), time.perf_counter(), 0
    while rounds < max_rounds and (
        rounds < min_rounds or time.perf_counter() - start < budget_s
    ):
        for i in rng.permutation(len(names)):
            wall, cpu = impls[names[i]].sample()
            impls[names[i]].samples.append(wall)
            impls[names[i]].cpu_samples.append(cpu)
        rounds += 1
    return rounds


def paired_ratio(a: list, b: list) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


# ----------------------------------------------------------------------------- checks


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.max(np.abs(want)), 1e-30)
    return float(np.max(np.abs(got - want)) / scale)


def agreement(config, params, x, y) -> dict:
    """One step of each implementation from the same start: max relative difference
    of the loss and of every updated parameter, against jbp's."""
    flat = lambda p: [a for layer in p for a in (layer.W, layer.b)]
    step, state, _ = jax_step(config, params, x, y, manual=True, donate=None)
    (want_params, _), want_loss = step(state)
    want = [float(want_loss)] + flat(want_params)
    got = {}
    step, state, _ = jax_step(config, params, x, y, manual=False, donate=False)
    (p, _), loss = step(state)
    got["autodiff"] = [float(loss)] + flat(p)
    step, state = numpy_step(config, params, x, y)
    (Ws, bs), loss = step(state)
    got["numpy"] = [float(loss)] + [a for pair in zip(Ws, bs) for a in pair]
    if torch is not None:
        step, state, params_now = torch_step(config, params, x, y)
        _, loss = step(state)
        got["torch"] = [float(loss)] + params_now()
    out = {}
    for name, values in got.items():
        loss_diff = _rel(values[0], want[0])
        param_diff = max(_rel(g, w) for g, w in zip(values[1:], want[1:]))
        out[name] = {"loss_rel_diff": loss_diff, "params_rel_diff": param_diff,
                     "agree": loss_diff <= AGREE_RTOL and param_diff <= AGREE_RTOL}
    return out


# ----------------------------------------------------------------------------- one config


def compile_stats(jitted, state, x, y) -> dict:
    """Lowering + compile time, XLA's planned memory and its count of the bytes the
    compiled step reads and writes (``cost_analysis()``: independent of the load)."""
    t = time.perf_counter()
    compiled = jitted.lower(*state, x, y).compile()
    seconds = time.perf_counter() - t
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost  # older JAX: one dict per device
    memory = compiled.memory_analysis()
    mib = lambda n: None if memory is None else n / 2**20
    size = lambda field: getattr(memory, field, 0)
    return {
        "compile_s": seconds,
        "accessed_mb": cost["bytes accessed"] / 1e6 if "bytes accessed" in cost else None,
        "temp_mib": mib(size("temp_size_in_bytes")),
        # Live at once: arguments, outputs not written over donated arguments, temporaries.
        "peak_mib": mib(size("argument_size_in_bytes") + size("output_size_in_bytes")
                        - size("alias_size_in_bytes") + size("temp_size_in_bytes")),
    }


def fit_rate(config, params, quick: bool) -> dict:
    """Steps per second of the whole compiled loop, jbp.fit, one call after a warm-up."""
    steps = 4 if quick else config.fit_steps
    epochs = 1 if quick else config.fit_epochs
    x, y = problem(config, steps * config.batch, seed=1)
    x, y = jnp.asarray(x), jnp.asarray(y)
    net, optimizer = config.net, optax.sgd(LR)  # fit compiles once per (net, optimizer)
    run = lambda: jbp.fit(net, params, x, y, optimizer=optimizer, epochs=epochs,
                          batch_size=config.batch, key=jax.random.key(0))
    jax.block_until_ready(run())  # compiles
    times = []
    for _ in range(1 if quick else 3):
        t = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - t)
    return {"fit_steps_per_call": steps * epochs,
            "fit_steps_per_s": steps * epochs / statistics.median(times)}


def layers_agreement(config, params, x, y) -> dict:
    """One step of jbp and of autodiff from the same start: max relative differences."""
    out = {}
    runs = {}
    for name, manual in (("jbp", True), ("autodiff", False)):
        step, state, _ = jax_step(config, params, x, y, manual=manual, donate=False)
        (new_params, _), loss = step(state)
        runs[name] = (np.asarray(loss), jax.tree.leaves(new_params))
    loss_diff = _rel(runs["autodiff"][0], runs["jbp"][0])
    params_diff = max(_rel(a, b) for a, b in zip(runs["autodiff"][1], runs["jbp"][1]))
    out["autodiff"] = {"loss_rel_diff": loss_diff, "params_rel_diff": params_diff,
                       "agree": loss_diff <= AGREE_RTOL and params_diff <= AGREE_RTOL}
    return out


def run_layers_config(config: LayersConfig, quick: bool) -> dict:
    """jbp's step against autodiff's on a network of layers, interleaved as run_config."""
    params = config.net.init(jax.random.key(0), dtype=jnp.float32)
    x, y = problem(config, config.batch)
    result = {"config": config.name, "kind": "layers", "description": config.description,
              "batch": config.batch}
    result["agreement"] = layers_agreement(config, params, x, y)
    impls = {}
    for name, manual, donate in (("jbp", True, None), ("autodiff", False, False),
                                 ("autodiff+donate", False, True)):
        step, state, jitted = jax_step(config, params, x, y, manual=manual, donate=donate)
        result[name] = compile_stats(jitted, state, jnp.asarray(x), jnp.asarray(y))
        impls[name] = Timed(step, state)
    target, max_k, budget, (min_rounds, max_rounds) = (
        (0.002, 50, 0.5, (3, 5)) if quick else (0.005, 500, 25.0, (15, 150))
    )
    for impl in impls.values():
        impl.calibrate(target, max_k)
    result["rounds"] = interleave(impls, min_rounds, max_rounds, budget)
    samples = {name: impl.samples for name, impl in impls.items()}
    cpu = {name: impl.cpu_samples for name, impl in impls.items()}
    for name in impls:
        result[name]["step_s"] = statistics.median(samples[name])
        result[name]["vs_autodiff"] = paired_ratio(samples[name], samples["autodiff"])
        result[name]["vs_autodiff_cpu"] = paired_ratio(cpu[name], cpu["autodiff"])
    result["jbp"]["vs_autodiff_donate"] = paired_ratio(samples["jbp"], samples["autodiff+donate"])
    result["jbp"]["vs_autodiff_donate_cpu"] = paired_ratio(cpu["jbp"], cpu["autodiff+donate"])
    result.update(fit_rate(config, params, quick))
    return result


def run_config(config: Config, quick: bool) -> dict:
    if isinstance(config, LayersConfig):
        return run_layers_config(config, quick)
    net = config.net
    params = net.init(jax.random.key(0), dtype=jnp.float32)
    x, y = problem(config, config.batch)
    result = {"config": config.name, "sizes": list(config.sizes), "batch": config.batch,
              "activation": config.activation, "output_activation": config.output_activation,
              "loss": config.loss, "flops_per_step": config.flops}
    result["agreement"] = agreement(config, params, x, y)

    impls, jitted = {}, {}
    for name, manual, donate in (("jbp", True, None), ("autodiff", False, False),
                                 ("autodiff+donate", False, True)):
        step, state, jitted[name] = jax_step(config, params, x, y, manual=manual, donate=donate)
        result[name] = compile_stats(jitted[name], state, jnp.asarray(x), jnp.asarray(y))
        impls[name] = Timed(step, state)
    impls["gemm"] = Timed(*gemm_step())
    others = {"jbp": Timed(*jax_step(config, params, x, y, manual=True, donate=None)[:2])}
    step, state = numpy_step(config, params, x, y)
    others["numpy"] = Timed(step, state)
    if torch is not None:
        step, state, _ = torch_step(config, params, x, y)
        others["torch"] = Timed(step, state)

    # Short samples and many rounds: on a shared machine, other processes' bursts then
    # hit single rounds, which the medians discard. Two phases of half the budget each:
    # XLA's programs among themselves, then jbp among NumPy and PyTorch, whose threads
    # keep spinning after a step and slow whatever runs next.
    target, max_k, budget, (min_rounds, max_rounds) = (
        (0.002, 50, 0.25, (3, 5)) if quick else (0.005, 500, 12.5, (15, 150))
    )
    for impl in [*impls.values(), *others.values()]:
        impl.calibrate(target, max_k)
    result["rounds"] = interleave(impls, min_rounds, max_rounds, budget)
    result["rounds_beside_others"] = interleave(others, min_rounds, max_rounds, budget)
    samples = {name: impl.samples for name, impl in impls.items()}
    cpu = {name: impl.cpu_samples for name, impl in impls.items()}

    gemm_s = statistics.median(samples["gemm"])
    result["gemm_gflops"] = 2 * GEMM_N**3 / gemm_s / 1e9
    for name, s in samples.items():
        if name == "gemm":
            continue
        result.setdefault(name, {})
        result[name]["step_s"] = statistics.median(s)
        result[name]["step_cpu_s"] = statistics.median(cpu[name])
        result[name]["steps_per_sample"] = impls[name].k
        result[name]["vs_autodiff"] = paired_ratio(s, samples["autodiff"])
        result[name]["vs_autodiff_cpu"] = paired_ratio(cpu[name], cpu["autodiff"])
    result["jbp"]["vs_autodiff_donate"] = paired_ratio(samples["jbp"], samples["autodiff+donate"])
    result["jbp"]["vs_autodiff_donate_cpu"] = paired_ratio(cpu["jbp"], cpu["autodiff+donate"])
    for name in ("jbp", "autodiff", "autodiff+donate"):
        r = result[name]
        r["gflops"] = config.flops / r["step_s"] / 1e9
        r["pct_gemm"] = 100 * paired_ratio([config.flops / t for t in samples[name]],
                                           [2 * GEMM_N**3 / t for t in samples["gemm"]])
    for name in ("numpy", "torch"):
        if name in others:
            result[name] = {"step_s": statistics.median(others[name].samples),
                            "vs_jbp": paired_ratio(others[name].samples, others["jbp"].samples)}
    result.update(fit_rate(config, params, quick))
    result["dispatched_steps_per_s"] = 1 / result["jbp"]["step_s"]
    return result


# ----------------------------------------------------------------------------- output


def _load():
    """The 1-minute load average (other processes sharing the cores), where known."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(), "device": device.device_kind, "cpu": cpu,
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "jax": jax.__version__, "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
    }


def _mib(m):
    return "n/a" if m is None else f"{m:.3g}"


def _ms(s):
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} µs"


def layers_table(results: list) -> list:
    """The networks of layers: jbp against autodiff (time and XLA's planned memory)."""
    lines = [
        "| config | network | jbp step | autodiff step | jbp / autodiff | same, CPU time "
        "| jbp / autodiff+donate (CPU time) | temp MiB jbp / autodiff | peak MiB jbp / autodiff "
        "| fit steps/s | agree (max rel. diff) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r["agreement"]["autodiff"]
        lines.append(
            f"| {r['config']} | {r['description']}, batch {r['batch']} | {_ms(r['jbp']['step_s'])} "
            f"| {_ms(r['autodiff']['step_s'])} | **{r['jbp']['vs_autodiff']:.2f}** "
            f"| {r['jbp']['vs_autodiff_cpu']:.2f} "
            f"| {r['jbp']['vs_autodiff_donate']:.2f} ({r['jbp']['vs_autodiff_donate_cpu']:.2f}) "
            f"| {_mib(r['jbp']['temp_mib'])} / {_mib(r['autodiff']['temp_mib'])} "
            f"| {_mib(r['jbp']['peak_mib'])} / {_mib(r['autodiff']['peak_mib'])} "
            f"| {r['fit_steps_per_s']:.3g} "
            f"| {'yes' if a['agree'] else 'NO'} ({max(a['loss_rel_diff'], a['params_rel_diff']):.1e}) |"
        )
    return lines


def table(results: list, info: dict) -> str:
    layered = [r for r in results if r.get("kind") == "layers"]
    results = [r for r in results if r.get("kind") != "layers"]
    if not results:
        return "\n".join(layers_table(layered))
    has_torch = info["torch"] is not None
    lines = [
        "| config | jbp step | autodiff step | jbp / autodiff | same, CPU time "
        "| jbp / autodiff+donate (CPU time) | NumPy / jbp | PyTorch / jbp | jbp GFLOP/s "
        "| % of GEMM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        torch_col = f"{r['torch']['vs_jbp']:.2f}x" if has_torch else "n/a"
        lines.append(
            f"| {r['config']} | {_ms(r['jbp']['step_s'])} | {_ms(r['autodiff']['step_s'])} "
            f"| **{r['jbp']['vs_autodiff']:.2f}** | {r['jbp']['vs_autodiff_cpu']:.2f} "
            f"| {r['jbp']['vs_autodiff_donate']:.2f} ({r['jbp']['vs_autodiff_donate_cpu']:.2f}) "
            f"| {r['numpy']['vs_jbp']:.2f}x | {torch_col} | {r['jbp']['gflops']:.3g} "
            f"| {r['jbp']['pct_gemm']:.2g}% |"
        )
    lines += [
        "",
        "| config | fit steps/s | dispatched steps/s | fit / PyTorch per-step rate "
        "| compile jbp / autodiff | MB accessed jbp / autodiff | temp MiB jbp / autodiff "
        "| peak MiB jbp / autodiff | agree (max rel. diff) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        vs_torch = (f"{r['fit_steps_per_s'] * r['torch']['step_s']:.3g}x" if has_torch
                    else "n/a")
        worst = max(max(a["loss_rel_diff"], a["params_rel_diff"]) for a in r["agreement"].values())
        ok = all(a["agree"] for a in r["agreement"].values())
        lines.append(
            f"| {r['config']} | {r['fit_steps_per_s']:.3g} | {r['dispatched_steps_per_s']:.3g} "
            f"| {vs_torch} | {r['jbp']['compile_s']:.2f} s / {r['autodiff']['compile_s']:.2f} s "
            f"| {_mib(r['jbp']['accessed_mb'])} / {_mib(r['autodiff']['accessed_mb'])} "
            f"| {_mib(r['jbp']['temp_mib'])} / {_mib(r['autodiff']['temp_mib'])} "
            f"| {_mib(r['jbp']['peak_mib'])} / {_mib(r['autodiff']['peak_mib'])} "
            f"| {'yes' if ok else 'NO'} ({worst:.1e}) |"
        )
    gemm = ", ".join(f"{r['config']} {r['gemm_gflops']:.0f}" for r in results)
    lines += [
        "",
        f"fp32 GEMM {GEMM_N}² (`jnp.dot`, {info['backend']}), GFLOP/s measured in each "
        f"configuration's rounds: {gemm}.",
    ]
    if not has_torch:
        lines.append('PyTorch not installed: its columns are skipped (pip install -e ".[bench]").')
    if layered:
        lines += ["", *layers_table(layered)]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few, short rounds")
    parser.add_argument("--out", help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; expected some of {', '.join(CONFIGS)}")

    info = machine()
    info["load_before"] = _load()
    results = []
    for name in names:
        t = time.perf_counter()
        results.append(run_config(CONFIGS[name], args.quick))
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    info["load_after"] = _load()
    report = {"machine": info, "quick": args.quick, "results": results,
              "table": table(results, info)}
    print(f"{info['cpu']} ({info['cpu_count']} cores), JAX {info['jax']} on "
          f"{info['backend']} ({info['device']}); load average {info['load_before']} before, "
          f"{info['load_after']} after\n")
    print(report["table"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
