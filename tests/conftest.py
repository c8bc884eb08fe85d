"""Shared fixtures. x64 is on so float64 cases are real float64; float32 cases ask for it.

The suite's programs are small and each runs a few times, so compiling them costs more
than running them. The suite compiles as an XLA developer's test run does, set before JAX
is imported so that the CLI's subprocesses inherit it: with most optimisation passes off
(``JAX_DISABLE_MOST_OPTIMIZATIONS``) and, on the CPU, with XLA's elemental emitters
instead of its MLIR fusion emitters (``--xla_cpu_use_fusion_emitters=false``), which
together compile the suite in about half the time. The programs mean the same either
way; only rounding may differ by an ulp between two differently compiled programs. So a
bit-for-bit comparison holds between programs compiled alike (a run and its resumption),
and a test comparing a compiled program bit for bit with eager execution asks for the
``optimized`` fixture.
"""

import collections
import os
import subprocess
import sys

#: Compiles the suite's CPU programs with XLA's elemental emitters (see the docstring).
EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _compile_quickly() -> None:
    """Sets both switches in this process's environment (unless already set, as in
    pytest-xdist's workers); the XLA flag only where this jaxlib knows it, which a short
    subprocess tries, since XLA aborts on a flag it does not know."""
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" in flags:
        return
    with_flag = f"{flags} {EMITTERS}".strip()
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices('cpu')"],
        env={**os.environ, "XLA_FLAGS": with_flag}, capture_output=True, timeout=120,
    )
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = with_flag


_compile_quickly()

import jax  # noqa: E402
import pytest  # noqa: E402
from jax import monitoring  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] not in ("0", "false"))

_compiles = collections.Counter()
monitoring.register_event_duration_secs_listener(
    lambda event, _, **kw: _compiles.update([kw.get("fun_name")])
    if event == "/jax/core/compile/backend_compile_duration"
    else None
)


@pytest.fixture
def compiles():
    """Counts XLA compilations by function name (``"jit(name)"``) during a test."""
    _compiles.clear()
    return _compiles


@pytest.fixture
def optimized():
    """Compiles with XLA's optimisation passes on, as users' programs do, for one test;
    JAX's compilation caches are cleared before and after so that no program crosses the
    switch."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()
    yield
    jax.config.update("jax_disable_most_optimizations", before)
    jax.clear_caches()


@pytest.fixture
def plant(monkeypatch):
    """Replaces ``module.name`` with ``fn`` for one test, clearing JAX's compilation
    caches before and after so that no compiled function keeps the old (or new) code."""

    def plant(module, name, fn):
        monkeypatch.setattr(module, name, fn)
        jax.clear_caches()

    yield plant
    monkeypatch.undo()
    jax.clear_caches()


# The CLI's tests run in this process: JAX's persistent compilation cache (process-wide
# configuration) stays off for them; tests/test_runtime.py turns it on in a subprocess.
os.environ.setdefault("JBP_NO_CACHE", "1")


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drops the compiled programs of a test module after it: XLA compiles slower the more
    programs a process holds (13 ms for a small one in a fresh process, 23 ms beside
    3,000 others), and a module's programs are seldom another's."""
    yield
    jax.clear_caches()
