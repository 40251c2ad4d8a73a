"""``loanstate audit``: a history file checked against the lifecycle, streaming."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timezone
from typing import TYPE_CHECKING, Any

import click

from loanstate.cli._common import (
    EXIT_FINDINGS,
    debug_option,
    load_machine,
    stderr,
    stdout,
)

if TYPE_CHECKING:
    from loanstate.audit import AuditFinding, HistoryAudit

__all__ = ["assume_offset_option", "audit", "encoding_option", "input_options", "progress_bar"]


def _encoding(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from loanstate.audit import check_encoding

    try:
        check_encoding(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _offset(ctx: click.Context, param: click.Parameter, value: str | None) -> timezone | None:
    from loanstate.audit import parse_offset

    if value is None:
        return None
    try:
        return timezone(parse_offset(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


encoding_option = click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    callback=_encoding,
    help="Text encoding of FILE, e.g. gbk (ASCII-based text encodings only).",
)
assume_offset_option = click.option(
    "--assume-offset",
    callback=_offset,
    metavar="+HH:MM",
    help="UTC offset of change_times written without one (the API's yyyy-MM-dd HH:mm:ss is GMT+8 anyway).",
)


def input_options(fn: Any) -> Any:
    """The options that say how to read a history file: --input-format, --encoding, --assume-offset."""
    fn = assume_offset_option(fn)
    fn = encoding_option(fn)
    return click.option(
        "--input-format",
        type=click.Choice(["jsonl", "csv"]),
        help="Format of FILE (default: from its suffix, else sniffed).",
    )(fn)


@click.command(
    epilog=(
        "Example: loanstate audit history.jsonl --machine my_lifecycle.toml --format json\n\n"
        "Each record carries the change event's fields: loan_apply_no, before_status, after_status, "
        "change_time (ISO 8601 with an offset, or the API's yyyy-MM-dd HH:mm:ss in GMT+8), "
        "request_id (customer_id, institution_loan_no optional); "
        "other fields are ignored. JSON Lines: one object per line. CSV: a header row naming the fields."
    )
)
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--machine", "machine_file", type=click.Path(path_type=str), help="Lifecycle TOML (default: shipped).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@input_options
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
    assume_offset: timezone | None,
    limit: int,
    progress: bool | None,
) -> int:
    """Audit a history of status changes (JSON Lines or CSV) for illegal or inconsistent records.

    Reports malformed records, unknown statuses, illegal pairs, chain breaks,
    time going backwards within a loan and duplicate request_ids, with line
    numbers. Streams: memory does not grow with the file. Exit 1 when there
    are findings.
    """
    from loanstate.audit import HistoryAudit

    machine = load_machine(machine_file)
    show_progress = sys.stderr.isatty() if progress is None else progress
    with progress_bar(show_progress) as on_progress:
        history = HistoryAudit.of_file(
            file,
            machine=machine,
            input_format=input_format,  # type: ignore[arg-type]
            encoding=encoding,
            on_progress=on_progress,
            assume_offset=assume_offset,
        )
        if fmt == "json":
            _audit_json(history)
        else:
            _audit_text(history, limit)
    assert history.summary is not None
    return 0 if history.summary.clean else EXIT_FINDINGS


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    """A transient progress bar on stderr (cleared when done), fed by ``update(done, total, phase)``."""
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
