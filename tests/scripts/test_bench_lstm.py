"""scripts/bench_lstm.py: a smoke run on the tiny configuration (no timing asserted)."""

import importlib.util
import json
import math
import pathlib
import sys

SCRIPT = pathlib.Path(__file__).parents[2] / "scripts" / "bench_lstm.py"


def test_a_tiny_run_agrees_and_reports(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_lstm", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_lstm"] = bench  # dataclasses look their module up there
    try:
        spec.loader.exec_module(bench)
        out = tmp_path / "tiny.json"
        report = bench.main(["--quick", "--configs", "tiny", "--out", str(out)])
    finally:
        del sys.modules["bench_lstm"]
    saved = json.loads(out.read_text())
    assert saved["table"] == report["table"] and saved["machine"]["quick"] is True
    (r,) = saved["results"]
    assert (r["config"], r["hidden"], r["steps"], r["batch"]) == ("tiny", 8, 4, 4)
    assert set(r["agreement"]) == {"autodiff"} | ({"torch"} if bench.torch is not None else set())
    assert all(a["agree"] for a in r["agreement"].values()), r["agreement"]
    for name in ("jbp", "autodiff"):
        assert r[name]["step_s"] > 0 and r[name]["temp_mib"] >= 0
    assert math.isfinite(r["jbp"]["vs_autodiff"]) and r["jbp"]["vs_autodiff"] > 0
