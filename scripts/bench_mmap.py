"""Training from a memory-mapped file bigger than the chunks that reach memory: peak
resident memory, and steps/s against in-memory ``fit``.

Writes ``x.npy`` (float32, about ``--gb`` GB) and ``y.npy`` into ``--folder`` (git-ignored;
deleted at the end unless ``--keep``), block by block so that writing maps nothing. Then,
in one process:

1. **Memory**: one epoch of ``jbp.fit_stream`` over the whole memory-mapped file
   (``np.load(..., mmap_mode="r")``); the peak resident set size (``ru_maxrss``) after it,
   against the file's size and the resident size before (JAX and the compiled chunk).
2. **Speed**, interleaved over ``--rounds`` rounds in a random order: an epoch of
   ``fit_stream`` on the memory-mapped file, an epoch of in-memory ``jbp.fit`` on a slice
   of ``--slice-mb`` MB loaded into memory, and an epoch of ``fit_stream`` on that same
   in-memory slice (the streaming machinery without the file); steps/s of each, medians,
   and the median of the paired ratios.
3. **Reading vs computing**: the median time to read one chunk (``steps_per_chunk``
   blocks of ``batch`` rows at random places in the file) against the time the device
   spends on one chunk; while reading takes less, the reads are hidden behind the
   computation (fit_stream reads chunk c + 1 while chunk c trains).

The file is freshly written, so the OS page cache may hold it: the reads measured are
then memory copies, not disk reads.

    python scripts/bench_mmap.py [--gb 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_data(folder: str, n: int, d: int, classes: int, block: int = 65536) -> None:
    """x.npy ``(n, d)`` float32 and y.npy ``(n,)`` int32 (a fixed linear rule), written in blocks."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(d, classes)).astype(np.float32)
    with open(os.path.join(folder, "x.npy"), "wb") as fx, open(os.path.join(folder, "y.npy"), "wb") as fy:
        np.lib.format.write_array_header_1_0(fx, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        np.lib.format.write_array_header_1_0(fy, {"descr": "<i4", "fortran_order": False, "shape": (n,)})
        for a in range(0, n, block):
            x = rng.normal(size=(min(block, n - a), d)).astype(np.float32)
            fx.write(x.tobytes())
            fy.write(np.argmax(x @ w, axis=1).astype("<i4").tobytes())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=2.0, help="size of x.npy in GB (1e9 bytes)")
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps-per-chunk", type=int, default=64)
    p.add_argument("--slice-mb", type=float, default=256, help="in-memory slice for the comparison, MB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--folder", default="experiments/out/mmap")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args()

    d, B, K, classes = args.features, args.batch, args.steps_per_chunk, 10
    rows_per_chunk = B * K
    n = int(args.gb * 1e9 / (4 * d)) // rows_per_chunk * rows_per_chunk
    m = int(args.slice_mb * 1e6 / (4 * d)) // rows_per_chunk * rows_per_chunk
    os.makedirs(args.folder, exist_ok=True)
    try:
        start = time.perf_counter()
        write_data(args.folder, n, d, classes)
        size = os.path.getsize(os.path.join(args.folder, "x.npy"))
        print(f"jax {jax.__version__} on {jax.default_backend()}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs")
        print(f"wrote {args.folder}/x.npy: {n:,} x {d} float32, {size / 2**20:,.0f} MiB, in {time.perf_counter() - start:.1f} s")

        x = np.load(os.path.join(args.folder, "x.npy"), mmap_mode="r")
        y = np.load(os.path.join(args.folder, "y.npy"), mmap_mode="r")
        net = jbp.MLP((d, args.hidden, classes), activation="relu", loss="cross_entropy")
        opt = optax.sgd(0.01)
        params0 = net.init(jax.random.key(0), dtype=jnp.float32)
        key = jax.random.key(1)
        kw = dict(optimizer=opt, batch_size=B, key=key, steps_per_chunk=K)

        # Compile on a small memory-mapped prefix, then one epoch over the whole file.
        jbp.fit_stream(net, params0, (x[:rows_per_chunk], y[:rows_per_chunk]), epochs=1, **kw)
        before = rss_mib()
        start = time.perf_counter()
        params, h = jbp.fit_stream(net, params0, (x, y), epochs=1, **kw)
        jax.block_until_ready(params)
        epoch_s = time.perf_counter() - start
        peak = peak_rss_mib()
        print(f"memory: one epoch over the memory-mapped file ({n // B:,} steps, {epoch_s:.1f} s, loss {float(h.loss[0]):.4f}): "
              f"peak RSS {peak:,.0f} MiB = {peak / (size / 2**20):.1%} of the file; RSS before the epoch {before:,.0f} MiB, "
              f"after {rss_mib():,.0f} MiB")

        xm, ym = np.array(x[:m]), np.array(y[:m])
        xj, yj = jnp.asarray(xm), jnp.asarray(ym)
        forms = {
            "fit_stream, memory-mapped file": lambda e: jbp.fit_stream(net, params0, (x, y), epochs=1, start_epoch=e, **kw),
            "fit, in memory": lambda e: jbp.fit(net, params0, xj, yj, optimizer=opt, epochs=1, batch_size=B,
                                                key=key, start_epoch=e),
            "fit_stream, in memory": lambda e: jbp.fit_stream(net, params0, (xm, ym), epochs=1, start_epoch=e, **kw),
        }
        steps = {"fit_stream, memory-mapped file": n // B, "fit, in memory": m // B, "fit_stream, in memory": m // B}
        for name, f in forms.items():  # compile and warm up
            if "memory-mapped" not in name:
                jax.block_until_ready(f(0))
        rates = {k: [] for k in forms}
        for r in range(args.rounds):
            for name in random.sample(list(forms), len(forms)):
                start = time.perf_counter()
                jax.block_until_ready(forms[name](r + 1))
                rates[name].append(steps[name] / (time.perf_counter() - start))
        print(f"\nspeed: {args.rounds} interleaved rounds, network {d}-{args.hidden}-{classes} relu, batch {B}, "
              f"chunks of {K} steps; in-memory slice {m:,} rows ({xm.nbytes / 2**20:,.0f} MiB)")
        print("| run | steps/s (median) | range | / in-memory fit (median of paired ratios) |")
        print("|---|---|---|---|")
        base = rates["fit, in memory"]
        for name, v in rates.items():
            ratio = statistics.median(a / b for a, b in zip(v, base))
            print(f"| {name} | {statistics.median(v):,.0f} | {min(v):,.0f}-{max(v):,.0f} | {ratio:.2f} |")

        rng = np.random.default_rng(2)
        reads = []
        for _ in range(20):
            starts = rng.integers(0, n // B, size=K) * B
            t = time.perf_counter()
            np.concatenate([x[s:s + B] for s in starts])
            np.concatenate([y[s:s + B] for s in starts])
            reads.append(time.perf_counter() - t)
        compute = K / statistics.median(rates["fit_stream, in memory"])
        print(f"\nreading one chunk ({K} blocks of {B} rows, {rows_per_chunk * d * 4 / 2**20:.0f} MiB) from the "
              f"memory-mapped file: median {statistics.median(reads) * 1e3:.1f} ms; training on one chunk: "
              f"{compute * 1e3:.1f} ms")
        print(f"peak RSS of the whole run (incl. the in-memory slice): {peak_rss_mib():,.0f} MiB")
    finally:
        if not args.keep:
            shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
