"""A fast, clear start: what ``import jbp`` loads, the compilation cache, a missing platform,
``--version`` (each in a fresh process, as a user meets it)."""

import os
import subprocess
import sys

import jbp
from jbp.cli import main, runtime


def _python(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("JBP_NO_CACHE", "JAX_PLATFORMS")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


def test_import_jbp_loads_no_cli_dependencies_and_datasets_lazily():
    run = _python(
        "import sys, jbp\n"
        "heavy = ('sklearn', 'matplotlib', 'tqdm', 'jbp.datasets', 'jbp.cli')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(jbp.datasets.load('xor').name, 'sklearn' in sys.modules)\n"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["[]", "xor False"]


def test_the_cache_fills_the_users_cache_folder_and_a_missing_platform_is_one_line(tmp_path):
    code = "from jbp.cli import main; main(['train', '--dataset', 'xor', '--hidden', '3', '--epochs', '1', '--no-check'])"
    run = _python(code, XDG_CACHE_HOME=str(tmp_path))
    assert run.returncode == 0, run.stderr
    cached = os.listdir(tmp_path / "jbp" / "jax")
    assert len(cached) >= 3, cached  # small programs too (JAX skips those under 1 s by default)

    for platform in ("cuda", "tpuu"):
        run = subprocess.run([sys.executable, "-m", "jbp", "check", "--dataset", "xor"], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": platform})
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"jbp: error: JAX cannot start the platform '{platform}'")
        assert "installed here: cpu" in lines[0]


def test_the_cache_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("JBP_NO_CACHE", raising=False)
    assert runtime.cache_wanted(False) and not runtime.cache_wanted(True)
    for value, wanted in (("1", False), ("yes", False), ("0", True), ("", True)):
        monkeypatch.setenv("JBP_NO_CACHE", value)
        assert runtime.cache_wanted(False) is wanted
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert runtime.cache_dir() == "/somewhere/jbp/jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert runtime.cache_dir() == os.path.expanduser("~/.cache/jbp/jax")


def test_version_and_help_list_the_valid_names(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"jbp {jbp.__version__}\n"
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "hidden activation: identity, sigmoid, tanh, relu, leaky_relu, elu, softplus, gelu" in text
    assert "init scheme: glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_uniform, lecun_normal" in text
    assert "one of sgd, momentum, adam" in text
    assert main(["check", "--help"]) == 0
    assert "text: a table; markdown: Markdown tables; json: one object" in " ".join(capsys.readouterr().out.split())
