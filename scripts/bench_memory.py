"""Memory and speed of hand-derived backwards where they save memory: attention, the
language-model head, and a whole GPT step.

The same forward under several backwards:

- ``jbp``: jbp's hand-derived backward (attention keeping each row's log-sum-exp and
  recomputing ``P`` block by block; the fused head forming its gradient chunk by chunk
  in the loss's pass);
  ``jbp-probs``: attention keeping ``P``.
- ``autodiff``: ``jax.value_and_grad`` of the plain forward.
- ``checkpoint``: ``jax.value_and_grad`` with ``jax.checkpoint`` around chunks of
  queries (attention) or tokens (head), the chunks run by ``lax.map``: the best plain
  autodiff does (Rabe & Staats 2021).
- ``dpa``: autodiff of ``jax.nn.dot_product_attention`` (attention only).

Columns: XLA's temp memory of the compiled step (``compiled.memory_analysis()``, compile
only, cheap), and with ``--time`` the step's best wall time; with ``--rss`` each
measurement (compiled and run) is made in a fresh subprocess whose peak resident memory
is reported.

Run from the repository root:

    PYTHONPATH=$PWD python scripts/bench_memory.py --quick          # a smoke run
    PYTHONPATH=$PWD python scripts/bench_memory.py                  # memory, full sweeps
    PYTHONPATH=$PWD python scripts/bench_memory.py --time --rss     # plus time and RSS (slow)
    PYTHONPATH=$PWD python scripts/bench_memory.py --time --only gpt --sizes gpt:512x4   # chosen sizes
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jbp
from jbp.layers import attention as attention_eqs
from jbp.layers import lm_head as head_eqs
from jbp.models import gpt

HEAD = 64  # attention's head size
FEATURES = 128  # the loss head's features
MiB = 2**20


# --- Attention: (Q, K, V) (BH, 1, T, d) -> O, loss = Σ O ⊙ G. ------------------------


def naive_attention(Q, K, V):
    return jnp.einsum("bhij,bhjd->bhid", attention_eqs.attention_probs(Q, K), V)


def checkpointed_attention(Q, K, V, chunk):
    """Queries in chunks, each chunk's attention under ``jax.checkpoint``: its ``(chunk, T)``
    probabilities are recomputed in the backward instead of kept."""
    B, H, T, d = Q.shape
    n = T // chunk

    @jax.checkpoint
    def one(args):
        q, i = args
        S = jnp.einsum("bhid,bhjd->bhij", q, K) / math.sqrt(d)
        S = jnp.where(attention_eqs.causal(i * chunk + jnp.arange(chunk), jnp.arange(T)), S, -jnp.inf)
        return jnp.einsum("bhij,bhjd->bhid", jax.nn.softmax(S, axis=-1), V)

    Q_chunks = Q.reshape(B, H, n, chunk, d).transpose(2, 0, 1, 3, 4)
    O = lax.map(one, (Q_chunks, jnp.arange(n)))
    return O.transpose(1, 2, 0, 3, 4).reshape(B, H, T, d)


def dpa_attention(Q, K, V):
    t = lambda a: a.transpose(0, 2, 1, 3)  # (B, H, T, d) <-> (B, T, H, d)
    return t(jax.nn.dot_product_attention(t(Q), t(K), t(V), is_causal=True))


def attention_steps(block, chunk):
    """``{method: step(Q, K, V, G) -> (loss, (dQ, dK, dV))}``."""
    def autodiff(forward):
        return jax.value_and_grad(lambda Q, K, V, G: jnp.sum(forward(Q, K, V) * G), argnums=(0, 1, 2))

    def jbp_lse(Q, K, V, G):
        b = min(block, Q.shape[2])
        O, lse = attention_eqs.blocked_forward(Q, K, V, b)
        return jnp.sum(O * G), attention_eqs.blocked_backward(Q, K, V, O, lse, G, b)

    def jbp_probs(Q, K, V, G):
        P = attention_eqs.attention_probs(Q, K)
        O = jnp.einsum("bhij,bhjd->bhid", P, V)
        return jnp.sum(O * G), attention_eqs.attention_backward(P, Q, K, V, G)

    return {
        "jbp": jbp_lse,
        "jbp-probs": jbp_probs,
        "autodiff": autodiff(naive_attention),
        "checkpoint": autodiff(lambda Q, K, V: checkpointed_attention(Q, K, V, min(chunk, Q.shape[2]))),
        "dpa": autodiff(dpa_attention),
    }


def attention_args(bh, T):
    shape = jax.ShapeDtypeStruct((bh, 1, T, HEAD), jnp.float32)
    return (shape,) * 4


# --- The head: h (N, D), W (V, D), b (V,), targets (N,) -> mean cross-entropy. ------


def naive_head_loss(W, b, h, t):
    z = h @ W.T + b
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, t[:, None], axis=-1)[:, 0])


def checkpointed_head_loss(W, b, h, t, chunk):
    n = h.shape[0] // chunk

    @jax.checkpoint
    def one(args):
        h_c, t_c = args
        z = h_c @ W.T + b
        return jnp.sum(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, t_c[:, None], axis=-1)[:, 0])

    return jnp.sum(lax.map(one, (h.reshape(n, chunk, -1), t.reshape(n, chunk)))) / h.shape[0]


def head_steps(chunk):
    """``{method: step(W, b, h, t) -> (loss, (dW, db, dh))}``; ``chunk`` token positions
    per chunk, by default the fused head's own (2²⁰ logits' worth), for both jbp and
    the checkpointed autodiff."""
    rows = lambda W, h: min(head_eqs.chunk_rows(W.shape[0], chunk), h.shape[0])

    def jbp_fused(W, b, h, t):
        c = rows(W, h)
        loss, grads, dh = head_eqs.fused_cross_entropy(jbp.Layer(W=W, b=b), h, t, c)
        return loss, (grads.W, grads.b, dh)

    autodiff = lambda f: jax.value_and_grad(f, argnums=(0, 1, 2))
    return {
        "jbp": jbp_fused,
        "autodiff": autodiff(naive_head_loss),
        "checkpoint": autodiff(lambda W, b, h, t: checkpointed_head_loss(W, b, h, t, rows(W, h))),
    }


def head_args(N, V):
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    return f32(V, FEATURES), f32(V), f32(N, FEATURES), jax.ShapeDtypeStruct((N,), jnp.int32)


# --- A whole GPT step. ------------------------------------------------------------------


def gpt_net(T):
    return gpt(vocab=256, context=T, blocks=2, heads=4, features=256, block=128)


def gpt_steps():
    return {
        "jbp": lambda net, p, x, y: net.loss_and_grad(p, x, y),
        "autodiff": lambda net, p, x, y: jax.value_and_grad(net.loss)(p, x, y),
    }


def gpt_args(T, batch):
    net = gpt_net(T)
    params = net.param_shapes(jnp.float32)
    ids = jax.ShapeDtypeStruct((batch, T), jnp.int32)
    return net, (params, ids, ids)


# --- Measurement. ------------------------------------------------------------------------


def temp_mib(step, args, static=()):
    compiled = jax.jit(step, static_argnums=static).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes / MiB


def concrete(args, seed=0):
    rng = np.random.default_rng(seed)

    def draw(s):
        if jnp.issubdtype(s.dtype, jnp.integer):
            return jnp.asarray(rng.integers(0, 128, s.shape), s.dtype)
        return jnp.asarray(rng.normal(size=s.shape) * 0.1, s.dtype)

    return jax.tree.map(draw, args)


def best_s(step, args, repeats, static=()):
    f = jax.jit(step, static_argnums=static)
    jax.block_until_ready(f(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def measure(kind, method, size, block, chunk, head_chunk, timing, repeats):
    """One measurement: ``{"temp_mib", "step_s"?}``."""
    if kind == "attention":
        step, args, static = attention_steps(block, chunk)[method], attention_args(*size), ()
    elif kind == "head":
        step, args, static = head_steps(head_chunk)[method], head_args(*size), ()
    else:
        net, args = gpt_args(*size)
        step, args, static = gpt_steps()[method], (net, *args), (0,)
    out = {"temp_mib": temp_mib(step, args, static)}
    if timing:
        values = (net, *concrete(args[1:])) if kind == "gpt" else concrete(args)
        out["step_s"] = best_s(step, values, repeats, static)
    return out


def measure_in_subprocess(kind, method, size, block, chunk, head_chunk, timing, repeats):
    """:func:`measure` in a fresh process, with its peak resident memory."""
    one = [kind, method, list(size), block, chunk, head_chunk, timing, repeats]
    cmd = [sys.executable, __file__, "--one", json.dumps(one)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def sweeps(quick):
    if quick:
        return {"attention": [(4, 256)], "head": [(512, 8192)], "gpt": [(256, 2)]}
    return {
        "attention": [(bh, T) for T in (256, 1024, 4096) for bh in (4, 8, 16, 32)],
        "head": [(N, V) for V in (8192, 32768, 65536) for N in (512, 1024, 2048, 4096, 8192)],
        "gpt": [(1024, 4), (2048, 2)],
    }


METHODS = {
    "attention": ("jbp", "jbp-probs", "autodiff", "checkpoint", "dpa"),
    "head": ("jbp", "autodiff", "checkpoint"),
    "gpt": ("jbp", "autodiff"),
}
SIZE_NAMES = {"attention": ("B·H", "T"), "head": ("N", "V"), "gpt": ("T", "batch")}


def table(kind, rows, timing, rss):
    """A Markdown table: per size, each method's temp MiB (and time, RSS), and the ratios
    of jbp to autodiff."""
    methods = METHODS[kind]
    head = [*SIZE_NAMES[kind]] + [f"{m} MiB" for m in methods] + ["jbp/autodiff mem"]
    if timing:
        head += [f"{m} ms" for m in methods] + ["jbp/autodiff time"]
    if rss:
        head += [f"{m} RSS MiB" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, r in rows:
        cells = [str(s) for s in size] + [f"{r[m]['temp_mib']:.1f}" for m in methods]
        cells.append(f"{r['jbp']['temp_mib'] / max(r['autodiff']['temp_mib'], 1e-9):.3f}")
        if timing:
            cells += [f"{1e3 * r[m]['step_s']:.1f}" for m in methods]
            cells.append(f"{r['jbp']['step_s'] / r['autodiff']['step_s']:.2f}")
        if rss:
            cells += [f"{r[m]['rss_mib']:.0f}" for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small size per sweep (a smoke run)")
    parser.add_argument("--only", choices=tuple(METHODS), action="append", help="run only these sweeps")
    parser.add_argument("--time", action="store_true", help="also time each step (best of --repeats)")
    parser.add_argument("--rss", action="store_true",
                        help="each measurement in its own process, with peak RSS (implies --time: the steps run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block", type=int, default=128, help="attention's key block (jbp)")
    parser.add_argument("--chunk", type=int, default=256, help="query chunk of checkpointed attention")
    parser.add_argument("--head-chunk", type=int, default=None,
                        help="token positions per chunk of the head (jbp and checkpoint); default 2^20 logits' worth")
    parser.add_argument("--sizes", action="append", metavar="KIND:AxB,...",
                        help="these sizes in place of KIND's sweep, e.g. attention:8x1024,4x4096 (B·H x T), "
                             "head:512x32768 (N x V), gpt:1024x4 (T x batch)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # a subprocess of --rss
        kind, method, size, block, chunk, head_chunk, timing, repeats = json.loads(args.one)
        out = measure(kind, method, tuple(size), block, chunk, head_chunk, timing, repeats)
        out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return out
    args.time = args.time or args.rss  # a peak RSS needs the steps run, not only compiled
    run = measure_in_subprocess if args.rss else measure
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "jax": jax.__version__,
                    "python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "command": " ".join(["scripts/bench_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "block": args.block, "chunk": args.chunk, "head_chunk": args.head_chunk, "results": {}, "tables": {},
    }
    chosen = sweeps(args.quick)
    for spec in args.sizes or ():
        kind, _, sizes = spec.partition(":")
        if kind not in METHODS or not sizes:
            parser.error(f"--sizes must be KIND:AxB,... with KIND one of {', '.join(METHODS)}, got {spec!r}")
        try:
            chosen[kind] = [tuple(int(v) for v in size.split("x", 1)) for size in sizes.split(",")]
        except ValueError:
            parser.error(f"--sizes {spec!r}: each size must be two integers AxB")
    for kind, sizes in chosen.items():
        if args.only and kind not in args.only:
            continue
        rows = []
        for size in sizes:
            r = {m: run(kind, m, size, args.block, args.chunk, args.head_chunk, args.time, args.repeats)
                 for m in METHODS[kind]}
            rows.append((size, r))
            print(kind, size, {m: round(v["temp_mib"], 1) for m, v in r.items()}, file=sys.stderr, flush=True)
        report["results"][kind] = [{"size": list(s), **r} for s, r in rows]
        report["tables"][kind] = table(kind, rows, args.time, args.rss)
        print(f"\n{kind} (temp memory in MiB from compiled.memory_analysis())\n")
        print(report["tables"][kind])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
