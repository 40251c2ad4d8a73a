"""``loanstate import``: an existing loan book, or (``--history``) its past changes, written to the store in batches."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import attrs
import click

from loanstate.cli._common import EXIT_FINDINGS, debug_option, load_machine, stdout
from loanstate.cli.audit import encoding_option, progress_bar

if TYPE_CHECKING:
    from loanstate._machine import LoanMachine
    from loanstate.audit import AuditFinding
    from loanstate.store import HistoryImportReport, ImportReport

__all__ = ["import_"]

#: The fields a loan book's CSV header must name.
_REQUIRED = ("loan_apply_no", "status", "opened_at")


@click.command(
    "import",
    epilog=(
        "Example: loanstate import book.jsonl --db sqlite:///loans.db --format json\n\n"
        "Each record: loan_apply_no, status (its current status), opened_at (ISO 8601 with an offset, or the "
        "API's yyyy-MM-dd HH:mm:ss in GMT+8), optional customer_id and institution_loan_no; other fields are "
        "ignored. JSON Lines: one object per line. CSV: a header row naming the fields. Running it again is "
        "safe: loans already open the same way are counted as unchanged.\n\n"
        "With --history, FILE holds changes already notified to the platform (LoanChangeEvent.to_dict() or "
        "to_top_param() records): it is audited first and refused on any finding unless --accept-findings; "
        "then written as history, each loan at its last status, nothing sent. Example: loanstate import "
        "--history changes.jsonl --db sqlite:///loans.db"
    ),
)
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--db", help="SQLAlchemy URL of the store, without password (or LOANSTATE_DB_URL).")
@click.option("--machine", "machine_file", type=click.Path(path_type=str), help="Lifecycle TOML (default: shipped).")
@click.option("--history", is_flag=True, help="FILE is a history of past changes, not a loan book.")
@click.option("--accept-findings", is_flag=True, help="With --history: import even if the audit finds problems.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--input-format",
    type=click.Choice(["jsonl", "csv"]),
    help="Format of FILE (default: from its suffix, else sniffed).",
)
@encoding_option
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Loans per transaction (default: 1000, with --history 200)."
)
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=0), help="Problems listed in the text report."
)
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@debug_option
def import_(  # noqa: PLR0917 - click passes every option by name anyway
    file: str,
    db: str | None,
    machine_file: str | None,
    history: bool,
    accept_findings: bool,
    fmt: str,
    input_format: str | None,
    encoding: str,
    batch_size: int | None,
    limit: int,
    progress: bool | None,
) -> int:
    """Open an existing loan book in the store: each loan at its current status, no history, nothing sent.

    Creates the tables if they are missing. Bad records and conflicts (a loan
    already open with another status or identity, never overwritten) are
    reported with their line numbers; the good records are imported. Exit 0
    when every record was imported or already there, 1 when any was bad or
    conflicting, 2 for a usage or input error.

    With ``--history``: exit 1 also when the audit's findings refused the file.
    """
    from loanstate.audit._read import records_of, source_of
    from loanstate.cli._settings import open_store, settings
    from loanstate.store import SqlStore
    from loanstate.store._import import import_loans

    machine = load_machine(machine_file)
    show_progress = sys.stderr.isatty() if progress is None else progress
    if history:
        options = _HistoryOptions(machine, input_format, encoding, batch_size, accept_findings, show_progress)
        return _import_history(file, db, options, fmt, limit)
    if accept_findings:
        raise click.UsageError("--accept-findings goes with --history")
    source = source_of(file, encoding, input_format, _REQUIRED)  # type: ignore[arg-type]
    with open_store(settings(None, db), create=True) as opened:
        store = SqlStore(opened.engine, machine=machine)
        # The bar is transient: it is cleared before the report is written.
        with progress_bar(show_progress) as on_progress:
            report = import_loans(store, records_of(source(on_progress, None)), batch_size=batch_size or 1000)
    if fmt == "json":
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    else:
        _report_text(file, report, limit)
    return 0 if report.clean else EXIT_FINDINGS


def _report_text(file: str, report: ImportReport, limit: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout()
    table = Table(title=f"{escape(file)}: loans imported", title_justify="left")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("opened", str(report.opened))
    table.add_row("unchanged", str(report.unchanged))
    for name, some in (("conflicts", report.conflicts), ("invalid", report.invalid)):
        table.add_row(name, f"[red]{len(some)}[/red]" if some else "0")
    console.print(table)
    problems = sorted([*report.conflicts, *report.invalid], key=lambda p: p.line)
    if not problems:
        console.print("[green]every record imported or already there[/green]")
        return
    shown = problems[:limit]
    more = len(problems) - len(shown)
    console.print(f"first {len(shown)} of {len(problems)} problems:" if more else "problems:")
    for problem in shown:
        console.print(f"  {problem}", markup=False)
    if more:
        console.print(f"  ... and {more} more (--format json lists all, --limit N shows more)")


# -- --history: past changes, audited first --------------------------------------------


@attrs.frozen
class _HistoryOptions:
    machine: LoanMachine
    input_format: str | None
    encoding: str
    batch_size: int | None
    accept_findings: bool
    progress: bool


def _import_history(file: str, db: str | None, options: _HistoryOptions, fmt: str, limit: int) -> int:
    """Audit ``file``; unless refused, import it as history; report both. The exit code."""
    from loanstate.audit import HistoryAudit
    from loanstate.audit._read import records_of, source_of
    from loanstate.cli._settings import open_store, settings
    from loanstate.store import SqlStore
    from loanstate.store._history_import import DEFAULT_HISTORY_BATCH, import_history

    audit = HistoryAudit.of_file(
        file,
        machine=options.machine,
        input_format=options.input_format,  # type: ignore[arg-type]
        encoding=options.encoding,
    )
    report: HistoryImportReport | None = None
    # The bar is transient: it is cleared before anything is written to stdout.
    with progress_bar(options.progress) as on_progress:
        audit.on_progress = on_progress
        findings = list(audit.findings())
        if not findings or options.accept_findings:
            source = source_of(file, options.encoding, options.input_format)  # type: ignore[arg-type]
            with open_store(settings(None, db), create=True) as opened:
                store = SqlStore(opened.engine, machine=options.machine)
                batch = options.batch_size or DEFAULT_HISTORY_BATCH
                report = import_history(store, records_of(source(on_progress, None)), batch_size=batch)
    if fmt == "json":
        out = {
            "findings": [f.to_dict() for f in findings],
            "refused": report is None,
            "import": None if report is None else report.to_dict(),
        }
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    else:
        _history_text(file, findings, report, limit)
    return 0 if report is not None and report.clean else EXIT_FINDINGS


def _history_text(file: str, findings: list[AuditFinding], report: HistoryImportReport | None, limit: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout()
    if findings:
        shown = findings[:limit]
        more = len(findings) - len(shown)
        head = f"first {len(shown)} of {len(findings)} findings" if more else "findings"
        console.print(f"{escape(file)}: the audit reports {head}:")
        for finding in shown:
            console.print(f"  {finding}", markup=False)
        if more:
            console.print(f"  ... and {more} more (--format json lists all, --limit N shows more)")
    if report is None:
        console.print(
            f"[red]refused: {len(findings)} audit findings; nothing imported[/red] "
            "(fix the file, or import it anyway with --accept-findings)"
        )
        return
    table = Table(title=f"{escape(file)}: history imported", title_justify="left")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("events imported", str(report.imported))
    table.add_row("events unchanged", str(report.unchanged))
    table.add_row("loans opened", str(report.opened))
    for name, some in (("conflicts", report.conflicts), ("invalid", report.invalid)):
        table.add_row(name, f"[red]{len(some)}[/red]" if some else "0")
    console.print(table)
    problems = sorted([*report.conflicts, *report.invalid], key=lambda p: p.line)
    if not problems:
        console.print("[green]every change imported or already there; none will be sent[/green]")
        return
    shown_problems = problems[:limit]
    more = len(problems) - len(shown_problems)
    console.print(f"first {len(shown_problems)} of {len(problems)} problems:" if more else "problems:")
    for problem in shown_problems:
        console.print(f"  {problem}", markup=False)
    if more:
        console.print(f"  ... and {more} more (--format json lists all, --limit N shows more)")
