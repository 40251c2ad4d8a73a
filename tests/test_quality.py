"""The static checks and the docs build, run as tests so one runner gives one verdict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)


def test_ruff_lint() -> None:
    """ruff finds nothing to complain about."""
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    """Every file is formatted the way ruff formats it."""
    result = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    """The package, its tests and benchmarks type-check under mypy --strict."""
    result = run(sys.executable, "-m", "mypy", "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_docs_build(tmp_path: Path) -> None:
    """The Sphinx docs build with warnings as errors."""
    if not (ROOT / "docs" / "conf.py").exists():
        pytest.fail("docs/conf.py is missing")
    result = run(sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
