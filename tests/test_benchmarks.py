"""The benchmark scripts still run and print the figures they promise (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_store_bench_prints_its_figures():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "store_bench.py"),
         "--tasks", "300", "--samples", "10", "--contention-seconds", "0.5"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["tasks_in_store"] == 300
    for key in ("create_store", "claim_store", "create_http", "get_tasks_http"):
        assert figures[key]["n"] >= 10 and figures[key]["p50_ms"] > 0
    assert figures["contention"]["processes"] == 4
    assert figures["contention"]["claims"] > 0
