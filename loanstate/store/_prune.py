"""Retention: delete outbox rows that are done with, in short batches.

Only ``delivered`` rows (by ``delivered_at``) and ``skipped`` rows (by
``skipped_at``) older than the cut-off go, never a ``pending`` or ``parked`` row
and never a row under a lease. History is kept: it is the audit trail, and the
outbox is only the sending side of it.

Deleting a delivered row cannot release a later event early: the claim holds an
event back only while an earlier event of its loan is pending or parked, and a
pruned row was neither. Each batch is its own transaction, so a prune of millions
of rows never holds locks for long and can stop and resume anywhere. With
``archive``, each batch's rows are handed over before the delete commits: a row is
in the archive before it leaves the table (a crash between the two can archive a
row twice, never lose one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loanstate._errors import InvalidConfiguration
from loanstate.store._schema import outbox

__all__ = ["MAX_BATCH", "archive_record", "prune_batches"]

#: The largest batch: a bound on one transaction's locks and on the archive's memory.
MAX_BATCH: Final = 100_000

Archive = Callable[[Sequence[Mapping[str, Any]]], None]

_DONE: Final = ((outbox.c.delivered_at, "delivered"), (outbox.c.skipped_at, "skipped"))


def check_prune_args(delivered_before: object, batch_size: object) -> None:
    """Refuse a naive or non-datetime cut-off and a batch size that is not a positive int."""
    if not isinstance(delivered_before, datetime) or delivered_before.utcoffset() is None:
        raise InvalidConfiguration("delivered_before", delivered_before, "must be an aware datetime")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidConfiguration("batch_size", batch_size, f"must be an int from 1 to {MAX_BATCH}")


def prune_batches(
    transaction: Callable[[Callable[[Connection], int]], int],
    *,
    delivered_before: datetime,
    batch_size: int,
    archive: Archive | None = None,
) -> Iterator[int]:
    """Delete done rows older than ``delivered_before``; yield how many each batch deleted.

    ``transaction(fn)`` runs ``fn`` in one committed transaction (the store's,
    with its retries on deadlocks). Stops when a batch finds nothing.
    """
    check_prune_args(delivered_before, batch_size)
    for when, state in _DONE:
        while True:
            batch = partial(
                _one_batch, when=when, state=state, before=delivered_before, limit=batch_size, archive=archive
            )
            deleted = transaction(batch)
            if not deleted:
                break
            yield deleted


def _one_batch(
    conn: Connection,
    *,
    when: sa.Column[Any],
    state: str,
    before: datetime,
    limit: int,
    archive: Archive | None,
) -> int:
    done = sa.and_(outbox.c.state == state, when < before, outbox.c.lease_owner.is_(None))
    # The oldest first, on the (state, delivered_at) index; ids, then the delete, because
    # MySQL allows no LIMIT in a subquery of a DELETE on the same table.
    columns = [outbox] if archive is not None else [outbox.c.id]
    rows = conn.execute(sa.select(*columns).where(done).order_by(when, outbox.c.id).limit(limit)).mappings().all()
    if not rows:
        return 0
    if archive is not None:
        archive([dict(r) for r in rows])
    result = conn.execute(sa.delete(outbox).where(outbox.c.id.in_([r["id"] for r in rows]), done))
    return int(result.rowcount)


def archive_record(row: Mapping[str, Any]) -> str:
    """One archived outbox row as a JSON line: its columns, times in ISO 8601, the event as an object."""
    record: dict[str, Any] = {}
    for name, value in row.items():
        if name == "payload":
            try:
                record["event"] = json.loads(value)
            except ValueError:  # an unreadable payload (its loan was parked for it) is archived as it is
                record["payload"] = value
        elif isinstance(value, datetime):
            record[name] = value.isoformat()
        else:
            record[name] = value
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
