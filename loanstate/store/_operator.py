"""The operator's outbox tools: retrying a selection of parked events, and skipping events all or none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loanstate._errors import InvalidEvent, UnknownLoan
from loanstate.store._checks import check_search, check_text, shorten
from loanstate.store._dialects import UtcDateTime
from loanstate.store._schema import loans, outbox

__all__ = ["retry_selected", "selected", "skip_selected"]

# Keys per IN (...) list: bound parameters stay well under every engine's limit (SQLite: 32766).
_CHUNK: Final = 500

_SKIPPABLE: Final = sa.select(
    outbox.c.id,
    outbox.c.request_id,
    outbox.c.loan_apply_no,
    outbox.c.state,
    outbox.c.lease_owner,
    outbox.c.lease_expires_at,
).where(outbox.c.request_id.in_(sa.bindparam("b_rids", expanding=True)))
_SKIP: Final = (
    sa.update(outbox)
    .where(outbox.c.id.in_(sa.bindparam("b_ids", expanding=True)), outbox.c.state.in_(("pending", "parked")))
    .values(
        state="skipped",
        lease_owner=None,
        lease_expires_at=None,
        skipped_at=sa.bindparam("b_at", type_=UtcDateTime()),
    )
)


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def selected(
    loan_apply_nos: tuple[object, ...], all_parked: object, error_contains: object
) -> tuple[list[str], str | None]:
    """Check a retry's selection; return the loan numbers (sorted, unique) and the search text."""
    if not isinstance(all_parked, bool):
        problem = f"must be True or False, got {type(all_parked).__name__} {shorten(all_parked)}"
        raise InvalidEvent({"all_parked": problem})
    names = sorted({check_text("loan_apply_no", n) for n in loan_apply_nos})
    search = None if error_contains is None else check_search("error_contains", error_contains)
    if names and all_parked:
        raise InvalidEvent({"all_parked": "give loan numbers or all_parked=True, not both"})
    if not names and not all_parked and search is None:
        raise InvalidEvent({"loan_apply_no": "nothing selected: give loan numbers, all_parked=True, or error_contains"})
    return names, search


def retry_selected(conn: Connection, names: list[str], search: str | None, now: datetime) -> int:
    """Un-park the selection on ``conn`` (see :meth:`Outbox.retry`); return how many left ``parked``."""
    for chunk in _chunks(names):
        known = set(conn.scalars(sa.select(loans.c.loan_apply_no).where(loans.c.loan_apply_no.in_(chunk))))
        missing = next((n for n in chunk if n not in known), None)
        if missing is not None:
            raise UnknownLoan(missing)
    retried = 0
    for state, ids in _waiting(conn, names, search, now).items():
        values: dict[str, Any] = {"next_attempt_at": now}
        if state == "parked":
            values |= {"state": "pending", "first_failed_at": None}
        for chunk in _chunks(ids):
            # The state test again: a dispatcher may have settled the event since we read it.
            stmt = sa.update(outbox).where(outbox.c.id.in_(chunk), outbox.c.state == state).values(**values)
            changed = int(conn.execute(stmt).rowcount)
            retried += changed if state == "parked" else 0
    return retried


def _waiting(conn: Connection, names: list[str], search: str | None, now: datetime) -> dict[str, list[int]]:
    """Ids of the selected parked events, and of the selected pending ones waiting out a backoff."""
    found: dict[str, list[int]] = {"parked": [], "pending": []}
    backoff = sa.and_(outbox.c.state == "pending", outbox.c.next_attempt_at > now)
    stmt = sa.select(outbox.c.id, outbox.c.state, outbox.c.last_error).where(
        sa.or_(outbox.c.state == "parked", backoff)
    )
    if search is not None:
        # LIKE narrows it on the server; the exact (case-sensitive) test is
        # ours, as LIKE's case rules differ per engine.
        stmt = stmt.where(outbox.c.last_error.contains(search, autoescape=True))
    for scope in _chunks(names) if names else [None]:
        scoped = stmt if scope is None else stmt.where(outbox.c.loan_apply_no.in_(scope))
        for row in conn.execute(scoped):
            if search is None or search in (row.last_error or ""):
                found[row.state].append(row.id)
    return found


def skip_selected(conn: Connection, wanted: list[str], now: datetime) -> dict[str, str]:
    """Skip the events of ``wanted`` on ``conn``, all or none (see :meth:`Outbox.skip`)."""
    rows = {}
    for chunk in _chunks(wanted):
        for row in conn.execute(_SKIPPABLE, {"b_rids": chunk}):
            rows[row.request_id] = row
    for request_id in wanted:
        _refuse_skip(request_id, rows.get(request_id), now)
    todo = [r for r in rows.values() if r.state != "skipped"]
    for chunk in _chunks(todo):
        conn.execute(_SKIP, {"b_ids": [r.id for r in chunk], "b_at": now})
    return {r.request_id: r.loan_apply_no for r in todo}


def _refuse_skip(request_id: str, row: Any, now: datetime) -> None:
    """Raise InvalidEvent when the event ``row`` holds must not be skipped (see :meth:`Outbox.skip`)."""
    if row is None:
        problem = f"no event with request_id {request_id!r} in the outbox; nothing was skipped"
        raise InvalidEvent({"request_id": problem})
    if row.state == "delivered":
        raise InvalidEvent(
            {"request_id": f"event {request_id!r} was already delivered; nothing to skip, nothing was skipped"}
        )
    if row.state == "pending" and row.lease_expires_at is not None and row.lease_expires_at > now:
        raise InvalidEvent(
            {
                "request_id": f"event {request_id!r} is being delivered by {row.lease_owner!r} (lease until "
                f"{row.lease_expires_at.isoformat()}); skip it once it is parked or its lease has expired; "
                "nothing was skipped"
            }
        )
