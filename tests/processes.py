"""Starting real processes on 127.0.0.1 for the multi-process tests, with bounded waits
and nothing left behind: every process gets its own process group, killed in the end."""

import contextlib
import os
import pathlib
import signal
import subprocess
import time

from jbp.cli.launch import environment, free_port

TESTS = pathlib.Path(__file__).parent
#: The longest any test waits for its processes (they take seconds).
TIMEOUT_S = 120


def env(**extra):
    """The test run's environment for a child: jbp importable, forced devices dropped."""
    e = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), str(TESTS), e.get("PYTHONPATH", "")])
    e.update(extra)
    return e


def descendants(pid):
    """The ids of ``pid``'s children, theirs, and so on (Linux)."""
    try:
        kids = children(pid)
    except OSError:
        return []
    return kids + [d for k in kids for d in descendants(k)]


def kill(procs):
    """SIGKILL to each process's group and to every descendant (a launcher's workers run
    in process groups of their own)."""
    for p in procs:
        left = descendants(p.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        for d in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(d, signal.SIGKILL)  # each worker leads its own group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(d, signal.SIGKILL)
    for p in procs:
        p.wait()


@contextlib.contextmanager
def started(argvs, envs):
    """Popen of each argv with its env, stdout and stderr piped as text; killed on exit."""
    procs = []
    try:
        for argv, e in zip(argvs, envs):
            procs.append(subprocess.Popen(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True, cwd=TESTS.parent))
        yield procs
    finally:
        kill(procs)


def joined(n, devices, argv):
    """``argv`` in ``n`` processes of ``devices`` CPU devices each, placed in one run the
    way ``jbp launch`` places them (without the launcher)."""
    coordinator = f"127.0.0.1:{free_port()}"
    return started([argv] * n, [env(**environment(n, i, devices, coordinator)) for i in range(n)])


def finish(procs, timeout=TIMEOUT_S):
    """Waits for every process (all within ``timeout`` s); returns [(status, stdout, stderr)]."""
    deadline = time.monotonic() + timeout
    outputs = [p.communicate(timeout=max(0.1, deadline - time.monotonic())) for p in procs]
    return [(p.returncode, *out) for p, out in zip(procs, outputs)]


def children(pid):
    """The ids of ``pid``'s child processes (Linux)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1][0] != "Z"  # a zombie has exited
