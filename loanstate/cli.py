"""The ``loanstate`` command: demo, check, diagram, audit, gateway, deliver, outbox.

Exit status, for every command: 0 when all is well, 1 when the command found
something (problems in a definition, findings in a history, parked loans, a
broken guarantee in the demo), 2 for a usage or input error (a missing or
unreadable file, a bad definition given as input, an unreachable database,
missing credentials). Input errors print one line, never a traceback; the
``--debug`` flag (on any command) shows the traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from loanstate._cli_common import (
    EXIT_FINDINGS,
    EXIT_USAGE,
    InputError,
    debug_option,
    first_line,
    load_machine,
    stderr,
    stdout,
)
from loanstate._cli_ops import register
from loanstate._errors import LoanStateError, UnreadableInput

if TYPE_CHECKING:
    from loanstate._audit import AuditFinding, HistoryAudit

__all__ = ["cli", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: loanstate demo --loans 500",
)
@click.version_option(package_name="loanstate", prog_name="loanstate")
@debug_option
def cli() -> None:
    """Legal loan status changes, recorded and notified to Alibaba exactly once in effect.

    Exit status: 0 ok, 1 findings, 2 usage or input error (--debug shows a traceback).
    """


# -- check -------------------------------------------------------------------------


@cli.command(epilog="Example: loanstate check my_lifecycle.toml")
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
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return EXIT_FINDINGS if problems else 0
    from rich.markup import escape

    console = stdout()
    if problems:
        # Paths and messages quote the user's text, which must never be read as rich markup.
        for p in problems:
            console.print(f"{escape(str(p))}  [dim]\\[{escape(p.code)}][/dim]")
        noun = "problem" if len(problems) == 1 else "problems"
        console.print(f"[bold red]{escape(file)}: {len(problems)} {noun}[/bold red]")
        return EXIT_FINDINGS
    machine = LoanMachine.from_file(file)
    edges = sum(len(t.before) for t in machine.transitions)
    terminal = ", ".join(sorted(machine.terminal)) or "none"
    console.print(
        f"[green]{escape(file)}: OK[/green]: lifecycle {escape(repr(machine.name))}, {len(machine.statuses)} statuses, "
        f"{edges} transitions, initial {machine.initial}, terminal {terminal}"
    )
    return 0


# -- diagram -----------------------------------------------------------------------

_GRAPHVIZ_HELP: Final = (
    "Graphviz `dot` is not installed, so {path} cannot be rendered. Install Graphviz "
    "(Debian/Ubuntu: sudo apt install graphviz; macOS: brew install graphviz; "
    "Windows: winget install graphviz; or https://graphviz.org/download/), "
    "or write the DOT text instead: loanstate diagram {src}--format dot --output lifecycle.dot"
)


@cli.command(epilog="Examples: loanstate diagram --format dot;  loanstate diagram my.toml --output lifecycle.svg")
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
        click.echo(text, nl=False)
    return 0


# -- audit -------------------------------------------------------------------------


@cli.command(
    epilog=(
        "Example: loanstate audit history.jsonl --machine my_lifecycle.toml --format json\n\n"
        "Each record carries the change event's fields: loan_apply_no, before_status, after_status, "
        "change_time (ISO 8601 with an offset), request_id (customer_id, institution_loan_no optional); "
        "other fields are ignored. JSON Lines: one object per line. CSV: a header row naming the fields."
    )
)
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--machine", "machine_file", type=click.Path(path_type=str), help="Lifecycle TOML (default: shipped).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--input-format",
    type=click.Choice(["jsonl", "csv"]),
    help="Format of FILE (default: from its suffix, else sniffed).",
)
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of FILE, e.g. gbk.")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=0), help="Findings listed in the text report."
)
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@debug_option
def audit(  # noqa: PLR0917 - click passes every option by name anyway
    file: str,
    machine_file: str | None,
    fmt: str,
    input_format: str | None,
    encoding: str,
    limit: int,
    progress: bool | None,
) -> int:
    """Audit a history of status changes (JSON Lines or CSV) for illegal or inconsistent records.

    Reports malformed records, unknown statuses, illegal pairs, chain breaks,
    time going backwards within a loan and duplicate request_ids, with line
    numbers. Streams: memory does not grow with the file. Exit 1 when there
    are findings.
    """
    from loanstate._audit import HistoryAudit

    machine = load_machine(machine_file)
    show_progress = sys.stderr.isatty() if progress is None else progress
    with _progress_bar(show_progress) as on_progress:
        history = HistoryAudit.of_file(
            file,
            machine=machine,
            input_format=input_format,  # type: ignore[arg-type]
            encoding=encoding,
            on_progress=on_progress,
        )
        if fmt == "json":
            _audit_json(history)
        else:
            _audit_text(history, limit)
    assert history.summary is not None
    return 0 if history.summary.clean else EXIT_FINDINGS


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(done: int, total: int, phase: str) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        yield update


def _audit_json(history: HistoryAudit) -> None:
    # Findings are written as they come, so even millions of them need no memory.
    write = sys.stdout.write
    write('{"findings": [')
    first = True
    for finding in history.findings():
        write(("\n  " if first else ",\n  ") + json.dumps(finding.to_dict(), ensure_ascii=False))
        first = False
    assert history.summary is not None
    write(("\n" if not first else "") + '], "summary": ' + json.dumps(history.summary.to_dict()) + "}\n")


def _audit_text(history: HistoryAudit, limit: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    shown: list[AuditFinding] = []
    for finding in history.findings():
        if len(shown) < limit:
            shown.append(finding)
    summary = history.summary
    assert summary is not None
    console = stdout()
    table = Table(
        title=f"{escape(str(summary.source))}: {summary.records} records, {summary.loans} loans", title_justify="left"
    )
    table.add_column("finding")
    table.add_column("count", justify="right")
    for kind, count in summary.counts.items():
        table.add_row(kind, f"[red]{count}[/red]" if count else "0")
    console.print(table)
    if summary.clean:
        console.print("[green]no findings[/green]")
        return
    more = summary.findings - len(shown)
    console.print(f"first {len(shown)} of {summary.findings} findings:" if more else "findings:")
    for finding in shown:
        console.print(f"  {finding}", markup=False)
    if more:
        console.print(f"  ... and {more} more (--format json lists all, --limit N shows more)")


# -- the durable side: demo, gateway, deliver, outbox --------------------------------


register(cli)


# -- entry point ---------------------------------------------------------------------


def _input_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [LoanStateError, OSError, UnicodeError]
    try:
        from sqlalchemy.exc import SQLAlchemyError

        types.append(SQLAlchemyError)
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exits with its status (0 ok, 1 findings, 2 usage or input error)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("LOANSTATE_DEBUG") == "1"
    try:
        status = cli.main(args=args, prog_name="loanstate", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("loanstate: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if debug:
            raise
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("loanstate: interrupted", err=True)
        sys.exit(130)
    except _input_error_types() as exc:
        if debug:
            raise
        message = first_line(exc)
        if isinstance(exc, UnreadableInput | LoanStateError):
            click.echo(f"loanstate: error: {message}", err=True)
        else:
            click.echo(f"loanstate: error: {type(exc).__name__}: {message}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"loanstate: internal error: {type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    sys.exit(status if isinstance(status, int) else 0)
