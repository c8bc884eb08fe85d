"""Benchmark: one training step of an LSTM, jbp's hand-derived BPTT against autodiff and PyTorch.

    python scripts/bench_lstm.py                          # the four configurations
    python scripts/bench_lstm.py --quick                  # h128-t64 only, a few rounds
    python scripts/bench_lstm.py --configs h512-t256 --out runs/bench_lstm.json

Each configuration is one LSTM layer (``jbp.layers.LSTM``, batch 32, input size = hidden
size ``H``, ``T`` steps, the whole sequence as output) under the loss
``0.5 · mean((y − target)²)``, and one step of plain SGD. It times, in this one process,
interleaved round after round in a random order each round, after a warm-up:

- ``jbp``: the layer's forward (a ``lax.scan``) and its hand-derived backward (a reverse
  ``lax.scan``, the input projections and the weight gradients of all steps as one
  product each), then the update, under ``jax.jit`` with the parameters donated;
- ``autodiff``: ``jax.value_and_grad`` of the same forward (the same scan), then the
  same update, under ``jax.jit`` with the same donation;
- ``torch``: ``torch.nn.LSTM`` (batch first) with ``torch.optim.SGD``, eager, on the CPU,
  from the same weights (skipped with a note when torch is not installed: ``pip install
  -e ".[bench]"``).

The table shows medians per step; the ratios are medians over rounds of the ratio of the
two implementations' samples in that round (wall clock, and the process's CPU time, which
other processes on a shared machine disturb less). ``temp MiB`` is the temporary memory
XLA plans for each compiled step (``compiled.memory_analysis()``). Before timing, each
implementation takes one step from the same parameters and data; the loss and the new
``W``, ``U``, ``b`` must agree with jbp's within float32 tolerance (PyTorch's
``bias_ih``; its ``bias_hh`` starts at zero).

Uses only jbp's public API, jax, numpy and (optionally) torch; the timing loop is
``scripts/bench.py``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jbp.layers import LSTM, RecurrentParams

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Timed, interleave, machine, paired_ratio  # noqa: E402

try:
    import torch
except ImportError:  # the optional extra: pip install -e ".[bench]"
    torch = None

LR = 0.01
#: Agreement of one step with jbp's, relative to the largest entry: float32 tolerance.
AGREE_RTOL = 1e-4


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    hidden: int
    steps: int
    batch: int = 32

    @property
    def features(self) -> int:
        return self.hidden


CONFIGS = {c.name: c for c in (
    Config("h128-t64", 128, 64), Config("h128-t256", 128, 256),
    Config("h512-t64", 512, 64), Config("h512-t256", 512, 256),
    Config("tiny", 8, 4, batch=4),  # a smoke test of the script
)}
DEFAULT = ("h128-t64", "h128-t256", "h512-t64", "h512-t256")
QUICK = ("h128-t64",)


def problem(config: Config, seed: int = 0):
    """``(layer, params, x, target)`` in float32: the layer's init, ``x`` and ``target`` ~ N(0, 1)."""
    layer = LSTM(config.hidden)
    params, _ = layer.init(jax.random.key(seed), (config.steps, config.features), jnp.float32)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(config.batch, config.steps, config.features)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(config.batch, config.steps, config.hidden)), jnp.float32)
    return layer, params, x, target


def _loss(y, target):
    return 0.5 * jnp.mean((y - target) ** 2)


def _sgd(params, grads):
    return jax.tree.map(lambda p, g: p - LR * g, params, grads)


def jbp_step(layer):
    """The hand-derived step: forward, the output delta of the mean squared error, backward."""

    def step(params, x, target):
        y, residuals = layer.forward(params, x)
        dy = (y - target) / y.size  # dL/dy of 0.5 · mean((y − target)²)
        grads, _ = layer.backward(params, residuals, dy)
        return _sgd(params, grads), _loss(y, target)

    return jax.jit(step, donate_argnums=0)


def autodiff_step(layer):
    """``jax.value_and_grad`` of the same forward."""

    def step(params, x, target):
        loss, grads = jax.value_and_grad(lambda p: _loss(layer.forward(p, x)[0], target))(params)
        return _sgd(params, grads), loss

    return jax.jit(step, donate_argnums=0)


def torch_model(params, config: Config):
    """``(lstm, optimizer)``: ``torch.nn.LSTM`` with jbp's weights (same gate order i, f, g, o)."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(config.features, config.hidden, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(np.array(params.W)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(np.array(params.U)))
        lstm.bias_ih_l0.copy_(torch.from_numpy(np.array(params.b)))
        lstm.bias_hh_l0.zero_()
    return lstm, torch.optim.SGD(lstm.parameters(), lr=LR)


def torch_step(lstm, optimizer, x, target):
    x, target = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(target))

    def step(state):
        optimizer.zero_grad(set_to_none=True)
        y, _ = lstm(x)
        loss = 0.5 * ((y - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        return state, loss.detach()

    return step


def _copy(params):
    return jax.tree.map(jnp.array, params)


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def agreement(config: Config) -> dict:
    """One step of each implementation from the same start, against jbp's."""
    layer, params, x, target = problem(config)
    want_params, want_loss = jbp_step(layer)(_copy(params), x, target)
    got = {"autodiff": autodiff_step(layer)(_copy(params), x, target)}
    if torch is not None:
        lstm, optimizer = torch_model(params, config)
        _, loss = torch_step(lstm, optimizer, x, target)(None)
        new = RecurrentParams(W=lstm.weight_ih_l0.detach().numpy(), U=lstm.weight_hh_l0.detach().numpy(),
                              b=lstm.bias_ih_l0.detach().numpy())
        got["torch"] = (new, loss.numpy())
    out = {}
    for name, (new, loss) in got.items():
        loss_diff = _rel(loss, want_loss)
        param_diff = max(_rel(g, w) for g, w in zip(new, want_params))
        out[name] = {"loss_rel_diff": loss_diff, "params_rel_diff": param_diff,
                     "agree": loss_diff <= AGREE_RTOL and param_diff <= AGREE_RTOL}
    return out


def temp_mib(jitted, params, x, target):
    memory = jitted.lower(params, x, target).compile().memory_analysis()
    return None if memory is None else memory.temp_size_in_bytes / 2**20


def run_config(config: Config, quick: bool) -> dict:
    layer, params, x, target = problem(config)
    steps = {"jbp": jbp_step(layer), "autodiff": autodiff_step(layer)}
    result = {"config": config.name, "hidden": config.hidden, "steps": config.steps, "batch": config.batch,
              "features": config.features, "agreement": agreement(config)}
    impls = {name: Timed(lambda p, f=f: f(p, x, target), _copy(params)) for name, f in steps.items()}
    if torch is not None:
        impls["torch"] = Timed(torch_step(*torch_model(params, config), x, target), None)
    for impl in impls.values():
        impl.calibrate(0.05 if quick else 0.2, 1 if config.name != "tiny" else 20)
    rounds = interleave(impls, 3 if quick else 7, 5 if quick else 40, 10.0 if quick else 120.0)
    result["rounds"] = rounds
    for name, impl in impls.items():
        result[name] = {"step_s": statistics.median(impl.samples), "cpu_s": statistics.median(impl.cpu_samples)}
    for name, jitted in steps.items():
        result[name]["temp_mib"] = temp_mib(jitted, _copy(params), x, target)
    jb = impls["jbp"]
    for other in impls:
        if other != "jbp":
            result["jbp"][f"vs_{other}"] = paired_ratio(jb.samples, impls[other].samples)
            result["jbp"][f"vs_{other}_cpu"] = paired_ratio(jb.cpu_samples, impls[other].cpu_samples)
    return result


def _ms(s):
    return f"{s * 1e3:.3g} ms"


def table(results: list) -> str:
    lines = [
        "| config | jbp step | autodiff step | torch step | jbp / autodiff (CPU time) | jbp / torch (CPU time) "
        "| temp MiB jbp / autodiff | agree (max rel. diff) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        j, a = r["jbp"], r["autodiff"]
        t = r.get("torch")
        vs_torch = f"{j['vs_torch']:.2f}x ({j['vs_torch_cpu']:.2f}x)" if t else "n/a"
        agree = ", ".join(f"{k} {'yes' if v['agree'] else 'NO'} ({max(v['loss_rel_diff'], v['params_rel_diff']):.0e})"
                          for k, v in r["agreement"].items())
        lines.append(
            f"| {r['config']} (B {r['batch']}, H {r['hidden']}, T {r['steps']}) | {_ms(j['step_s'])} "
            f"| {_ms(a['step_s'])} | {_ms(t['step_s']) if t else 'n/a'} "
            f"| {j['vs_autodiff']:.2f}x ({j['vs_autodiff_cpu']:.2f}x) "
            f"| {vs_torch} "
            f"| {j['temp_mib']:.3g} / {a['temp_mib']:.3g} | {agree} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="h128-t64 only (unless --configs), a few rounds")
    parser.add_argument("--configs", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    names = args.configs.split(",") if args.configs else (QUICK if args.quick else DEFAULT)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown --configs {', '.join(unknown)}; expected some of {', '.join(CONFIGS)}")
    if torch is None:
        print("note: torch is not installed, so the torch column is skipped (pip install -e \".[bench]\")")
    info = {**machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "load_1min": round(os.getloadavg()[0], 2), "command": " ".join(["python", *sys.argv]),
            "quick": args.quick}
    results = [run_config(CONFIGS[n], args.quick) for n in names]
    report = {"machine": info, "results": results, "table": table(results)}
    print(f"{info['date']}, {info['cpu']} ({info['cpu_count']} cores, load {info['load_1min']}), "
          f"jax {info['jax']}, torch {info['torch']}")
    print(report["table"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
