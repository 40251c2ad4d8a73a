"""The ``loanstate`` command, run as the real console script in a subprocess: help, check, diagram, audit, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from loanstate.cli import cli

SCRIPT = Path(sys.executable).with_name("loanstate")
DEFAULT_TOML = Path(__file__).resolve().parent.parent / "loanstate" / "lifecycles" / "xfd_default.toml"
COMMANDS = ["demo", "check", "diagram", "audit", "gateway", "deliver", "outbox", "outbox status", "outbox retry"]
COMMANDS += ["outbox skip"]


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``loanstate ARGS`` and capture what it says."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the run failed with exit 2 and one clear line, no traceback; return that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("loanstate: error: ")
    return lines[0]


BROKEN = """
[lifecycle]
initial = "NEW"

[statuses]
NEW = "in force"
LOST = "never reached"

[[transitions]]
before = "NEW"
after = "GONE"
"""


def test_group_help_lists_every_command() -> None:
    """``loanstate --help`` (the console script) lists every command and an example."""
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("demo", "check", "diagram", "audit", "gateway", "deliver", "outbox"):
        assert f"  {command} " in result.stdout
    assert "Example" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    """``--help`` works on every command and shows an example (in process: the same click app, faster)."""
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


def test_python_dash_m_runs_the_same_command() -> None:
    """``python -m loanstate`` is the same CLI (version and help)."""
    result = subprocess.run(
        [sys.executable, "-m", "loanstate", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith("loanstate, version ")


def test_check_sound_definition_exits_zero() -> None:
    """A sound lifecycle file is reported OK with its shape."""
    result = run("check", DEFAULT_TOML)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "4 statuses, 7 transitions" in result.stdout


def test_check_lists_every_problem_with_lines_and_exits_one(tmp_path: Path) -> None:
    """A definition with mistakes lists each (file:line, code) and exits 1; --format json lists them too."""
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN, encoding="utf-8")
    result = run("check", path)
    assert result.returncode == 1, result.stderr
    for code in ("unknown-status", "unreachable"):
        assert code in result.stdout
    assert f"{path}:11:" in result.stdout  # the line of after = "GONE"
    data = json.loads(run("check", path, "--format", "json").stdout)
    assert data["ok"] is False
    assert {p["code"] for p in data["problems"]} >= {"unknown-status", "unreachable"}


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_check_unreadable_file_is_one_line_exit_two(tmp_path: Path, kind: str) -> None:
    """A missing file, a directory or a binary file: one line saying what is wrong, exit 2."""
    path = tmp_path / "lifecycle.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\x00\x01\x02PK\x03\x04")
    line = one_line_error(run("check", path))
    assert str(path) in line
    assert {"missing": "no such file", "directory": "directory", "binary": "binary"}[kind] in line


def test_diagram_prints_mermaid_and_dot_of_a_definition(tmp_path: Path) -> None:
    """``diagram`` prints the default lifecycle as Mermaid, and a file's as DOT (also to --output)."""
    mermaid = run("diagram")
    assert mermaid.returncode == 0
    assert mermaid.stdout.startswith("stateDiagram-v2")
    assert "NEW --> OVERDUE : mark_overdue" in mermaid.stdout
    out = tmp_path / "lifecycle.dot"
    dot = run("diagram", DEFAULT_TOML, "--format", "dot", "--output", out)
    assert dot.returncode == 0, dot.stderr
    assert out.read_text(encoding="utf-8").startswith('digraph "xfd_default"')


def test_diagram_svg_renders_with_graphviz_or_says_how_to_get_it(tmp_path: Path) -> None:
    """``--output x.svg`` renders through Graphviz when ``dot`` is installed, else says how to install it."""
    out = tmp_path / "lifecycle.svg"
    result = run("diagram", "--output", out)
    if shutil.which("dot"):
        assert result.returncode == 0, result.stderr
        assert "<svg" in out.read_text(encoding="utf-8")
    else:
        line = one_line_error(result)
        assert "Graphviz" in line
        assert "apt install graphviz" in line
        assert not out.exists()


def test_diagram_of_a_broken_definition_is_one_line_exit_two(tmp_path: Path) -> None:
    """A definition with errors given as input: one line pointing at ``loanstate check``, exit 2."""
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN, encoding="utf-8")
    line = one_line_error(run("diagram", path))
    assert f"loanstate check {path}" in line


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    """With ``--debug`` an input error shows its traceback instead of one line."""
    result = run("audit", tmp_path / "missing.jsonl", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "UnreadableInput" in result.stderr


def test_user_text_is_never_read_as_markup(tmp_path: Path) -> None:
    """Brackets in a definition (``[/b]``) are printed as they are, not taken for rich markup."""
    path = tmp_path / "odd.toml"
    path.write_text(BROKEN.replace('LOST = "never reached"', '"[/b]" = "a typo"'), encoding="utf-8")
    result = run("check", path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "status name '[/b]'" in result.stdout


def test_check_never_writes_a_control_character_to_the_terminal(tmp_path: Path) -> None:
    """A status named with an ESC sequence is reported with ``\\x1b`` shown as text, never as the ESC byte."""
    definition = tmp_path / "odd.toml"
    definition.write_text(
        '[lifecycle]\ninitial = "NEW"\nterminal = ["DONE"]\n[statuses]\nNEW = "in force"\nDONE = "done"\n'
        '"X\\u001b[2J" = "odd"\n[[transitions]]\nbefore = "NEW"\nafter = "DONE"\n',
        encoding="utf-8",
    )
    result = run("check", definition)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert "X\\x1b[2J" in result.stdout


def test_the_command_line_imports_no_test_kit() -> None:
    """Every command module (the demo job included) loads without ``loanstate.testing`` or Hypothesis."""
    code = (
        "import sys, pkgutil, importlib, loanstate.cli as cli\n"
        "for m in pkgutil.iter_modules(cli.__path__):\n"
        "    importlib.import_module('loanstate.cli.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.startswith(('loanstate.testing', 'hypothesis')))\n"
        "print(len(list(pkgutil.iter_modules(cli.__path__))), bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    count, bad = result.stdout.split(" ", 1)
    assert int(count) >= 10
    assert bad.strip() == "[]"
