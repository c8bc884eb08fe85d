"""What a command sets up before its first computation: JAX's persistent compilation
cache, a clear error when the platform asked for is missing, and a clock for compilation.

The cache keeps XLA's compiled programs between runs in ``$XDG_CACHE_HOME/jbp/jax`` (or
``~/.cache/jbp/jax``), so a second ``jbp train`` with the same shapes skips compiling.
``--no-cache`` or the environment variable ``JBP_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading

import jax
from jax import monitoring

from jbp.cli.common import UsageError

#: Setting this environment variable to anything but "" or "0" turns the cache off.
NO_CACHE_ENV = "JBP_NO_CACHE"
# JAX's events that time a compilation: tracing to a jaxpr, lowering it, and XLA's
# compilation (or, on a cache hit, reading the compiled program back).
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def cache_dir() -> str:
    """Where the compilation cache lives: ``$XDG_CACHE_HOME/jbp/jax``, else ``~/.cache/jbp/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jbp", "jax")


def cache_wanted(no_cache_flag: bool) -> bool:
    return not no_cache_flag and os.environ.get(NO_CACHE_ENV, "") in ("", "0")


def enable_cache() -> str:
    """Points JAX's persistent compilation cache at :func:`cache_dir`, caching every
    program however small or quick to compile (JAX's defaults skip those under 1 s)."""
    path = cache_dir()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


def first_device_use() -> str:
    """Starts JAX's backend; the platform it runs on. A platform that is asked for
    (``JAX_PLATFORMS``) but missing, or unknown, is a :class:`UsageError` naming what is
    installed."""
    try:
        return jax.default_backend()
    except Exception as e:  # noqa: BLE001 - JAX raises RuntimeError, AssertionError or ValueError here
        asked = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "(default)"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"JAX cannot start the platform {asked!r} (JAX_PLATFORMS): {reason}; installed here: "
            f"{', '.join(installed_platforms())} (unset JAX_PLATFORMS or set it to one of these)"
        ) from None


def installed_platforms() -> list:
    """``cpu`` and the JAX plugins installed (e.g. ``cuda12``), without starting them."""
    names = ["cpu"]
    for entry in importlib.metadata.entry_points(group="jax_plugins"):
        names.append(entry.name.removeprefix("xla_"))
    return names


class CompileClock:
    """Seconds JAX spends compiling (tracing, lowering, XLA or the cache) while it runs,
    and how many programs XLA compiled (or read from the cache):
    ``with CompileClock() as clock: ...; clock.seconds, clock.programs``."""

    _lock = threading.Lock()
    _active: list = []
    _registered = False

    def __init__(self):
        self.seconds = 0.0
        self.programs = 0

    @classmethod
    def _listen(cls, event: str, duration: float, **_) -> None:
        if event in _COMPILE_EVENTS:
            for clock in cls._active:
                clock.seconds += duration
                clock.programs += event == _COMPILE_EVENTS[-1]

    def __enter__(self) -> "CompileClock":
        with CompileClock._lock:
            if not CompileClock._registered:
                monitoring.register_event_duration_secs_listener(CompileClock._listen)
                CompileClock._registered = True
            CompileClock._active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with CompileClock._lock:
            CompileClock._active.remove(self)
