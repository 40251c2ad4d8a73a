"""``loanstate check`` and ``loanstate diagram``: a lifecycle definition, checked and drawn."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Final

import click

from loanstate.cli._common import (
    EXIT_FINDINGS,
    InputError,
    debug_option,
    json_text,
    load_machine,
    printable,
    stdout,
)

__all__ = ["check", "diagram"]


@click.command(epilog="Example: loanstate check my_lifecycle.toml")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@debug_option
def check(file: str, fmt: str) -> int:
    """Check a lifecycle definition (TOML) and list every problem in it.

    Exit 0 when it is sound, 1 when it has problems, 2 when it cannot be read.
    """
    from loanstate._machine import LoanMachine

    problems = LoanMachine.problems_in_file(file)
    unreadable = [p for p in problems if p.code == "unreadable"]
    if unreadable:
        raise InputError(str(unreadable[0]))
    if fmt == "json":
        out: dict[str, object] = {"file": file, "ok": not problems, "problems": []}
        out["problems"] = [{"code": p.code, "message": p.message, "where": p.where, "line": p.line} for p in problems]
        click.echo(json_text(out, indent=2))
        return EXIT_FINDINGS if problems else 0
    from rich.markup import escape

    console = stdout()
    if problems:
        # Paths and messages quote the user's text, which must never be read as rich markup.
        for p in problems:
            console.print(f"{escape(printable(p))}  [dim]\\[{escape(printable(p.code))}][/dim]")
        noun = "problem" if len(problems) == 1 else "problems"
        console.print(f"[bold red]{escape(printable(file))}: {len(problems)} {noun}[/bold red]")
        return EXIT_FINDINGS
    machine = LoanMachine.from_file(file)
    edges = sum(len(t.before) for t in machine.transitions)
    terminal = ", ".join(sorted(machine.terminal)) or "none"
    console.print(
        f"[green]{escape(printable(file))}: OK[/green]: lifecycle {escape(printable(repr(machine.name)))}, "
        f"{len(machine.statuses)} statuses, {edges} transitions, initial {escape(printable(machine.initial))}, "
        f"terminal {escape(printable(terminal))}"
    )
    return 0


# -- diagram -----------------------------------------------------------------------

_GRAPHVIZ_HELP: Final = (
    "Graphviz `dot` is not installed, so {path} cannot be rendered. Install Graphviz "
    "(Debian/Ubuntu: sudo apt install graphviz; macOS: brew install graphviz; "
    "Windows: winget install graphviz; or https://graphviz.org/download/), "
    "or write the DOT text instead: loanstate diagram {src}--format dot --output lifecycle.dot"
)


@click.command(epilog="Examples: loanstate diagram --format dot;  loanstate diagram my.toml --output lifecycle.svg")
@click.argument("file", required=False, type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Text format of the diagram.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=str),
    help="Write to this file; .svg or .png is rendered with Graphviz `dot`.",
)
@debug_option
def diagram(file: str | None, fmt: str, output: str | None) -> int:
    """Print the diagram of a lifecycle (the shipped default without FILE)."""
    machine = load_machine(file)
    suffix = Path(output).suffix.lower() if output else ""
    if suffix in (".svg", ".png"):
        dot = shutil.which("dot")
        if dot is None:
            raise InputError(_GRAPHVIZ_HELP.format(path=output, src=f"{file} " if file else ""))
        result = subprocess.run(
            [dot, f"-T{suffix[1:]}", "-o", str(output)],
            input=machine.to_dot().encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise InputError(f"dot failed: {result.stderr.decode(errors='replace').strip()[:300]}")
        click.echo(f"wrote {output}", err=True)
        return 0
    text = machine.to_dot() if fmt == "dot" else machine.to_mermaid()
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{output}: cannot write: {exc.strerror or exc}") from exc
        click.echo(f"wrote {output}", err=True)
    else:
        # Descriptions and names come from the definition: no control character reaches the terminal.
        click.echo(printable(text, keep_newlines=True), nl=False)
    return 0


# -- audit -------------------------------------------------------------------------
