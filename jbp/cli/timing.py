"""``train``'s time figures, each measured for what it says; the parts add up to the total.

- ``total_s``: the command, from argument checks to the last file written (Python's and
  JAX's start-up before it are not included; ``scripts/bench_startup.py`` times whole
  processes); it is the sum of
  - ``setup_s``: reading the data, building the network and the optimizer, the first
    checkpoint;
  - ``check_s``: the gradient check, its compilations included;
  - ``train_s``: the training chunks (``jbp.fit`` calls) and their checkpoints,
    compilation included;
  - ``finish_s``: the final metrics, the figures and ``metrics.json``;
- ``compile_s``: what JAX reports spending on compilation during the run (tracing,
  lowering and XLA, or reading a program back from the persistent cache), a share of the
  parts above;
- ``steady_steps_per_s``: optimizer steps per second over the chunks during which XLA
  compiled nothing (nor read a program from the cache); ``None`` when every chunk did (a
  run of one chunk) or none ran.
"""

from __future__ import annotations

from typing import Optional


def summary(chunks: list, steps_per_epoch: int, check_s: float, compile_s: float, total_s: float,
            setup_s: float = 0.0, train_s: Optional[float] = None) -> dict:
    """``chunks``: per ``fit`` call ``(seconds, epochs done, programs compiled during it)``;
    ``train_s``: the whole training loop (default: the chunks' sum); ``finish_s`` is what
    the other parts leave of ``total_s``."""
    steady = [(t, e) for t, e, c in chunks if c == 0 and e > 0]
    steady_s, steady_epochs = sum(t for t, _ in steady), sum(e for _, e in steady)
    rate: Optional[float] = steady_epochs * steps_per_epoch / steady_s if steady_s > 0 else None
    train_s = sum(t for t, _, _ in chunks) if train_s is None else train_s
    return {
        "total_s": total_s,
        "setup_s": setup_s,
        "check_s": check_s,
        "train_s": train_s,
        "finish_s": max(total_s - setup_s - check_s - train_s, 0.0),
        "compile_s": compile_s,
        "steps": sum(e for _, e, _ in chunks) * steps_per_epoch,
        "steady_steps": steady_epochs * steps_per_epoch,
        "steady_steps_per_s": rate,
        "steps_per_s": rate,  # the name of earlier metrics.json files; the same figure
    }


def line(t: dict) -> str:
    """``total 2.1 s (setup 0.3 s, gradient check 0.4 s, training 1.2 s, metrics and files
    0.2 s; compiling 0.9 s of it), 14,800 steps/s steady ...``."""
    parts = [f"setup {t.get('setup_s', 0.0):.1f} s"]
    if t["check_s"]:
        parts.append(f"gradient check {t['check_s']:.1f} s")
    parts.append(f"training {t['train_s']:.1f} s")
    parts.append(f"metrics and files {t.get('finish_s', 0.0):.1f} s")
    if t["steady_steps_per_s"] is not None:
        rate = f"{t['steady_steps_per_s']:,.0f} steps/s steady (over {t['steady_steps']:,} steps run without compiling)"
    elif t["steps"]:
        rate = "no steady steps/s: every chunk of epochs compiled (use more epochs or a smaller --chunk)"
    else:
        rate = "no steps run"
    return f"total {t['total_s']:.1f} s ({', '.join(parts)}; compiling {t['compile_s']:.1f} s of it), {rate}"
