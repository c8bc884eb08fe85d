"""The guide runs as written: README.md and docs/ build as a site and their examples execute.

Every ```python (or ```py) block of README.md and docs/*.md is one test, named
``file:line``, run as written. Each block runs alone in a fresh namespace, as a reader who
copies that one block would run it: blocks on a page share nothing, so each defines every
name it uses. Blocks fenced as another language (```bash, ```text, or none) are shown, not
run.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import types

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)")
PYTHON = {"python", "py", "python3"}  # the fences that are run


def code_blocks(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """``(line, language, source)`` of each fenced block of a Markdown file, in order;
    ``line`` is the opening fence's (1-based), a block inside a list item is dedented."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, indent = i, m.group("indent")
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if i == len(lines):
            raise ValueError(f"{path.name}:{start + 1}: a code fence opened here is never closed")
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[start + 1:i]]
        blocks.append((start + 1, m.group("lang").lower(), textwrap.dedent("\n".join(body)) + "\n"))
        i += 1
    return blocks


def python_examples() -> list:
    return [
        # blank lines before the block, so that a traceback's line numbers are the page's
        pytest.param(page, "\n" * line + source, id=f"{page.relative_to(ROOT)}:{line}")
        for page in PAGES
        for line, lang, source in code_blocks(page)
        if lang in PYTHON
    ]


EXAMPLES = python_examples()


@pytest.fixture
def as_a_reader(tmp_path, monkeypatch):
    """Runs an example as a reader would: in an empty folder (what it writes goes there),
    with JAX's default settings (x64 off: the suite's conftest turns it on), which are put
    back afterwards."""
    monkeypatch.chdir(tmp_path)
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", x64)


@pytest.mark.parametrize("page, source", EXAMPLES)
def test_example_runs_as_written(page, source, as_a_reader, monkeypatch):
    # A module of its own, as a script is: dataclasses look their module up in sys.modules.
    module = types.ModuleType("__docs_example__")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(source, str(page), "exec"), module.__dict__)


def test_every_page_with_examples_is_collected():
    """The collector finds the README's examples and some in docs/ (a fence it cannot
    read would otherwise leave a page untested without a word)."""
    pages = {param.values[0].name for param in EXAMPLES}
    assert "README.md" in pages, f"no ```python block collected from README.md; pages with examples: {sorted(pages)}"
    assert len(pages) >= 2, f"no ```python block collected from docs/*.md; pages with examples: {sorted(pages)}"


def test_readme_links_resolve():
    """Every relative link of README.md (to docs/ pages, figures) names a file that exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = [t for t in targets if "://" not in t and not t.startswith("#")
               and not (ROOT / t.split("#")[0]).exists()]
    assert targets, "README.md has no links"
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict`` (as CI runs it): a broken link, a missing page or an API
    name mkdocstrings cannot resolve fails the build."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
    assert (tmp_path / "site" / "api" / "index.html").exists(), "the build wrote no API reference page"
