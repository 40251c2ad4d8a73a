"""``loanstate outbox status | retry | skip``: the operator's handle on the outbox and its parked loans.

Everything an operator must copy (loan numbers, request ids) is printed whole,
never cut to fit a column; text from input is shown without control characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs
import click

from loanstate.cli._common import EXIT_FINDINGS, InputError, debug_option, json_text, printable
from loanstate.cli._settings import db_options, open_store, settings

if TYPE_CHECKING:
    from loanstate.store import OutboxStatus, ParkedLoan, SqlStore

__all__ = ["ParkedGroup", "group_parked", "outbox"]

#: How much of a group's error the text report shows (the JSON report has it whole).
_ERROR_SHOWN: Final = 160
# What makes one loan's error text differ from another's with the same cause.
_REQUEST_ID_NOTE: Final = re.compile(r"\s*\(request_id=[^)]*\)")
_AGE_NOTE: Final = re.compile(r"^failing for .*? \(max_age ([^)]*)\): ")


@attrs.frozen
class ParkedGroup:
    """Parked loans that failed the same way: the error, how many loans, how many events wait behind them."""

    error: str
    loans: int
    waiting: int
    sample_loan_apply_no: str
    sample_request_id: str


def _error_key(parked: ParkedLoan) -> str:
    """The parked loan's error with what is particular to it (its ids, how long it failed) taken out."""
    text = parked.last_error or "(no error recorded)"
    text = _REQUEST_ID_NOTE.sub("", text.replace(parked.request_id, "<request_id>"))
    text = text.replace(parked.loan_apply_no, "<loan_apply_no>")
    return _AGE_NOTE.sub(r"failing longer than max_age (\1): ", text)


def group_parked(parked: Iterable[ParkedLoan]) -> list[ParkedGroup]:
    """Parked loans grouped by error, the largest group first (ties by error text)."""
    groups: dict[str, list[ParkedLoan]] = {}
    for p in parked:
        groups.setdefault(_error_key(p), []).append(p)
    out = [
        ParkedGroup(
            error=key,
            loans=len(members),
            waiting=sum(m.waiting for m in members),
            sample_loan_apply_no=members[0].loan_apply_no,
            sample_request_id=members[0].request_id,
        )
        for key, members in groups.items()
    ]
    return sorted(out, key=lambda g: (-g.loans, g.error))


@click.group(epilog="Example: loanstate outbox status --db sqlite:///loans.db")
def outbox() -> None:
    """Look after the outbox: its status, and parked loans (retry or skip)."""


def _format_option(fn: Any) -> Any:
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)(fn)


def _status_dict(status: OutboxStatus, groups: list[ParkedGroup], limit: int) -> dict[str, Any]:
    listed = status.parked_loans if limit == 0 else status.parked_loans[:limit]
    return {
        "pending": status.pending,
        "delivered": status.delivered,
        "parked": status.parked,
        "skipped": status.skipped,
        "leased": status.leased,
        "lag_seconds": status.lag.total_seconds() if status.lag is not None else None,
        "parked_groups": [attrs.asdict(g) for g in groups],
        "parked_loans_total": len(status.parked_loans),
        "parked_loans": [attrs.asdict(p) for p in listed],
    }


def _print_status(status: OutboxStatus, groups: list[ParkedGroup], limit: int) -> None:
    """The text report: plain lines (no table that could fold an id), groups first, then the loans."""
    from rich.cells import cell_len

    lag = f"{status.lag.total_seconds():.0f} s" if status.lag is not None else "-"
    click.echo(
        f"pending {status.pending} (leased {status.leased}, oldest waits {lag})  delivered {status.delivered}  "
        f"parked {status.parked}  skipped {status.skipped}"
    )
    parked = status.parked_loans
    if not parked:
        click.echo("no parked loans")
        return
    errors = "1 error" if len(groups) == 1 else f"{len(groups)} distinct errors"
    loans = "1 loan" if len(parked) == 1 else f"{len(parked)} loans"
    click.echo(f"\nparked loans by error ({loans}, {errors}):")
    width = len(str(groups[0].loans))
    for g in groups:
        error = g.error if len(g.error) <= _ERROR_SHOWN else g.error[: _ERROR_SHOWN - 1] + "…"
        waiting = f", {g.waiting} waiting behind" if g.waiting else ""
        noun = "loan" if g.loans == 1 else "loans"
        click.echo(printable(f"  {g.loans:>{width}} {noun}{waiting}: {error}"))
    listed = parked if limit == 0 else parked[:limit]
    shown = f"all {len(parked)}" if len(listed) == len(parked) else f"first {len(listed)} of {len(parked)} (--limit)"
    click.echo(f"\nparked loans, {shown}:")
    rows = [("loan_apply_no", "request_id", "attempts", "waiting")]
    rows += [(printable(p.loan_apply_no), printable(p.request_id), str(p.attempts), str(p.waiting)) for p in listed]
    # Cells, not characters: a loan number in Chinese takes two columns per character.
    widths = [max(cell_len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = (cell + " " * (w - cell_len(cell)) for cell, w in zip(row, widths, strict=True))
        click.echo(("  " + "  ".join(cells)).rstrip())
    click.echo(
        "\nresolve: loanstate outbox retry LOAN_APPLY_NO... | --all | --error-contains TEXT"
        "\n         loanstate outbox skip REQUEST_ID... [--yes]"
    )


@outbox.command("status", epilog="Example: loanstate outbox status --db sqlite:///loans.db --limit 50")
@db_options
@_format_option
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="List at most this many parked loans (0: all); the groups always count them all.",
)
@debug_option
def outbox_status(db: str | None, config: str | None, fmt: str, limit: int) -> int:
    """Counts per state, the lag of the oldest pending event, parked loans grouped by error (exit 1 if any)."""
    with open_store(settings(config, db)) as store:
        status = store.outbox_status()
    groups = group_parked(status.parked_loans)
    if fmt == "json":
        click.echo(json_text(_status_dict(status, groups, limit), indent=2))
    else:
        _print_status(status, groups, limit)
    return EXIT_FINDINGS if status.parked_loans else 0


@outbox.command(
    "retry",
    epilog=(
        "Example: loanstate outbox retry FI123123121 FI123123122 --db sqlite:///loans.db\n\n"
        "         loanstate outbox retry --error-contains 'Invalid Signature' --db sqlite:///loans.db"
    ),
)
@click.argument("loan_apply_nos", nargs=-1, metavar="[LOAN_APPLY_NO]...")
@click.option("--all", "all_parked", is_flag=True, help="Retry every parked loan.")
@click.option("--error-contains", metavar="TEXT", help="Retry the parked loans whose last error contains TEXT.")
@db_options
@_format_option
@debug_option
def outbox_retry(  # noqa: PLR0917 - click passes every option by name anyway
    loan_apply_nos: tuple[str, ...],
    all_parked: bool,
    error_contains: str | None,
    db: str | None,
    config: str | None,
    fmt: str,
) -> int:
    """Un-park loans: their parked events are tried again by the next dispatcher pass.

    Name the loans, or select them with --all or --error-contains. Prints how
    many events were un-parked; exit 1 when none was.
    """
    if not loan_apply_nos and not all_parked and error_contains is None:
        raise InputError("outbox retry: name loans (LOAN_APPLY_NO...), or pass --all or --error-contains TEXT")
    if error_contains == "":
        raise InputError("outbox retry: --error-contains needs some text (use --all for every parked loan)")
    with open_store(settings(config, db)) as store:
        count = store.retry(*loan_apply_nos, all_parked=all_parked, error_contains=error_contains)
    if fmt == "json":
        click.echo(json_text({"retried": count}))
    elif count:
        click.echo(f"retried {count} parked event{'s' if count != 1 else ''}: the next dispatcher pass sends them")
    else:
        click.echo("no parked event matched: nothing retried")
    return 0 if count else EXIT_FINDINGS


@outbox.command("skip", epilog="Example: loanstate outbox skip 3f0c...e1 7a2d...90 --yes --db sqlite:///loans.db")
@click.argument("request_ids", nargs=-1, required=True, metavar="REQUEST_ID...")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@db_options
@_format_option
@debug_option
def outbox_skip(request_ids: tuple[str, ...], yes: bool, db: str | None, config: str | None, fmt: str) -> int:
    """Set parked (or pending) events aside for good, so their loans' later events go on.

    Asks for confirmation unless --yes: a skipped event is never sent (tell the
    platform another way if it must know). Prints how many events were skipped.
    """
    with open_store(settings(config, db)) as store:
        if not yes and not _confirmed(store, request_ids):
            if fmt == "json":
                click.echo(json_text({"skipped": 0}))
            else:
                click.echo("nothing skipped")
            return EXIT_FINDINGS
        count = store.skip(*request_ids)
    if fmt == "json":
        click.echo(json_text({"skipped": count}))
    else:
        click.echo(
            f"skipped {count} event{'s' if count != 1 else ''} "
            "(never sent; tell the platform another way if it must know)"
        )
    return 0 if count else EXIT_FINDINGS


def _confirmed(store: SqlStore, request_ids: tuple[str, ...]) -> bool:
    """Ask before skipping, naming the loan of each parked event among ``request_ids``."""
    parked = {p.request_id: p for p in store.outbox_status().parked_loans}
    click.echo(f"about to skip {len(request_ids)} event{'s' if len(request_ids) != 1 else ''} for good:", err=True)
    for request_id in request_ids:
        p = parked.get(request_id)
        where = f"loan {p.loan_apply_no} (parked: {p.last_error or '-'})" if p is not None else "not a parked event"
        click.echo(printable(f"  {request_id}  {where}"[:200]), err=True)
    try:
        return click.confirm("skip them?", default=False, err=True)
    except click.Abort:  # no terminal to answer from (end of input)
        raise InputError("outbox skip asks for confirmation: answer y, or pass --yes") from None
