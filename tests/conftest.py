"""Shared fixtures. x64 is on so float64 cases are real float64; float32 cases ask for it."""

import collections
import os

import jax
import pytest
from jax import monitoring

jax.config.update("jax_enable_x64", True)

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
