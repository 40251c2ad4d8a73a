"""The benchmark suite's quick mode runs, so the benchmarks never rot (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmarks_run_and_print_the_table() -> None:
    """`python -m benchmarks --quick` exits 0 and prints every workload in one table."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout.split("## All workloads", 1)[1]
    for workload in ("change(), cold", "bytes held per loan"):
        assert workload in table
    assert table.count("\n| ") >= 8
