"""The outbox's operations: claim with leases, settle, release, and the operator's tools.

Order per loan rests on one rule in :meth:`Outbox.claim`: an event may be
claimed only when every earlier event of its loan is ``delivered`` or
``skipped`` and nobody holds an unexpired lease on it. A loan's next event
therefore cannot leave before the previous one is acknowledged (or set aside
by an operator), whatever the number of workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loanstate._errors import InvalidEvent, LoanStateError
from loanstate._events import LoanChangeEvent
from loanstate.store._checks import (
    check_count,
    check_instances,
    check_lease,
    check_owner,
    check_request_id,
    check_text,
    configuration_error,
    shorten,
)
from loanstate.store._dialects import READ_ONLY, UtcDateTime, for_claim, retrying
from loanstate.store._operator import retry_selected, selected, skip_selected
from loanstate.store._records import Claim, OutboxEntry, OutboxStatus, Outcome, ParkedLoan
from loanstate.store._schema import outbox

__all__ = ["Outbox"]

T = TypeVar("T")

_OPEN = ("pending", "parked")  # states that hold a loan's later events back


# Statements built once: each dispatcher cycle only binds values (no statement
# construction, no compilation), which is most of the cost of a small transaction.
_AT = UtcDateTime()
_DELIVERED: Final = (
    sa.update(outbox)
    .where(outbox.c.id == sa.bindparam("b_id"), outbox.c.state == "pending")
    .values(
        state="delivered",
        delivered_at=sa.bindparam("b_at", type_=_AT),
        trace_id=sa.bindparam("b_trace", type_=sa.String()),
        attempts=outbox.c.attempts + sa.bindparam("b_tries", type_=sa.Integer()),
        last_error=None,
        lease_owner=None,
        lease_expires_at=None,
    )
)
_LEASE: Final = (
    sa.update(outbox)
    .where(outbox.c.id.in_(sa.bindparam("b_ids", expanding=True)))
    .values(
        lease_owner=sa.bindparam("b_owner", type_=sa.String()), lease_expires_at=sa.bindparam("b_expires", type_=_AT)
    )
)

_LET_GO: Final = (
    sa.update(outbox)
    .where(
        outbox.c.id.in_(sa.bindparam("b_ids", expanding=True)),
        outbox.c.lease_owner == sa.bindparam("b_owner", type_=sa.String()),
        outbox.c.state == "pending",
    )
    .values(lease_owner=None, lease_expires_at=None)
)


def _claim_statement(dialect: str) -> sa.Select[Any]:
    """Due heads of their loans, oldest first: nothing earlier of the loan is pending or parked.

    The states are written into the SQL, not bound: a server's generic plan for a
    prepared ``state = $1`` cannot know the value is the rare ``pending``, and
    walked every delivered row in id order (a claim 5x slower with 200,000
    delivered rows on PostgreSQL); with the constant it takes the (state, id) index.
    """
    earlier = outbox.alias("earlier")
    blocked = (
        sa.select(earlier.c.id)
        .where(
            earlier.c.loan_apply_no == outbox.c.loan_apply_no,
            earlier.c.sequence < outbox.c.sequence,
            earlier.c.state.in_(sa.bindparam("b_open", list(_OPEN), expanding=True, literal_execute=True)),
        )
        .exists()
    )
    now = sa.bindparam("b_now", type_=_AT)
    stmt = (
        sa.select(
            outbox.c.id,
            outbox.c.request_id,
            outbox.c.loan_apply_no,
            outbox.c.payload,
            outbox.c.sequence,
            outbox.c.attempts,
            outbox.c.first_failed_at,
        )
        .where(
            outbox.c.state == sa.literal("pending", literal_execute=True),
            outbox.c.next_attempt_at <= now,
            sa.or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at <= now),
            ~blocked,
        )
        .order_by(outbox.c.id)
        .limit(sa.bindparam("b_limit", type_=sa.Integer(), literal_execute=True))
    )
    return for_claim(stmt, dialect)


def _event(payload: str) -> LoanChangeEvent:
    return LoanChangeEvent.from_dict(json.loads(payload))


def _read_claimed(row: Any) -> LoanChangeEvent | str:
    """The event a claimed row holds, or why it cannot be sent (its loan is then parked with that reason)."""
    try:
        event = _event(row.payload)
    except (ValueError, TypeError, RecursionError, LoanStateError) as exc:
        # ValueError covers JSONDecodeError; a payload nested past the parser's depth is a RecursionError.
        return f"unreadable outbox payload ({type(exc).__name__}: {shorten(str(exc))}); fix or skip the event"
    if (event.request_id, event.loan_apply_no) != (row.request_id, row.loan_apply_no):
        # Sending it would notify another change, or another loan, than the row says.
        return (
            f"outbox payload does not match its row (payload request_id {shorten(event.request_id)}, "
            f"loan {shorten(event.loan_apply_no)}); fix or skip the event"
        )
    return event


def _readable(row: Any) -> LoanChangeEvent:
    """The event of an outbox row being listed; InvalidEvent naming the row when its payload is unreadable."""
    event = _read_claimed(row)
    if isinstance(event, str):
        raise InvalidEvent({"payload": f"outbox row {row.request_id!r} of loan {row.loan_apply_no!r}: {event}"})
    return event


def _parking(reason: str, at: datetime) -> dict[str, Any]:
    return {
        "state": "parked",
        "last_error": reason,
        "first_failed_at": sa.func.coalesce(outbox.c.first_failed_at, at),
        "lease_owner": None,
        "lease_expires_at": None,
    }


def _config(setting: str, value: object) -> Callable[[str], Exception]:
    return lambda problem: configuration_error(setting, value, problem)


@attrs.define
class Outbox:
    """Low-level outbox operations on one engine; :class:`~loanstate.Dispatcher` drives them.

    Every method is one short transaction, retried on deadlocks and lock
    timeouts. ``owner`` names a worker (unique per process); a lease is the
    time after which another worker may take a claimed event over.
    """

    engine: Engine
    clock: Callable[[], datetime]
    _claim_stmt: sa.Select[Any] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._claim_stmt = _claim_statement(self.engine.dialect.name)

    def _tx(self, fn: Callable[[Connection], T], *, read_only: bool = False) -> T:
        def once() -> T:
            engine = self.engine.execution_options(**READ_ONLY) if read_only else self.engine
            with engine.begin() as conn:
                return fn(conn)

        return retrying(once)

    def claim(self, owner: str, *, limit: int, lease: timedelta) -> list[Claim]:
        """Lease up to ``limit`` due events, each the head of its loan, oldest first.

        A due event whose payload cannot be read back into an event (or names
        another change than its row) is never returned: it is parked with the
        reason, so its loan waits for an operator and every other loan goes on.
        """
        return self.settle_and_claim((), owner, limit=limit, lease=lease)

    def settle_and_claim(
        self,
        outcomes: Sequence[Outcome],
        owner: str,
        *,
        limit: int,
        lease: timedelta,
        let_go: Sequence[Claim] = (),
    ) -> list[Claim]:
        """:meth:`settle` then :meth:`claim`, in one transaction (one commit per dispatcher cycle).

        ``let_go`` are claims of ``owner`` it will not deliver (they waited too
        long): their leases are released first, so they can be claimed afresh.
        """
        outcomes = check_instances("outcomes", outcomes, Outcome, error=_config("outcomes", outcomes))  # type: ignore[assignment]
        let_go = check_instances("let_go", let_go, Claim, error=_config("let_go", let_go))  # type: ignore[assignment]
        owner = check_owner(owner)
        limit = check_count("limit", limit)
        lease = check_lease(lease)
        if not outcomes and not let_go and limit <= 0:
            return []

        def run(conn: Connection) -> list[Claim]:
            self._let_go(conn, let_go)
            self._settle(conn, outcomes)
            return self._claim(conn, owner, limit, lease) if limit > 0 else []

        return self._tx(run)

    def _claim(self, conn: Connection, owner: str, limit: int, lease: timedelta) -> list[Claim]:
        now = self.clock()
        rows = conn.execute(self._claim_stmt, {"b_now": now, "b_limit": limit}).all()
        if not rows:
            return []
        expires = now + lease
        claims: list[Claim] = []
        for r in rows:
            event = _read_claimed(r)
            if isinstance(event, str):
                conn.execute(sa.update(outbox).where(outbox.c.id == r.id).values(**_parking(event, now)))
                continue
            claims.append(
                Claim(
                    outbox_id=r.id,
                    event=event,
                    sequence=r.sequence,
                    attempts=r.attempts,
                    first_failed_at=r.first_failed_at,
                    lease_owner=owner,
                    lease_expires_at=expires,
                )
            )
        if claims:
            conn.execute(_LEASE, {"b_ids": [c.outbox_id for c in claims], "b_owner": owner, "b_expires": expires})
        return claims

    def _let_go(self, conn: Connection, claims: Sequence[Claim]) -> None:
        # Only leases still ours: another worker may have taken an expired one over.
        for owner in {c.lease_owner for c in claims}:
            ids = [c.outbox_id for c in claims if c.lease_owner == owner]
            conn.execute(_LET_GO, {"b_ids": ids, "b_owner": owner})

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Record how claimed deliveries ended, all in one transaction.

        A delivery is recorded whoever holds the lease (it happened); a retry
        or a park only by the lease's owner, so a worker whose lease expired
        cannot undo the newer owner's work.
        """
        checked: list[Outcome] = check_instances("outcomes", outcomes, Outcome, error=_config("outcomes", outcomes))  # type: ignore[assignment]
        if checked:
            self._tx(lambda conn: self._settle(conn, checked))

    def _settle(self, conn: Connection, outcomes: Sequence[Outcome]) -> None:
        row = outbox.c
        delivered = [
            {"b_id": o.claim.outbox_id, "b_at": o.at, "b_trace": o.trace_id, "b_tries": o.tries}
            for o in outcomes
            if o.kind == "delivered"
        ]
        if delivered:
            conn.execute(_DELIVERED, delivered)
        for o in outcomes:
            if o.kind == "delivered":
                continue
            failed = sa.func.coalesce(row.first_failed_at, o.at)
            values: dict[str, Any] = {
                "last_error": o.error,
                "first_failed_at": failed,
                "lease_owner": None,
                "lease_expires_at": None,
                "attempts": row.attempts + o.tries,
            }
            if o.trace_id is not None:
                values["trace_id"] = o.trace_id
            if o.kind == "parked":
                values["state"] = "parked"
            else:
                values["next_attempt_at"] = o.next_attempt_at or o.at
            conn.execute(
                sa.update(outbox)
                .where(row.id == o.claim.outbox_id, row.state == "pending", row.lease_owner == o.claim.lease_owner)
                .values(**values)
            )

    def release(self, owner: str) -> int:
        """Give up every lease ``owner`` holds (a graceful stop, or a restart under the same name)."""
        owner = check_owner(owner)

        def run(conn: Connection) -> int:
            result = conn.execute(
                sa.update(outbox)
                .where(outbox.c.lease_owner == owner, outbox.c.state == "pending")
                .values(lease_owner=None, lease_expires_at=None)
            )
            return int(result.rowcount)

        return self._tx(run)

    def retry(self, *loan_apply_nos: str, all_parked: bool = False, error_contains: str | None = None) -> int:
        """Return parked events to pending, due now; returns how many were parked and now are not.

        The selection is the parked events of the named loans, or of every
        loan with ``all_parked=True``, narrowed to those whose last error
        contains ``error_contains`` (case-sensitive) when given; the search
        text alone selects across every loan. Pending events of the selection
        waiting out a backoff are made due now as well (the operator says the
        cause is fixed), without resetting their age. An unknown loan number
        raises :class:`~loanstate.UnknownLoan` and changes nothing; an empty
        selection or a wrong-typed argument raises :class:`~loanstate.InvalidEvent`.
        """
        names, search = selected(loan_apply_nos, all_parked, error_contains)
        return self._tx(lambda conn: retry_selected(conn, names, search, self.clock()))

    def skip(self, *request_ids: str) -> dict[str, str]:
        """Mark parked or pending events as skipped (never sent), all of them or none.

        Returns the events skipped by this call, request_id -> loan_apply_no
        (one already skipped is accepted and not counted again). Refused with
        :class:`~loanstate.InvalidEvent`, changing nothing, when a request_id
        is malformed or unknown, its event was delivered, or a worker is
        sending it right now (its lease has not expired: it may reach the
        platform whatever we record, and its loan's next event must not
        overtake it). A payload that cannot be read can be skipped like any other.
        """
        wanted = sorted({check_request_id(r) for r in request_ids})
        if not wanted:
            raise InvalidEvent({"request_id": "nothing selected: give at least one request_id"})

        return self._tx(lambda conn: skip_selected(conn, wanted, self.clock()))

    def status(self) -> OutboxStatus:
        """A snapshot of the outbox: counts, lag of the oldest pending event, parked loans."""

        def run(conn: Connection) -> OutboxStatus:
            now = self.clock()
            counts = dict.fromkeys(("pending", "delivered", "parked", "skipped"), 0)
            for state, count in conn.execute(sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)):
                counts[state] = int(count)
            leased = conn.scalar(
                sa.select(sa.func.count()).where(outbox.c.state == "pending", outbox.c.lease_expires_at > now)
            )
            oldest = conn.scalar(sa.select(sa.func.min(outbox.c.created_at)).where(outbox.c.state == "pending"))
            if oldest is not None and oldest.tzinfo is None:
                # Aggregates bypass the column type on some engines; the value is UTC all the same.
                oldest = oldest.replace(tzinfo=now.tzinfo)
            later = outbox.alias("later")
            waiting = (
                sa.select(sa.func.count())
                .where(later.c.loan_apply_no == outbox.c.loan_apply_no, later.c.sequence > outbox.c.sequence)
                .scalar_subquery()
            )
            parked = conn.execute(
                sa.select(
                    outbox.c.loan_apply_no,
                    outbox.c.request_id,
                    outbox.c.sequence,
                    outbox.c.attempts,
                    outbox.c.last_error,
                    waiting,
                )
                .where(outbox.c.state == "parked")
                .order_by(outbox.c.id)
            ).all()
            return OutboxStatus(
                pending=counts["pending"],
                delivered=counts["delivered"],
                parked=counts["parked"],
                skipped=counts["skipped"],
                leased=int(leased or 0),
                oldest_pending_at=oldest,
                lag=None if oldest is None else max(now - oldest, timedelta(0)),
                parked_loans=tuple(ParkedLoan(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in parked),
            )

        return self._tx(run, read_only=True)

    def entries(self, loan_apply_no: str | None = None) -> list[OutboxEntry]:
        """Outbox rows of one loan by sequence, or all of them oldest first.

        A row whose payload cannot be read raises :class:`~loanstate.InvalidEvent` naming it.
        """
        if loan_apply_no is not None:
            loan_apply_no = check_text("loan_apply_no", loan_apply_no)

        def run(conn: Connection) -> list[OutboxEntry]:
            stmt = sa.select(outbox)
            if loan_apply_no is not None:
                stmt = stmt.where(outbox.c.loan_apply_no == loan_apply_no).order_by(outbox.c.sequence)
            else:
                stmt = stmt.order_by(outbox.c.id)
            return [
                OutboxEntry(
                    event=_readable(r),
                    sequence=r.sequence,
                    state=r.state,
                    attempts=r.attempts,
                    next_attempt_at=r.next_attempt_at,
                    created_at=r.created_at,
                    delivered_at=r.delivered_at,
                    trace_id=r.trace_id,
                    last_error=r.last_error,
                )
                for r in conn.execute(stmt)
            ]

        return self._tx(run, read_only=True)
