"""Scaling of data-parallel ``jbp.fit(..., mesh=mesh)`` with the number of devices.

Each device count runs in its own subprocess, since JAX fixes its devices when it
starts. On CPU the devices are forced (``--xla_force_host_platform_device_count=N``):
they share the machine's cores, so this measures the overhead of sharding, not a
speed-up beyond what the cores give. With GPUs present it uses the first N of them.

Prints steps per second (compiled; the best of ``--repeats`` runs) and the speed-up
over the one-device mesh; ``plain`` is ``fit`` without a mesh. Run from the repository
root:

    PYTHONPATH=$PWD python scripts/bench_parallel.py            # 1, 2, 4, 8 devices
"""

import argparse
import json
import os
import subprocess
import sys
import time


def worker(n_devices, args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jbp

    if len(jax.devices()) < n_devices:
        print(json.dumps(dict(devices=n_devices, skipped=f"only {len(jax.devices())} devices")))
        return
    sizes = tuple(args.sizes)
    net = jbp.MLP(sizes, activation="relu", loss="cross_entropy", init="he_normal")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.examples, sizes[0])), jnp.float32)
    y = jnp.asarray(rng.integers(0, sizes[-1], size=args.examples))
    params = net.init(jax.random.key(0), dtype=jnp.float32)
    kwargs = dict(optimizer=optax.adam(1e-3), epochs=args.epochs, batch_size=args.batch_size,
                  key=jax.random.key(1))
    steps = args.epochs * (args.examples // args.batch_size)

    def steps_per_s(mesh):
        jax.block_until_ready(jbp.fit(net, params, x, y, mesh=mesh, **kwargs))  # compile
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(jbp.fit(net, params, x, y, mesh=mesh, **kwargs))
            best = min(best, time.perf_counter() - start)
        return steps / best

    mesh = jax.make_mesh((n_devices,), ("data",), devices=jax.devices()[:n_devices])
    row = dict(devices=n_devices, backend=jax.default_backend(), kind=jax.devices()[0].device_kind,
               steps_per_s=steps_per_s(mesh))
    if n_devices == 1:
        row["plain_steps_per_s"] = steps_per_s(None)
    print(json.dumps(row))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 256, 10])
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args)

    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    print(f"fit over a mesh: MLP {tuple(args.sizes)}, {args.examples} examples, batch {args.batch_size}, "
          f"{args.epochs} epochs, float32, Adam; backend {probe}")
    if probe == "cpu":
        print(f"CPU devices are forced and share this machine's {os.cpu_count()} cores")
    print(f"{'devices':>7} {'steps/s':>9} {'speed-up':>9} {'plain fit steps/s':>18}")
    base = None
    for n in args.devices:
        env = dict(os.environ)
        if probe == "cpu":
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
        argv = [sys.argv[0], "--worker", str(n)] + [a for a in sys.argv[1:]]
        out = subprocess.run([sys.executable] + argv, env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{n} devices failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        if "skipped" in row:
            print(f"{n:>7} skipped: {row['skipped']}")
            continue
        base = base or row["steps_per_s"]
        plain = f"{row['plain_steps_per_s']:.1f}" if "plain_steps_per_s" in row else ""
        print(f"{n:>7} {row['steps_per_s']:>9.1f} {row['steps_per_s'] / base:>9.2f} {plain:>18}")


if __name__ == "__main__":
    main()
