"""Small helpers shared by the experiment scripts (output folder, markdown tables)."""

import os
import pathlib

import numpy as np

OUT = pathlib.Path(os.environ.get("JBP_EXPERIMENTS_OUT", pathlib.Path(__file__).parent / "out"))
FIGURES = pathlib.Path(__file__).parent / "figures"


def out_dir() -> pathlib.Path:
    """The git-ignored folder experiments write to (``experiments/out``)."""
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


def markdown_table(headers, rows) -> str:
    rows = [[str(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_table(name: str, title: str, headers, rows) -> str:
    """Prints the table and writes it to ``out/<name>.md``."""
    text = f"{title}\n\n{markdown_table(headers, rows)}\n"
    (out_dir() / f"{name}.md").write_text(text)
    print(text)
    return text


def mean_std(values, fmt="{:.4f}") -> str:
    v = np.asarray(values, dtype=float)
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std())}"
