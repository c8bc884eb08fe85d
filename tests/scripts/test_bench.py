"""scripts/bench.py: a --quick smoke run on the tiny configuration (no timing asserted)."""

import importlib.util
import json
import math
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parents[2] / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench"]


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    report = bench.main(["--quick", "--configs", "tiny", "--out", str(out)])
    return report, json.loads(out.read_text())


def test_json_holds_what_the_table_shows(run):
    report, saved = run
    assert saved["quick"] is True and saved["table"] == report["table"]
    assert saved["machine"]["backend"] and saved["machine"]["jax"]
    (r,) = saved["results"]
    assert r["config"] == "tiny" and r["sizes"] == [2, 8, 1] and r["batch"] == 4
    assert r["flops_per_step"] == 6 * 4 * (2 * 8 + 8 * 1)
    for name in ("jbp", "autodiff", "autodiff+donate"):
        for key in ("step_s", "vs_autodiff", "gflops", "pct_gemm", "compile_s", "accessed_mb", "temp_mib"):
            assert math.isfinite(r[name][key]) and r[name][key] >= 0, (name, key, r[name][key])
    assert r["numpy"]["step_s"] > 0 and r["gemm_gflops"] > 0
    assert r["fit_steps_per_s"] > 0 and r["dispatched_steps_per_s"] > 0


def test_every_implementation_takes_the_same_step(run, bench):
    """One step from the same start: autodiff, NumPy (and PyTorch) match jbp in float32."""
    _, saved = run
    agreement = saved["results"][0]["agreement"]
    expected = {"autodiff", "numpy"} | ({"torch"} if bench.torch is not None else set())
    assert set(agreement) == expected
    for name, a in agreement.items():
        assert a["agree"], (name, a)
        assert a["loss_rel_diff"] <= 1e-5 and a["params_rel_diff"] <= 1e-5, (name, a)


def test_markdown_table_has_a_row_per_config(run, bench):
    report, _ = run
    lines = report["table"].splitlines()
    assert lines[0].startswith("| config | jbp step | autodiff step | jbp / autodiff")
    assert sum(line.startswith("| tiny |") for line in lines) == 2  # one per table
    if bench.torch is None:
        assert "PyTorch not installed" in report["table"]


def test_unknown_config_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--configs", "huge"])


def test_runs_without_pytorch(bench, monkeypatch, tmp_path):
    """PyTorch is an optional extra (not in dev): without it the run skips its column."""
    monkeypatch.setattr(bench, "torch", None)
    report = bench.main(["--quick", "--configs", "tiny", "--out", str(tmp_path / "b.json")])
    (r,) = report["results"]
    assert "torch" not in r and set(r["agreement"]) == {"autodiff", "numpy"}
    assert "PyTorch not installed" in report["table"]
    assert "| tiny |" in report["table"] and report["machine"]["torch"] is None
