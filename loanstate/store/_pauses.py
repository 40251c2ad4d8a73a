"""The dispatcher's pause, persisted so an operator's console in another process can see it.

One row per paused worker in ``loanstate_pauses``: a worker that pauses on a
systemic failure writes (or replaces) its row; a worker that resumes deletes
it. The table is not part of :data:`~loanstate.store.SCHEMA_VERSION` yet: it
has its own metadata and is created on first use (``checkfirst``), so a
database made by an older release gains it without a migration. A reader
finding no table reads "nobody is paused".
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loanstate.store._dialects import READ_ONLY, TABLE_OPTIONS, Key, UtcDateTime, retrying

__all__ = ["PauseRecord", "clear_pause", "create_pause_table", "pauses", "read_pauses", "record_pause"]

# Kept apart from the store's metadata until the schema's owner folds it in (with a version bump).
_metadata: Final = sa.MetaData()

#: The longest cause, remedy or message kept (the dispatcher's error text is already bounded).
_TEXT_LIMIT: Final = 2000

pauses: Final = sa.Table(
    "loanstate_pauses",
    _metadata,
    sa.Column("worker_id", Key(128), primary_key=True),
    sa.Column("cause", Key(64), nullable=False),
    sa.Column("remedy", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("since", UtcDateTime, nullable=False),
    sa.Column("reported_at", UtcDateTime, nullable=False),
    **TABLE_OPTIONS,
)


@attrs.frozen
class PauseRecord:
    """A worker's pause as the store holds it: who, why, what to fix, since when."""

    worker_id: str
    cause: str
    remedy: str
    message: str
    since: datetime
    reported_at: datetime


def create_pause_table(engine: Engine) -> None:
    """Create ``loanstate_pauses`` when it is missing; safe to call at every start."""

    def create() -> None:
        with engine.begin() as conn:
            _metadata.create_all(conn, checkfirst=True)

    try:
        retrying(create)
    except sa.exc.DBAPIError:
        # Two workers starting together: the loser finds the winner's table.
        if not sa.inspect(engine).has_table(pauses.name):
            raise


def record_pause(
    engine: Engine, worker_id: str, *, cause: str, remedy: str, message: str, since: datetime, now: datetime
) -> None:
    """Write (or replace) ``worker_id``'s pause."""
    row = {
        "worker_id": worker_id[:128],
        "cause": cause[:64],
        "remedy": remedy[:_TEXT_LIMIT],
        "message": message[:_TEXT_LIMIT],
        "since": since,
        "reported_at": now,
    }

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(sa.delete(pauses).where(pauses.c.worker_id == row["worker_id"]))
            conn.execute(pauses.insert().values(**row))

    retrying(write)


def clear_pause(engine: Engine, worker_id: str) -> None:
    """Delete ``worker_id``'s pause (it resumed, or it starts afresh)."""

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(sa.delete(pauses).where(pauses.c.worker_id == worker_id[:128]))

    retrying(write)


def read_pauses(engine: Engine) -> list[PauseRecord]:
    """Every worker's pause, oldest first; empty when the table does not exist yet."""
    if not sa.inspect(engine).has_table(pauses.name):
        return []
    with engine.execution_options(**READ_ONLY).begin() as conn:
        rows = conn.execute(sa.select(pauses).order_by(pauses.c.since, pauses.c.worker_id)).all()
    return [PauseRecord(r.worker_id, r.cause, r.remedy, r.message, r.since, r.reported_at) for r in rows]
