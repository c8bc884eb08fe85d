"""scripts/bench_memory.py: a --quick smoke run of the attention sweep (memory only)."""

import importlib.util
import math
import pathlib
import sys

SCRIPT = pathlib.Path(__file__).parents[2] / "scripts" / "bench_memory.py"


def test_quick_attention_sweep_reports_every_method(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_memory"] = module
    try:
        spec.loader.exec_module(module)
        report = module.main(["--quick", "--only", "attention", "--out", str(tmp_path / "m.json")])
    finally:
        del sys.modules["bench_memory"]
    (row,) = report["results"]["attention"]
    assert row["size"] == [4, 256]
    for method in module.METHODS["attention"]:
        assert math.isfinite(row[method]["temp_mib"]) and row[method]["temp_mib"] > 0, method
    assert "| B·H | T | jbp MiB |" in report["tables"]["attention"]
    assert (tmp_path / "m.json").exists()
