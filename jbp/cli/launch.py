"""``jbp launch -n N [--devices-per-process K] -- COMMAND ...``: N processes on this host
standing in for N hosts, each running ``python -m jbp COMMAND ...``.

The launcher picks a free port on 127.0.0.1 for JAX's coordinator (or takes ``--port``),
and starts every process in its own process group with ``JAX_PLATFORMS=cpu``,
``JAX_NUM_CPU_DEVICES=K``, ``JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo`` and its place in
the run in ``JBP_COORDINATOR``, ``JBP_NUM_PROCESSES`` and ``JBP_PROCESS_ID``. Before it
runs its command, ``python -m jbp`` reads those (:func:`join_from_env`) and calls
``jax.distributed.initialize`` with bounded timeouts, so a dead peer ends the others
with an error instead of a hang; ``train`` then trains on a mesh over all devices of
all processes.

Output: process 0's output is the launcher's own (the same lines as one ``jbp train``);
process i > 0 writes to ``LOG_DIR/process-i.log`` (``--log-dir``, default a new
temporary folder, removed when every process succeeds). When a process fails, the
launcher stops the others at once (SIGKILL to each process group), prints
which process failed, with the tail of its log, and exits with that process's status
(1 if a signal ended it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax

from jbp.cli.common import UsageError

#: The environment variables that place a process in a launched run.
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JBP_COORDINATOR", "JBP_NUM_PROCESSES", "JBP_PROCESS_ID"
#: Seconds: to reach the coordinator and every peer at the start; without a heartbeat
#: before a process is declared dead; to wait for the others when exiting.
INIT_TIMEOUT_S, HEARTBEAT_TIMEOUT_S, SHUTDOWN_TIMEOUT_S = 60, 10, 10
HOST = "127.0.0.1"
LOG_TAIL_LINES = 20


def add_parser(commands) -> None:
    p = commands.add_parser(
        "launch", help="run a jbp command in N processes on this host (multi-process data parallel)",
        description="Runs `python -m jbp COMMAND ...` in N processes joined by jax.distributed "
                    "on 127.0.0.1, e.g.: jbp launch -n 2 -- train --dataset moons",
    )
    p.add_argument("-n", "--processes", type=int, required=True, help="number of processes")
    p.add_argument("--devices-per-process", type=int, default=1, help="CPU devices per process (default 1)")
    p.add_argument("--port", type=int, help="the coordinator's port on 127.0.0.1 (default: a free one)")
    p.add_argument("--log-dir", help="folder for the logs of processes 1..N-1 (default: a temporary one)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the jbp command to run, after --")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port(port: int) -> None:
    """Raises a UsageError if ``port`` on 127.0.0.1 cannot be bound."""
    if not 0 < port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise UsageError(f"port {port} on {HOST} is already in use ({e.strerror}); "
                             f"choose another --port, or leave it out to take a free one") from None


def join_from_env(environ=os.environ) -> None:
    """Joins the launched run described by ``JBP_*`` variables (no-op without them):
    ``jax.distributed.initialize`` with the coordinator, process count and id given and
    the timeouts above. Call it before any other use of JAX."""
    if ENV_PROCESS_ID not in environ:
        return
    coordinator = environ[ENV_COORDINATOR]
    n, i = int(environ[ENV_NUM_PROCESSES]), int(environ[ENV_PROCESS_ID])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # on 127.0.0.1 the coordinator listens there alone, not on every interface
    bind = coordinator if coordinator.startswith(f"{HOST}:") else None
    if i == 0 and bind:
        # JAX's own failure to bind has crashed the process (SIGSEGV) under load: check first
        try:
            check_port(int(coordinator.rsplit(":", 1)[1]))
        except UsageError as e:
            raise UsageError(f"process 0 of {n} could not start the coordinator at {coordinator}: {e}") from None
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=n, process_id=i,
            initialization_timeout=INIT_TIMEOUT_S, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S, coordinator_bind_address=bind,
        )
    except Exception as e:  # the coordinator's port taken, a peer that never came, ...
        why = str(e).splitlines()[0]
        if i == 0:
            message = (f"process 0 of {n} could not start the coordinator at {coordinator} ({why}); "
                       f"is the port in use? jbp launch takes a free one unless --port is given")
        else:
            message = (f"process {i} of {n} could not join the coordinator at {coordinator} "
                       f"within {INIT_TIMEOUT_S} s: {why}")
        print(f"jbp: error: {message}", file=sys.stderr, flush=True)
        # The half-started distributed runtime can crash in Python's exit handlers: leave now.
        os._exit(2)


def mesh(batch_size: int):
    """The mesh over every device of a launched run (``None`` outside ``jbp launch``)."""
    if not jax.distributed.is_initialized():
        return None
    n = jax.device_count()
    if batch_size % n:
        raise UsageError(f"--batch-size {batch_size} must be a multiple of the run's {n} devices "
                         f"({jax.process_count()} processes x {jax.local_device_count()}): "
                         f"each device takes an equal slice of every batch")
    return jax.make_mesh((n,), ("data",))


def is_main() -> bool:
    """True in the process that writes files: process 0 (or the only one)."""
    return jax.process_index() == 0


def local(tree):
    """``tree``'s replicated arrays as copies on this process's first device, so that
    what follows (metrics, checkpoints) runs in each process alone."""
    if not jax.distributed.is_initialized():
        return tree
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)


def environment(n: int, i: int, devices: int, coordinator: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # forced device counts would clash
    env.update({
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(devices),
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "PYTHONUNBUFFERED": "1",  # a log shows what a process printed up to its end
        ENV_COORDINATOR: coordinator,
        ENV_NUM_PROCESSES: str(n),
        ENV_PROCESS_ID: str(i),
    })
    return env


def _stop(procs) -> None:
    """SIGKILL to every process group still running, and wait for each. (JAX's
    distributed runtime takes SIGTERM as a preemption notice, not a request to exit; a
    checkpoint is never half written, since it is renamed into place whole.)"""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # also whatever a process started in its group
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        p.wait()


def _how(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return ""
    return "".join(f"  | {line}\n" for line in lines)


class _Terminated(Exception):
    pass


def _terminated(signum, frame):
    raise _Terminated()


def run(args) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise UsageError("launch needs a command after --, e.g. jbp launch -n 2 -- train --dataset moons")
    if command[0] == "launch":
        raise UsageError("launch cannot launch itself; give the command to run after --, e.g. train")
    if args.processes < 1:
        raise UsageError(f"-n must be >= 1 processes, got {args.processes}")
    if args.devices_per_process < 1:
        raise UsageError(f"--devices-per-process must be >= 1, got {args.devices_per_process}")
    if args.port is not None:
        check_port(args.port)
    port = args.port or free_port()
    n = args.processes
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="jbp-launch-")
    os.makedirs(log_dir, exist_ok=True)
    logs = {i: os.path.join(log_dir, f"process-{i}.log") for i in range(1, n)}

    procs = []
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        for i in range(n):
            out = open(logs[i], "w") if i else None
            try:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "jbp", *command],
                    env=environment(n, i, args.devices_per_process, f"{HOST}:{port}"),
                    stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True,
                ))
            finally:
                if out is not None:
                    out.close()
        while True:
            statuses = [p.poll() for p in procs]
            failed = next((i for i, s in enumerate(statuses) if s not in (None, 0)), None)
            if failed is not None:
                status = statuses[failed]
                _stop(procs)
                where = f"; its output, in {logs[failed]}, ends:\n{_tail(logs[failed])}" if failed else ""
                print(f"jbp: error: process {failed} of {n} {_how(status)}; stopped the other "
                      f"processes{where}", file=sys.stderr, end="" if where else "\n")
                return status if status > 0 else 1
            if all(s == 0 for s in statuses):
                break
            time.sleep(0.05)
    except (KeyboardInterrupt, _Terminated):
        _stop(procs)
        print(f"jbp: launch interrupted; stopped all {n} processes", file=sys.stderr)
        return 130
    finally:
        _stop(procs)
        signal.signal(signal.SIGTERM, previous)
    if args.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0
