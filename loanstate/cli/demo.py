"""``loanstate demo``: the whole job on embedded defaults, with live progress and a summary."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from loanstate.cli._common import EXIT_FINDINGS, InputError, debug_option, first_line, json_text, printable, stdout
from loanstate.cli._settings import check_db_flag

if TYPE_CHECKING:
    from rich.table import Table

    from loanstate.cli._demo_run import DemoSummary

__all__ = ["demo"]


class _RichDemoProgress:
    """Live progress of the demo on stderr (rich), cleared from a terminal before the summary prints."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            console=console,
            # On a terminal the bars vanish when done, so the summary's first line is
            # never drawn over; into a file or pipe their final state stays, as a log.
            transient=console.is_terminal,
        )
        self.tasks: dict[str, Any] = {}
        self.notes: dict[str, int] = {}

    def start(self, phase: str, total: int) -> None:
        self.tasks[phase] = self.bar.add_task(phase, total=total, extra="")

    def advance(self, phase: str, amount: int = 1) -> None:
        self.bar.advance(self.tasks[phase], amount)

    def note(self, key: str, value: int) -> None:
        self.notes[key] = value
        if "delivering" in self.tasks:
            extra = "  ".join(f"{k} {v}" for k, v in sorted(self.notes.items()))
            self.bar.update(self.tasks["delivering"], extra=extra)


@click.command(epilog="Example: loanstate demo --loans 500 --seed 7")
@click.option("--loans", default=2000, show_default=True, type=click.IntRange(1, 200_000), help="How many loans.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same loans, changes and outcome.")
@click.option("--db", help="SQLAlchemy URL of an empty database (default: SQLite in a temporary directory).")
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 512))
@click.option(
    "--fault-rate",
    default=0.03,
    show_default=True,
    type=click.FloatRange(0.0, 0.5),
    help="Share of requests the fake gateway fails transiently.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Live progress on stderr (default: when a terminal).")
@debug_option
def demo(  # noqa: PLR0917 - click passes every option by name anyway
    loans: int, seed: int, db: str | None, concurrency: int, fault_rate: float, fmt: str, progress: bool | None
) -> int:
    """Run the whole job on embedded defaults and check its guarantees.

    Starts a fake Alibaba gateway on loopback (with injected faults), records
    random legal lifecycles of many loans in a SQLite store (illegal attempts
    are refused), delivers every change through the dispatcher, and shows what
    happened: exit 0 when every guarantee held, 1 when one did not.
    """
    from loanstate.cli._demo_run import run_demo

    if db is not None:
        check_db_flag(db)  # refuses a password on the command line
    live = (sys.stderr.isatty() if progress is None else progress) and fmt == "text"
    reporter = _RichDemoProgress() if live else None
    if reporter is not None:
        reporter.bar.start()
    try:
        summary = run_demo(
            loans=loans, seed=seed, db=db, concurrency=concurrency, fault_rate=fault_rate, progress=reporter
        )
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):  # unreachable, not a database, access denied, ...
            where = printable(db) if db else "the temporary SQLite database"
            raise InputError(f"cannot use database {where}: {first_line(getattr(exc, 'orig', None) or exc)}") from None
        raise
    finally:
        if reporter is not None:
            reporter.bar.stop()  # before the summary: a live bar must not draw over it
    if fmt == "json":
        click.echo(json_text(summary.to_dict(), indent=2))
    else:
        stdout().print(summary_table(summary))
    return 0 if summary.ok else EXIT_FINDINGS


def summary_table(summary: DemoSummary) -> Table:
    """The demo's summary as a table at most 80 columns wide, naming what was not delivered and why."""
    from rich.markup import escape
    from rich.table import Table

    from loanstate.cli._demo_run import REFUSED_BY_PLATFORM

    def yes(flag: bool) -> str:
        return "[green]yes[/green]" if flag else "[bold red]NO[/bold red]"

    before, after = REFUSED_BY_PLATFORM
    table = Table(
        title=f"loanstate demo: {summary.loans} loans, seed {summary.seed}, {escape(printable(summary.database))}",
        title_justify="left",
        show_header=False,
        box=None,
        pad_edge=False,
    )
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("note", style="dim")
    left = "[bold red]deliverable: should be 0[/bold red]" if summary.undelivered else "deliverable: should be 0"
    for what, value, note in (
        ("changes recorded", str(summary.changes), "random legal lifecycles"),
        ("illegal attempts refused", str(summary.illegal_rejected), "nothing written"),
        ("events delivered", str(summary.delivered), "accepted by the gateway"),
        ("not delivered", str(summary.not_delivered), "of which:"),
        ("  parked loans", str(summary.parked_loans), f"platform refuses {before}->{after}"),
        ("  waiting behind parked", str(summary.waiting_behind_parked), "kept in per-loan order"),
        ("  left pending", str(summary.undelivered), left),
        ("faults injected", str(summary.faults_injected), "5xx, drops, timeouts, isp.*"),
        ("replays absorbed", str(summary.replays_absorbed), "same request_id, no effect"),
        ("rescheduled", str(summary.rescheduled), "retried via the outbox"),
        ("each request_id effective once", yes(summary.exactly_once), "at the gateway"),
        ("per-loan order held", yes(summary.order_held), "at the gateway"),
        ("gateway agrees with store", yes(summary.matches_store), "event by event"),
        ("elapsed", f"{summary.elapsed:.1f} s", ""),
        ("throughput", f"{summary.throughput:.0f} events/s", "end to end"),
    ):
        table.add_row(what, value, note)
    return table
