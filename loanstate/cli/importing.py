"""``loanstate import``: an existing loan book (JSON Lines or CSV) opened in the store, in batches."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from loanstate.cli._common import EXIT_FINDINGS, debug_option, load_machine, stdout
from loanstate.cli.audit import encoding_option, progress_bar

if TYPE_CHECKING:
    from loanstate.store import ImportReport

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
        "safe: loans already open the same way are counted as unchanged."
    ),
)
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--db", help="SQLAlchemy URL of the store, without password (or LOANSTATE_DB_URL).")
@click.option("--machine", "machine_file", type=click.Path(path_type=str), help="Lifecycle TOML (default: shipped).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--input-format",
    type=click.Choice(["jsonl", "csv"]),
    help="Format of FILE (default: from its suffix, else sniffed).",
)
@encoding_option
@click.option(
    "--batch-size", default=1000, show_default=True, type=click.IntRange(min=1), help="Loans per transaction."
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
    fmt: str,
    input_format: str | None,
    encoding: str,
    batch_size: int,
    limit: int,
    progress: bool | None,
) -> int:
    """Open an existing loan book in the store: each loan at its current status, no history, nothing sent.

    Creates the tables if they are missing. Bad records and conflicts (a loan
    already open with another status or identity, never overwritten) are
    reported with their line numbers; the good records are imported. Exit 0
    when every record was imported or already there, 1 when any was bad or
    conflicting, 2 for a usage or input error.
    """
    from loanstate.audit._read import records_of, source_of
    from loanstate.cli._settings import open_store, settings
    from loanstate.store import SqlStore
    from loanstate.store._import import import_loans

    machine = load_machine(machine_file)
    source = source_of(file, encoding, input_format, _REQUIRED)  # type: ignore[arg-type]
    show_progress = sys.stderr.isatty() if progress is None else progress
    with open_store(settings(None, db), create=True) as opened:
        store = SqlStore(opened.engine, machine=machine)
        # The bar is transient: it is cleared before the report is written.
        with progress_bar(show_progress) as on_progress:
            report = import_loans(store, records_of(source(on_progress, None)), batch_size=batch_size)
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
