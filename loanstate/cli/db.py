"""``loanstate db init|status|upgrade`` (the schema) and ``loanstate outbox prune`` (retention)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Final

import click

from loanstate.cli._common import EXIT_FINDINGS, InputError, debug_option, stdout
from loanstate.cli._settings import db_options, open_store, settings

__all__ = ["db", "prune"]

_DURATION: Final = re.compile(r"(?P<n>[0-9]+)(?P<unit>[dhms])")
_UNITS: Final = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` or a sum such as ``1d12h`` (ASCII digits only)."""
    parts = list(_DURATION.finditer(text))
    if not text or "".join(p.group(0) for p in parts) != text:
        raise InputError(f"--older-than {text!r}: write an age such as 30d, 12h, 90m or 1d12h")
    try:
        age = sum((timedelta(**{_UNITS[p.group("unit")]: int(p.group("n"))}) for p in parts), timedelta())
    except OverflowError:
        raise InputError(f"--older-than {text!r}: too long an age") from None
    if age <= timedelta(0):
        raise InputError(f"--older-than {text!r}: the age must be more than zero")
    return age


@click.group(epilog="Example: loanstate db status --db sqlite:///loans.db")
def db() -> None:
    """The database schema: create it, see its version and size, upgrade it."""


@db.command("init", epilog="Example: loanstate db init --db postgresql+psycopg://servicing@db/loans")
@db_options
@debug_option
def db_init(db: str | None, config: str | None) -> int:
    """Create loanstate's tables (safe to run again: what exists is kept)."""
    with open_store(settings(config, db), create=True) as store:
        status = store.schema_status()
    click.echo(f"loanstate schema version {status.version} ready in {store!r}")
    return 0


@db.command("status", epilog="Example: loanstate db status --db sqlite:///loans.db --format json")
@db_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@debug_option
def db_status(db: str | None, config: str | None, fmt: str) -> int:
    """Schema version and rows per table; exit 1 when the database needs `db init` or `db upgrade`."""
    with open_store(settings(config, db), require_schema=False) as store:
        status = store.schema_status()
    needs = "init" if status.version is None else "upgrade" if status.needs_upgrade else None
    if fmt == "json":
        out = {
            "version": status.version,
            "expected": status.expected,
            "needs": needs,
            "too_new": status.too_new,
            "rows": dict(status.rows),
        }
        click.echo(json.dumps(out, indent=2))
    else:
        console = stdout()
        shown = "none" if status.version is None else str(status.version)
        console.print(f"schema version {shown} (this loanstate: {status.expected})", markup=False)
        for table, rows in status.rows.items():
            console.print(f"  {table:<20} {'missing' if rows is None else f'{rows} rows'}", markup=False)
        if needs:
            console.print(f"run: loanstate db {needs}", markup=False)
        elif status.too_new:
            console.print("the database is newer than this loanstate: upgrade loanstate", markup=False)
    return EXIT_FINDINGS if needs or status.too_new else 0


@db.command("upgrade", epilog="Example: loanstate db upgrade --db sqlite:///loans.db")
@db_options
@debug_option
def db_upgrade(db: str | None, config: str | None) -> int:
    """Migrate the schema to this loanstate's version (stop every worker first; safe to run again)."""
    with open_store(settings(config, db), require_schema=False) as store:
        steps = store.upgrade_schema()
        version = store.schema_status().version
    for step in steps:
        click.echo(step)
    click.echo(f"schema version {version}: up to date" + ("" if steps else " (nothing to do)"))
    return 0


class _Archive:
    """Appends pruned rows to a JSON Lines file, on disk before their delete commits."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.rows = 0

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        from loanstate.store._prune import archive_record

        self.handle.writelines(archive_record(row) + "\n" for row in rows)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.rows += len(rows)


@click.command("prune", epilog="Example: loanstate outbox prune --older-than 30d --archive pruned.jsonl --db URL")
@click.option("--older-than", "older_than", required=True, help="Age of the rows to delete: 30d, 12h, 1d12h, ...")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), help="Append each row to this JSONL first.")
@db_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@debug_option
def prune(  # noqa: PLR0917 - click passes every option by name anyway
    older_than: str, batch_size: int, archive: Path | None, db: str | None, config: str | None, fmt: str
) -> int:
    """Delete delivered and skipped outbox rows older than --older-than (never pending or parked; history stays)."""
    age = parse_age(older_than)
    with open_store(settings(config, db)) as store:
        cutoff = store.now() - age
        if archive is None:
            deleted = store.prune(delivered_before=cutoff, batch_size=batch_size)
        else:
            try:
                handle = archive.open("a", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"--archive {archive}: cannot write: {exc.strerror or exc}") from None
            with handle:
                deleted = store.prune(delivered_before=cutoff, batch_size=batch_size, archive=_Archive(handle))
    if fmt == "json":
        out = {"deleted": deleted, "older_than": cutoff.isoformat(), "archive": str(archive) if archive else None}
        click.echo(json.dumps(out))
    else:
        where = f", archived to {archive}" if archive else ""
        click.echo(f"pruned {deleted} delivered or skipped outbox rows settled before {cutoff.isoformat()}{where}")
    return 0
