"""A character-level GPT on Shakespeare's complete works, in nanoGPT's CPU configuration,
trained by the hand-derived backward and again by autodiff on exactly the same batches.

The jbp run is the command line's: ``jbp train --model gpt --dataset shakespeare`` with
its defaults (4 blocks, 4 heads, 128 features, context 64, batch 12, 2,000 steps, Adam
1e-3 (``optax.adam``: no weight decay), no dropout, seed 0; ``--no-check``: the autodiff
replay checks every step), saved in
``out/gpt_shakespeare/`` so that ``jbp generate`` samples from it. The autodiff run then
starts from the same initial parameters (``net.init`` of the run's seed) and replays the
same batches (``jbp.cli.lm.train_steps``, which draws step ``i``'s windows from
``fold_in(key, i)``) with ``jax.value_and_grad(net.loss)`` in place of the hand-derived
gradients, the same optimizer and the same compiled chunks of ``--eval-every`` steps.

Both record the training loss of every step and the validation loss after every chunk
(on the command line's fixed validation windows, the first 64 of the validation text),
and at the end the validation loss over the whole validation split. Times: each chunk's
wall time (the first includes compilation), then ``--repeats`` more chunks of each,
interleaved from the same parameters, for the steady step time.

    python experiments/gpt_shakespeare.py [--quick]

Writes ``out/gpt_shakespeare.md``, ``out/gpt_shakespeare.json``, the run
``out/gpt_shakespeare/`` and ``figures/gpt_shakespeare.png``. ``--quick`` is a dry run:
50 steps in chunks of 25, 512 validation windows at the end, its run and figure in ``out/``.
"""

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp
from common import FIGURES, out_dir, write_table
from jbp.cli import main as jbp_cli
from jbp.cli.lm import VAL_WINDOWS, train_steps
from jbp.datasets import text
from jbp.models import gpt

CONTEXT, BLOCKS, HEADS, FEATURES, BATCH, LR, SEED = 64, 4, 4, 128, 12, 1e-3, 0
PROMPT, TOKENS, TEMPERATURE = "ROMEO:", 300, 0.8


def train_jbp(run: str, steps: int, eval_every: int) -> dict:
    """The hand-derived run, by the command line; its ``metrics.json``."""
    argv = ["train", "--model", "gpt", "--dataset", "shakespeare", "--context", str(CONTEXT), "--blocks",
            str(BLOCKS), "--heads", str(HEADS), "--features", str(FEATURES), "--batch-size", str(BATCH),
            "--optimizer", "adam", "--lr", str(LR), "--seed", str(SEED), "--steps", str(steps),
            "--eval-every", str(eval_every), "--out", run, "--overwrite", "--no-cache", "--no-check"]
    print("jbp " + " ".join(argv), flush=True)
    if jbp_cli(argv) != 0:
        raise SystemExit("jbp train failed")
    with open(os.path.join(run, "metrics.json")) as f:
        return json.load(f)


def replay_autodiff(net, optimizer, autodiff, params, ids, key, steps, eval_every, val_loss):
    """The same steps and chunks with ``autodiff``'s gradients: per-step losses, the
    validation curve, each chunk's seconds and the final parameters."""
    opt_state, losses, curve, seconds = optimizer.init(params), [], [[0, val_loss(params)]], []
    for start in range(0, steps, eval_every):
        todo = min(eval_every, steps - start)
        began = time.perf_counter()
        params, opt_state, chunk, _ = train_steps(net, optimizer, todo, BATCH, params, opt_state, ids, key, start,
                                               loss_and_grad=autodiff)
        chunk = np.asarray(chunk)
        seconds.append(time.perf_counter() - began)
        losses += chunk.tolist()
        curve.append([start + todo, val_loss(params)])
        print(f"autodiff step {start + todo}/{steps}: train loss {chunk.mean():.4f}, "
              f"validation loss {curve[-1][1]:.4f}, {seconds[-1]:.1f} s", flush=True)
    return losses, curve, seconds, params


def interleaved_ms_per_step(net, optimizer, autodiff, params, ids, key, steps, repeats) -> dict:
    """Median ms per step of ``repeats`` compiled chunks of ``steps`` steps of each arm,
    alternating which runs first, all from the same parameters."""
    opt_state, times = optimizer.init(params), {"jbp": [], "autodiff": []}
    arms = {"jbp": None, "autodiff": autodiff}
    for name, fn in arms.items():  # compile (jbp's optimizer object is not the CLI's) outside the timing
        jax.block_until_ready(train_steps(net, optimizer, steps, BATCH, params, opt_state, ids, key, 0,
                                          loss_and_grad=fn))
    for r in range(repeats):
        for name in (("jbp", "autodiff") if r % 2 == 0 else ("autodiff", "jbp")):
            began = time.perf_counter()
            jax.block_until_ready(train_steps(net, optimizer, steps, BATCH, params, opt_state, ids, key, 0,
                                              loss_and_grad=arms[name]))
            times[name].append(1e3 * (time.perf_counter() - began) / steps)
    return {name: float(np.median(t)) for name, t in times.items()} | {"all": times}


def full_validation(net, params, ids, windows: int | None, batch: int = 256) -> float:
    """The mean loss over the validation split's windows (``windows`` of them, or all)."""
    x, y = text.windows(ids, CONTEXT)
    x, y = x[:windows], y[:windows]
    loss = jax.jit(net.loss)
    total = sum(float(loss(params, x[i:i + batch], y[i:i + batch])) * len(x[i:i + batch])
                for i in range(0, len(x), batch))
    return total / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a dry run: 50 steps, chunks of 25")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing chunks of each arm")
    args = parser.parse_args(argv)
    steps, eval_every, val_windows = (50, 25, 512) if args.quick else (2000, 100, None)
    load_before = os.getloadavg()
    run = str(out_dir() / ("gpt_shakespeare_quick" if args.quick else "gpt_shakespeare"))
    began = time.perf_counter()
    m = train_jbp(run, steps, eval_every)
    cli_seconds = time.perf_counter() - began

    data = text.shakespeare()
    net = gpt(data.vocab.size, CONTEXT, BLOCKS, HEADS, FEATURES)
    init_key, data_key = jax.random.split(jax.random.key(SEED))  # as the command line splits the seed
    params0 = net.init(init_key, jnp.float32)
    optimizer = optax.adam(LR)
    autodiff = jax.value_and_grad(net.loss)  # one function object: one compilation
    x_val, y_val = (a[:VAL_WINDOWS] for a in text.windows(data.val, CONTEXT))
    val_fn = jax.jit(net.loss)
    ids = jnp.asarray(data.train)
    began = time.perf_counter()
    ad_losses, ad_curve, ad_seconds, ad_params = replay_autodiff(
        net, optimizer, autodiff, params0, ids, data_key, steps, eval_every,
        lambda p: float(val_fn(p, x_val, y_val)))
    ad_wall = time.perf_counter() - began

    jbp_params = jbp.load_checkpoint(os.path.join(run, "checkpoint.npz")).params
    timing = interleaved_ms_per_step(net, optimizer, autodiff, params0, ids, data_key, eval_every, args.repeats)
    full_val = {"jbp": full_validation(net, jbp_params, data.val, val_windows),
                "autodiff": full_validation(net, ad_params, data.val, val_windows)}
    load_after = os.getloadavg()

    jbp_losses = np.asarray(m["train_loss"])
    delta = np.abs(jbp_losses - np.asarray(ad_losses))
    val_delta = max(abs(a[1] - b[1]) for a, b in zip(m["val_loss_curve"], ad_curve))
    param_delta = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                      zip(jax.tree_util.tree_leaves(jbp_params), jax.tree_util.tree_leaves(ad_params)))
    tokens = eval_every * BATCH * CONTEXT
    jbp_seconds = [tokens / t for t in m["tokens_per_s"]]  # each chunk's wall time, as the CLI measured it
    arms = {"jbp": (jbp_seconds, m["val_loss_curve"], jbp_losses), "autodiff": (ad_seconds, ad_curve, ad_losses)}
    rows = []
    for name, (seconds, curve, losses) in arms.items():
        steady = float(np.median(seconds[1:] if len(seconds) > 1 else seconds)) / eval_every
        rows.append((name if name == "autodiff" else "jbp (hand-derived)",
                     f"{np.mean(losses[-eval_every:]):.4f}", f"{curve[-1][1]:.4f}", f"{full_val[name]:.4f}",
                     f"{1e3 * steady:.1f}", f"{timing[name]:.1f}", f"{1e3 / timing[name]:.1f}",
                     f"{seconds[0] - steady * eval_every:.1f}", f"{sum(seconds):.0f}"))
    today = datetime.date.today().isoformat()
    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, jax {jax.__version__}"
    load = f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    write_table(
        "gpt_shakespeare",
        f"GPT on Shakespeare's complete works ({len(data.train):,} training characters, vocabulary "
        f"{data.vocab.size}), {BLOCKS} blocks, {HEADS} heads, {FEATURES} features, context {CONTEXT}, batch "
        f"{BATCH}, {steps} steps of Adam {LR:g}, no dropout, seed {SEED}; {today}, {machine}, {load}.\n"
        f"Train loss: the mean of the last {eval_every} steps. Validation: the first {VAL_WINDOWS} windows "
        f"(the curve's last point) and {'all' if val_windows is None else val_windows} windows of the "
        f"validation split. max |Δ loss| over the {steps} steps: {delta.max():.2e} (step 1: {delta[0]:.1e}; "
        f"first {eval_every} steps: {delta[:eval_every].max():.1e}); max |Δ validation loss|: {val_delta:.2e}; "
        f"max |Δ parameter| at the end: {param_delta:.2e}. Wall time of the jbp command: {cli_seconds:.0f} s; "
        f"autodiff replay: {ad_wall:.0f} s.",
        ("gradients", "train loss", f"val loss ({VAL_WINDOWS} windows)", "val loss (split)",
         "ms/step (in training)", f"ms/step (interleaved, median of {args.repeats})", "steps/s (interleaved)",
         "compile s (first chunk - median)", "training s (chunks)"),
        rows,
    )
    sample = generate_sample(run)
    record = {"date": today, "machine": machine, "load": [load_before, load_after], "steps": steps,
              "eval_every": eval_every, "jbp_train_loss": jbp_losses.tolist(), "autodiff_train_loss": ad_losses,
              "jbp_val_curve": m["val_loss_curve"], "autodiff_val_curve": ad_curve, "full_val": full_val,
              "max_abs_delta_loss": float(delta.max()), "max_abs_delta_val": val_delta,
              "max_abs_delta_param": param_delta, "chunk_seconds": {"jbp": jbp_seconds, "autodiff": ad_seconds},
              "interleaved_ms_per_step": timing, "cli_seconds": cli_seconds, "autodiff_seconds": ad_wall,
              "sample": sample}
    (out_dir() / "gpt_shakespeare.json").write_text(json.dumps(record))
    FIGURES.mkdir(exist_ok=True)
    figure = out_dir() / "gpt_shakespeare_quick.png" if args.quick else FIGURES / "gpt_shakespeare.png"
    plot(figure, jbp_losses, np.asarray(ad_losses), m["val_loss_curve"], ad_curve, delta)


def generate_sample(run: str) -> str:
    """``jbp generate``'s sample from the run, printed and returned."""
    argv = ["generate", "--out", run, "--prompt", PROMPT, "--tokens", str(TOKENS), "--temperature",
            str(TEMPERATURE), "--seed", "0"]
    print("jbp " + " ".join(argv), flush=True)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = jbp_cli(argv)
    if status != 0:
        raise SystemExit("jbp generate failed")
    print(printed.getvalue(), flush=True)
    return printed.getvalue()


def plot(path, jbp_losses, ad_losses, jbp_curve, ad_curve, delta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, dax) = plt.subplots(1, 2, figsize=(11, 4))
    step = np.arange(1, len(jbp_losses) + 1)
    ax.plot(step, jbp_losses, lw=0.6, color="tab:blue", label="training, hand-derived (jbp)")
    ax.plot(step, ad_losses, lw=0.6, color="tab:orange", ls="--", label="training, jax.value_and_grad")
    ax.plot(*np.asarray(jbp_curve).T, "o-", color="navy", ms=3, label="validation, hand-derived")
    ax.plot(*np.asarray(ad_curve).T, "x--", color="darkred", ms=5, label="validation, autodiff")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_ylim(top=min(4.5, ax.get_ylim()[1]))
    ax.legend()
    differ = delta > 0
    dax.semilogy(step[differ], delta[differ], ".", ms=2, color="tab:gray")
    dax.set_title(f"equal at {int((~differ).sum())} of {len(delta)} steps; the others:", fontsize=10)
    dax.set_xlabel("step")
    dax.set_ylabel("|loss(jbp) - loss(autodiff)|, same batch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
