"""``train``'s time figures, each measured for what it says.

- ``total_s``: the command, from argument checks to the last plot (Python's and JAX's
  start-up before it are not included; ``scripts/bench_startup.py`` times whole processes);
- ``compile_s``: what JAX reports spending on compilation during the run (tracing,
  lowering and XLA, or reading a program back from the persistent cache), gradient check
  included;
- ``check_s``: the gradient check, its compilations included;
- ``train_s``: the training chunks (``jbp.fit`` calls), compilation included;
- ``steady_steps_per_s``: optimizer steps per second over the chunks during which XLA
  compiled nothing (nor read a program from the cache); ``None`` when every chunk did (a
  run of one chunk) or none ran.
"""

from __future__ import annotations

from typing import Optional


def summary(chunks: list, steps_per_epoch: int, check_s: float, compile_s: float, total_s: float) -> dict:
    """``chunks``: per ``fit`` call ``(seconds, epochs done, programs compiled during it)``."""
    steady = [(t, e) for t, e, c in chunks if c == 0 and e > 0]
    steady_s, steady_epochs = sum(t for t, _ in steady), sum(e for _, e in steady)
    rate: Optional[float] = steady_epochs * steps_per_epoch / steady_s if steady_s > 0 else None
    return {
        "total_s": total_s,
        "compile_s": compile_s,
        "check_s": check_s,
        "train_s": sum(t for t, _, _ in chunks),
        "steps": sum(e for _, e, _ in chunks) * steps_per_epoch,
        "steady_steps": steady_epochs * steps_per_epoch,
        "steady_steps_per_s": rate,
        "steps_per_s": rate,  # the name of earlier metrics.json files; the same figure
    }


def line(t: dict) -> str:
    """``total 2.1 s (compiling 0.9 s, gradient check 0.4 s, training 1.2 s), 14,800 steps/s steady``."""
    parts = [f"compiling {t['compile_s']:.1f} s"]
    if t["check_s"]:
        parts.append(f"gradient check {t['check_s']:.1f} s")
    parts.append(f"training {t['train_s']:.1f} s")
    if t["steady_steps_per_s"] is not None:
        rate = f"{t['steady_steps_per_s']:,.0f} steps/s steady (over {t['steady_steps']:,} steps run without compiling)"
    elif t["steps"]:
        rate = "no steady steps/s: every chunk of epochs compiled (use more epochs or a smaller --chunk)"
    else:
        rate = "no steps run"
    return f"total {t['total_s']:.1f} s ({', '.join(parts)}), {rate}"
