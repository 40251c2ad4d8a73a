"""The dispatcher's pause, persisted so an operator's console in another process can see it.

One row per paused worker in ``loanstate_pauses`` (schema version 2): a worker
that pauses on a systemic failure writes (or replaces) its row; a worker that
resumes deletes it. A reader finding no table (a database not yet upgraded)
reads "nobody is paused".
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loanstate.store._dialects import READ_ONLY, retrying
from loanstate.store._schema import pauses

__all__ = ["PauseRecord", "clear_pause", "read_pauses", "record_pause"]

#: The longest cause, remedy or message kept (the dispatcher's error text is already bounded).
_TEXT_LIMIT: Final = 2000


@attrs.frozen
class PauseRecord:
    """A worker's pause as the store holds it: who, why, what to fix, since when."""

    worker_id: str
    cause: str
    remedy: str
    message: str
    since: datetime
    reported_at: datetime


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
