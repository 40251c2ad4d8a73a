"""What the command-line tests share: the real console script, run with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from loanstate._events import TOP_TIMEZONE

SCRIPT = Path(sys.executable).with_name("loanstate")
START = datetime(2024, 3, 1, 9, 0, tzinfo=TOP_TIMEZONE)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any LOANSTATE_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOANSTATE_")}
    return {**env, "COLUMNS": "200", **extra}


def run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``loanstate ARGS`` with a clean environment (plus ``env``), ``stdin`` as its input."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=clean_env(**(env or {})),
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert exit 2 with one line and no traceback; return the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
