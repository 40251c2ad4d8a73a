"""The README's Quick start: exactly two commands, and the first one works as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)]


def test_quick_start_has_exactly_two_commands() -> None:
    """One command runs the demo on a fresh install, the other is what CI runs."""
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert commands[0].endswith("loanstate demo")
    assert commands[1] == "bash scripts/test"
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.slow
def test_first_command_installs_and_runs_the_demo(tmp_path: Path) -> None:
    """The first Quick start command, run verbatim in a clean copy of the project, installs and runs the demo."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    )
    copy = tmp_path / "loanstate"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["COLUMNS"] = "200"  # rich lays the summary out on one line per check
    result = subprocess.run(
        ["bash", "-c", quick_start_commands()[0]],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"each request_id effective once\s+yes", result.stdout), result.stdout[-2000:]
    assert re.search(r"per-loan order held\s+yes", result.stdout), result.stdout[-2000:]
