"""The docs' non-Python blocks hold: TOML loads and checks, shell blocks run or name real commands.

Python blocks already run through Sybil (conftest.py). Here: every ```toml block
in README.md and docs/ parses, and one that declares a lifecycle builds a
machine with no problem; every shell block is either run by a test in this
module (marked ``<!-- run by tests/test_docs_blocks.py -->`` on the line before
its fence: a page's marked blocks run in order with bash, in one scratch
directory, after the page's entry in ``SETUPS``) or marked
``<!-- illustrative -->``, and every ``loanstate ...`` line
in any shell block (and every ``$ loanstate ...`` line of a text block) names
subcommands and options that exist on the real click command.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from _cli import clean_env, run

from loanstate import LoanMachine
from loanstate.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
SHELLS = {"sh", "bash", "console", "shell"}
ILLUSTRATIVE = "<!-- illustrative -->"
RUN_HERE = "<!-- run by tests/test_docs_blocks.py -->"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})(?P<lang>[\w-]*)")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, text, first line and the line before its fence."""

    page: Path
    line: int
    lang: str
    text: str
    marker: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    """Every fenced block of ``page``, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end])
        marker = lines[index - 1].strip() if index else ""
        yield Block(page, index + 1, opening["lang"], body + "\n", marker)
        index = end + 1


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
TOML_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "toml"]
SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.lang in SHELLS]


def command_lines(block: Block) -> list[list[str]]:
    """The argument lists of every ``loanstate`` command in a shell block (or a text block's ``$`` lines)."""
    text = block.text.replace("\\\n", " ")
    commands = []
    for raw in text.splitlines():
        line = raw.strip()
        if block.lang in {"console", "text"}:
            if not line.startswith("$ "):
                continue  # output, not a command
            line = line[2:]
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # a line of a multi-line quoted argument (a psql query, say)
            assert "loanstate " not in line, (str(block), line)
            continue
        segment: list[str] = []
        redirected = False
        for token in [*tokens, ";"]:
            if redirected or re.fullmatch(r"\d?[<>]{1,2}", token):
                redirected = not redirected  # drop a redirection and its file
            elif token in {"&&", "||", "|", ";"}:
                while segment and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", segment[0]):
                    segment.pop(0)  # an environment assignment before the command
                if segment and Path(segment[0]).name == "loanstate":
                    commands.append(segment[1:])
                segment = []
            else:
                segment.append(token)
    return commands


def unknown_in(args: list[str]) -> list[str]:
    """What ``loanstate ARGS`` names that the real command does not have: subcommands or options."""
    command: click.Command = cli
    context = click.Context(cli, info_name="loanstate")
    wrong: list[str] = []
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            options = [p for p in command.get_params(context) if isinstance(p, click.Option)]
            option = next((o for o in options if name in (*o.opts, *o.secondary_opts)), None)
            if option is None:
                wrong.append(f"{context.command_path} {name}")
            elif not (option.is_flag or option.count or "=" in token):
                next(tokens, None)  # its value
        elif isinstance(command, click.Group):
            sub = command.get_command(context, token)
            if sub is None:
                wrong.append(f"{context.command_path} {token}")
                break
            command, context = sub, click.Context(sub, parent=context, info_name=token)
    return wrong


# -- TOML ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=str)
def test_every_toml_block_parses_and_every_lifecycle_passes_check(block: Block) -> None:
    """A ```toml block parses; one with a [lifecycle] table builds a machine whose check finds nothing."""
    data = tomllib.loads(block.text)
    if "lifecycle" in data:
        assert LoanMachine.problems_in_dict(data) == [], block
        assert LoanMachine.from_dict(data).check() == []
    else:
        assert set(data) <= {"database", "top", "tool"}, (block, sorted(data))  # a config file, or pyproject.toml


def test_the_docs_declare_lifecycles_in_toml() -> None:
    """The TOML check is not vacuous: the tutorial and the lifecycle reference each declare one."""
    declaring = {block.page.name for block in TOML_BLOCKS if "[lifecycle]" in block.text}
    assert {"tutorial.md", "lifecycle.md"} <= declaring


# -- shell blocks -------------------------------------------------------------------


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=str)
def test_every_shell_block_is_run_here_or_marked_illustrative(block: Block) -> None:
    """Each shell block carries one of the two markers on the line before its fence; run ones are known here."""
    assert block.marker in {ILLUSTRATIVE, RUN_HERE}, f"{block}: mark it {ILLUSTRATIVE} or run it in a test"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang in SHELLS | {"text"} and command_lines(b)], ids=str)
def test_every_loanstate_command_in_the_docs_exists(block: Block) -> None:
    """Each ``loanstate ...`` line names subcommands and options the real click command has."""
    for args in command_lines(block):
        assert unknown_in(args) == [], (str(block), args)


def test_the_command_checker_catches_what_does_not_exist() -> None:
    """The checker is not vacuous: a wrong subcommand or option is reported, real ones are not."""
    assert unknown_in(["outbox", "status", "--format", "json", "--db", "sqlite://"]) == []
    assert unknown_in(["outbox", "staus"]) == ["loanstate outbox staus"]
    assert unknown_in(["check", "x.toml", "--formatt", "json"]) == ["loanstate check --formatt"]
    fake = Block(ROOT / "README.md", 1, "console", "$ A=1 loanstate demo --seed=3 > out.txt  # a comment\nout\n", "")
    assert command_lines(fake) == [["demo", "--seed=3"]]


# -- the tutorial -------------------------------------------------------------------

TUTORIAL = ROOT / "docs" / "tutorial.md"


def tutorial_lifecycle() -> str:
    """The tutorial's one lifecycle file, as its TOML block shows it."""
    (block,) = [b for b in TOML_BLOCKS if b.page == TUTORIAL]
    return block.text


def write_tutorial_lifecycle(workdir: Path) -> None:
    """What a reader of the tutorial has done before its shell block: saved the TOML of step 2."""
    (workdir / "my_lifecycle.toml").write_text(tutorial_lifecycle(), encoding="utf-8")


#: What a page's reader has done before its first run-here block, by page.
SETUPS: dict[str, Callable[[Path], None]] = {"docs/tutorial.md": write_tutorial_lifecycle}
RUN_PAGES = sorted({block.page for block in SHELL_BLOCKS if block.marker == RUN_HERE})


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_blocks_marked_as_run_here_succeed(page: Path, tmp_path: Path) -> None:
    """A page's run-here blocks run in order in one scratch directory; each exits 0 (`check`: 1 on a problem)."""
    setup = SETUPS.get(str(page.relative_to(ROOT)))
    if setup is not None:
        setup(tmp_path)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    for block in [b for b in SHELL_BLOCKS if b.page == page and b.marker == RUN_HERE]:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.text],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=clean_env(PATH=path),
        )
        assert result.returncode == 0, (str(block), result.stdout, result.stderr)
        assert "Traceback" not in result.stderr


def test_the_tutorial_uses_its_own_lifecycle_from_start_to_end() -> None:
    """The tutorial's store is built on the lifecycle file it declares: the file its Python writes is the TOML shown.

    (The text is written by a block Sybil runs but the page hides, right after the TOML it repeats.)
    """
    text = TUTORIAL.read_text(encoding="utf-8")
    hidden = re.findall(r"<!-- invisible-code-block: python\n(.*?)-->", text, flags=re.DOTALL)
    python = "\n".join([*(b.text for b in ALL_BLOCKS if b.page == TUTORIAL and b.lang == "python"), *hidden])
    assert tutorial_lifecycle().split("\n", 1)[1] in python  # the shown file, after its "# name" line
    assert "machine=LoanMachine.from_file(" in python
    assert "default_machine" not in python
    assert text.count("```toml") == 1
    checks = [b for b in SHELL_BLOCKS if b.page == TUTORIAL and "loanstate check my_lifecycle.toml" in b.text]
    assert [b.marker for b in checks] == [RUN_HERE]  # the file passes `loanstate check`, in a test


@pytest.mark.slow
def test_the_tutorial_demo_sample_shows_what_the_demo_prints_for_its_seed() -> None:
    """The rows the seed fixes (changes, refusals, deliveries, parking) read as ``loanstate demo`` prints them."""
    text = TUTORIAL.read_text(encoding="utf-8")
    sample = text.split("```text\nloanstate demo:", 1)[1].split("```", 1)[0]
    printed = run("demo", env={"COLUMNS": "80"}, timeout=600).stdout
    fixed = (
        "changes recorded",
        "illegal attempts refused",
        "events delivered",
        "not delivered",
        "parked loans",
        "waiting behind parked",
        "left pending",
        "each request_id effective once",
        "per-loan order held",
        "gateway agrees with store",
    )

    def rows(summary: str) -> dict[str, str]:
        return {line[:32].strip(): line[32:].split()[0] for line in summary.splitlines() if line[:32].strip()}

    assert printed.splitlines()[0] == f"loanstate demo:{sample.splitlines()[0]}"
    assert {k: rows(sample)[k] for k in fixed} == {k: rows(printed)[k] for k in fixed}
