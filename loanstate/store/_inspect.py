"""Read-only queries for operators: what the console and the metrics show.

Every function is one read-only transaction on the store's engine and never
parses an event's payload (a row whose payload cannot be read still shows).
Values are returned as the database holds them; the caller escapes them for
whatever it renders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loanstate.store._dialects import READ_ONLY
from loanstate.store._pauses import PauseRecord, read_pauses
from loanstate.store._schema import history, loans, outbox

__all__ = [
    "STATES",
    "Gauges",
    "HistoryRow",
    "Lease",
    "LoanPage",
    "LoanView",
    "OutboxRow",
    "Overview",
    "ParkedGroup",
    "ParkedItem",
    "SearchHit",
    "gauges",
    "group_key",
    "list_loans",
    "loan_detail",
    "overview",
    "parked_group",
    "parked_groups",
    "parked_items",
    "parked_request_ids",
    "search",
]

#: Every state an outbox row can be in, in the order operators read them.
STATES: Final = ("pending", "delivered", "parked", "skipped")

# The most search hits collected before paging them (a search is a lookup, not a report).
_SEARCH_CAP: Final = 1000


@attrs.frozen
class Lease:
    """A worker holding unexpired leases: how many events, and until when at the latest."""

    owner: str
    events: int
    expires_at: datetime


@attrs.frozen
class Overview:
    """The outbox at a glance."""

    counts: dict[str, int]
    loans: int
    parked_loans: int
    oldest_pending_at: datetime | None
    lag: timedelta | None
    leases: tuple[Lease, ...]
    per_minute: tuple[int, ...]
    """Deliveries in each minute of the window, oldest minute first."""
    window_start: datetime
    pauses: tuple[PauseRecord, ...]


@attrs.frozen
class ParkedGroup:
    """Parked events sharing one error: how many, when first and last failing, one sample."""

    key: str
    error: str | None
    events: int
    loans: int
    first_seen: datetime | None
    last_seen: datetime | None
    sample_loan: str
    sample_request_id: str


@attrs.frozen
class ParkedItem:
    """One parked event, and how many later events of its loan wait behind it."""

    loan_apply_no: str
    request_id: str
    sequence: int
    attempts: int
    first_failed_at: datetime | None
    waiting: int


@attrs.frozen
class LoanView:
    """A loan's row: its current status and the fields every event carries."""

    loan_apply_no: str
    status: str
    version: int
    customer_id: str | None
    institution_loan_no: str | None
    opened_at: datetime
    updated_at: datetime


@attrs.frozen
class HistoryRow:
    """One change of a loan, as recorded."""

    sequence: int
    before_status: str
    after_status: str
    change_time: datetime
    request_id: str
    recorded_at: datetime


@attrs.frozen
class OutboxRow:
    """One outbox row: an event's delivery so far."""

    request_id: str
    sequence: int
    state: str
    attempts: int
    last_error: str | None
    trace_id: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None


@attrs.frozen
class LoanPage:
    """A page of loans in key order; ``next_after`` continues it (``None`` on the last page)."""

    loans: tuple[LoanView, ...]
    total: int
    next_after: str | None


@attrs.frozen
class SearchHit:
    """A loan a search found, and which field matched."""

    loan_apply_no: str
    status: str
    matched_on: str


def group_key(error: str | None) -> str:
    """A short stable name for a parked group's error, fit for a URL."""
    return hashlib.sha256((error or "").encode()).hexdigest()[:16]


def _reading(engine: Engine) -> Any:
    return engine.execution_options(**READ_ONLY).begin()


def _aware(value: datetime | None, like: datetime) -> datetime | None:
    # Aggregates bypass the column type on some engines; the value is UTC all the same.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=like.tzinfo)
    return value


def overview(engine: Engine, now: datetime, *, hours: int = 3) -> Overview:
    """Counts per state, lag, leases, deliveries per minute over the last ``hours``, and pauses."""
    window_start = (now - timedelta(hours=hours)).replace(second=0, microsecond=0)
    minutes = hours * 60 + 1
    with _reading(engine) as conn:
        counts = dict.fromkeys(STATES, 0)
        for state, count in conn.execute(sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)):
            counts[str(state)] = int(count)
        loan_count = int(conn.scalar(sa.select(sa.func.count()).select_from(loans)) or 0)
        parked_loans = int(
            conn.scalar(sa.select(sa.func.count(sa.distinct(outbox.c.loan_apply_no))).where(outbox.c.state == "parked"))
            or 0
        )
        oldest = _aware(
            conn.scalar(sa.select(sa.func.min(outbox.c.created_at)).where(outbox.c.state == "pending")), now
        )
        lease_rows = conn.execute(
            sa.select(outbox.c.lease_owner, sa.func.count(), sa.func.max(outbox.c.lease_expires_at))
            .where(outbox.c.state == "pending", outbox.c.lease_expires_at > now)
            .group_by(outbox.c.lease_owner)
            .order_by(outbox.c.lease_owner)
        ).all()
        per_minute = [0] * minutes
        delivered = conn.execute(
            sa.select(outbox.c.delivered_at).where(outbox.c.delivered_at >= window_start, outbox.c.delivered_at <= now)
        )
        for (at,) in delivered:
            per_minute[min(int((at - window_start).total_seconds() // 60), minutes - 1)] += 1
    leases = tuple(Lease(str(r[0]), int(r[1]), _aware(r[2], now) or now) for r in lease_rows)
    return Overview(
        counts=counts,
        loans=loan_count,
        parked_loans=parked_loans,
        oldest_pending_at=oldest,
        lag=None if oldest is None else max(now - oldest, timedelta(0)),
        leases=leases,
        per_minute=tuple(per_minute),
        window_start=window_start,
        pauses=tuple(read_pauses(engine)),
    )


def parked_groups(engine: Engine) -> list[ParkedGroup]:
    """Parked events grouped by their error, largest group first."""
    with _reading(engine) as conn:
        rows = conn.execute(
            sa.select(
                outbox.c.last_error,
                sa.func.count(),
                sa.func.count(sa.distinct(outbox.c.loan_apply_no)),
                sa.func.min(outbox.c.first_failed_at),
                sa.func.max(outbox.c.first_failed_at),
                sa.func.min(outbox.c.id),
            )
            .where(outbox.c.state == "parked")
            .group_by(outbox.c.last_error)
        ).all()
        samples = {
            r.id: r
            for r in conn.execute(
                sa.select(outbox.c.id, outbox.c.loan_apply_no, outbox.c.request_id).where(
                    outbox.c.id.in_([row[5] for row in rows])
                )
            )
        }
    groups = []
    for error, events, loan_count, first, last, sample_id in rows:
        sample = samples[sample_id]
        groups.append(
            ParkedGroup(
                key=group_key(error),
                error=error,
                events=int(events),
                loans=int(loan_count),
                first_seen=first if first is None or first.tzinfo else first.replace(tzinfo=UTC),
                last_seen=last if last is None or last.tzinfo else last.replace(tzinfo=UTC),
                sample_loan=sample.loan_apply_no,
                sample_request_id=sample.request_id,
            )
        )
    groups.sort(key=lambda g: (-g.events, g.error or ""))
    return groups


def parked_group(engine: Engine, key: str) -> ParkedGroup | None:
    """The parked group named ``key`` (see :func:`group_key`), or ``None``."""
    return next((g for g in parked_groups(engine) if g.key == key), None)


def _error_is(error: str | None) -> sa.ColumnElement[bool]:
    return outbox.c.last_error.is_(None) if error is None else outbox.c.last_error == error


def parked_items(
    engine: Engine, *, error: str | None = None, any_error: bool = False, offset: int = 0, limit: int | None = None
) -> list[ParkedItem]:
    """Parked events with ``error`` (or every parked event with ``any_error``), oldest first."""
    later = outbox.alias("later")
    waiting = (
        sa.select(sa.func.count())
        .where(later.c.loan_apply_no == outbox.c.loan_apply_no, later.c.sequence > outbox.c.sequence)
        .scalar_subquery()
    )
    stmt = (
        sa.select(
            outbox.c.loan_apply_no,
            outbox.c.request_id,
            outbox.c.sequence,
            outbox.c.attempts,
            outbox.c.first_failed_at,
            waiting,
        )
        .where(outbox.c.state == "parked")
        .order_by(outbox.c.id)
        .offset(offset)
    )
    if not any_error:
        stmt = stmt.where(_error_is(error))
    if limit is not None:
        stmt = stmt.limit(limit)
    with _reading(engine) as conn:
        rows = conn.execute(stmt).all()
    return [ParkedItem(r[0], r[1], int(r[2]), int(r[3]), r[4], int(r[5])) for r in rows]


def _loan_view(row: Any) -> LoanView:
    return LoanView(
        loan_apply_no=row.loan_apply_no,
        status=row.status,
        version=int(row.version),
        customer_id=row.customer_id,
        institution_loan_no=row.institution_loan_no,
        opened_at=row.opened_at,
        updated_at=row.updated_at,
    )


def list_loans(engine: Engine, *, after: str | None = None, limit: int = 50) -> LoanPage:
    """A page of loans in ``loan_apply_no`` order, starting after ``after`` (keyset: every page is as quick)."""
    stmt = sa.select(loans).order_by(loans.c.loan_apply_no).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(loans.c.loan_apply_no > after)
    with _reading(engine) as conn:
        rows = conn.execute(stmt).all()
        total = int(conn.scalar(sa.select(sa.func.count()).select_from(loans)) or 0)
    page = tuple(_loan_view(r) for r in rows[:limit])
    return LoanPage(page, total, page[-1].loan_apply_no if len(rows) > limit else None)


def loan_detail(engine: Engine, loan_apply_no: str) -> tuple[LoanView, list[HistoryRow], list[OutboxRow]] | None:
    """The loan, its history (oldest first) and its outbox rows (by sequence); ``None`` if unknown."""
    with _reading(engine) as conn:
        row = conn.execute(sa.select(loans).where(loans.c.loan_apply_no == loan_apply_no)).first()
        if row is None:
            return None
        changes = conn.execute(
            sa.select(history).where(history.c.loan_apply_no == loan_apply_no).order_by(history.c.sequence)
        ).all()
        rows = conn.execute(
            sa.select(outbox).where(outbox.c.loan_apply_no == loan_apply_no).order_by(outbox.c.sequence)
        ).all()
    timeline = [
        HistoryRow(
            sequence=int(h.sequence),
            before_status=h.before_status,
            after_status=h.after_status,
            change_time=h.change_time.astimezone(_offset(h.utc_offset_seconds)),
            request_id=h.request_id,
            recorded_at=h.recorded_at,
        )
        for h in changes
    ]
    entries = [
        OutboxRow(
            request_id=o.request_id,
            sequence=int(o.sequence),
            state=o.state,
            attempts=int(o.attempts),
            last_error=o.last_error,
            trace_id=o.trace_id,
            created_at=o.created_at,
            next_attempt_at=o.next_attempt_at,
            delivered_at=o.delivered_at,
            lease_owner=o.lease_owner,
            lease_expires_at=o.lease_expires_at,
        )
        for o in rows
    ]
    return _loan_view(row), timeline, entries


def _offset(seconds: int) -> timezone:
    return timezone(timedelta(seconds=seconds))


def _hits(conn: Connection, stmt: sa.Select[Any], matched_on: str) -> list[SearchHit]:
    return [SearchHit(r[0], r[1], matched_on) for r in conn.execute(stmt.limit(_SEARCH_CAP))]


def search(engine: Engine, query: str) -> list[SearchHit]:
    """Loans whose loan_apply_no, an event's request_id or trace_id, or customer_id is ``query``.

    Exact matches come first, in that order, then loans whose loan_apply_no
    starts with ``query``; each loan once; at most 1000 hits.
    """
    q = query.strip()
    if not q:
        return []
    by_event = sa.select(loans.c.loan_apply_no, loans.c.status).join(
        outbox, outbox.c.loan_apply_no == loans.c.loan_apply_no
    )
    found: list[SearchHit] = []
    with _reading(engine) as conn:
        found += _hits(conn, sa.select(loans.c.loan_apply_no, loans.c.status).where(loans.c.loan_apply_no == q), "loan")
        found += _hits(conn, by_event.where(outbox.c.request_id == q), "request_id")
        found += _hits(conn, by_event.where(outbox.c.trace_id == q), "trace_id")
        found += _hits(
            conn,
            sa.select(loans.c.loan_apply_no, loans.c.status)
            .where(loans.c.customer_id == q)
            .order_by(loans.c.loan_apply_no),
            "customer_id",
        )
        found += _hits(
            conn,
            sa.select(loans.c.loan_apply_no, loans.c.status)
            .where(loans.c.loan_apply_no.startswith(q, autoescape=True))
            .order_by(loans.c.loan_apply_no),
            "loan_apply_no prefix",
        )
    seen: set[str] = set()
    hits = []
    for hit in found:
        if hit.loan_apply_no not in seen:
            seen.add(hit.loan_apply_no)
            hits.append(hit)
    return hits[:_SEARCH_CAP]


def parked_request_ids(engine: Engine, loan_apply_nos: Sequence[str]) -> list[str]:
    """The request_ids of the parked events of these loans."""
    ids: list[str] = []
    with _reading(engine) as conn:
        for start in range(0, len(loan_apply_nos), 500):
            chunk = list(loan_apply_nos[start : start + 500])
            ids += conn.scalars(
                sa.select(outbox.c.request_id)
                .where(outbox.c.state == "parked", outbox.c.loan_apply_no.in_(chunk))
                .order_by(outbox.c.id)
            ).all()
    return ids


@attrs.frozen
class Gauges:
    """The store's numbers a scrape reads: events per state, lag, parked loans."""

    counts: dict[str, int]
    lag: timedelta | None
    parked_loans: int


def gauges(engine: Engine, now: datetime) -> Gauges:
    """Events per state, the lag of the oldest pending event, and how many loans are parked."""
    with _reading(engine) as conn:
        counts = dict.fromkeys(STATES, 0)
        for state, count in conn.execute(sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)):
            counts[str(state)] = int(count)
        parked_loans = int(
            conn.scalar(sa.select(sa.func.count(sa.distinct(outbox.c.loan_apply_no))).where(outbox.c.state == "parked"))
            or 0
        )
        oldest = _aware(
            conn.scalar(sa.select(sa.func.min(outbox.c.created_at)).where(outbox.c.state == "pending")), now
        )
    return Gauges(counts, None if oldest is None else max(now - oldest, timedelta(0)), parked_loans)
