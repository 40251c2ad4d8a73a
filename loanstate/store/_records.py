"""Value objects the store takes and returns."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import attrs

from loanstate._events import LoanChangeEvent

__all__ = ["Change", "Claim", "OutboxEntry", "OutboxState", "OutboxStatus", "Outcome", "ParkedLoan"]

#: ``pending`` waits to be sent (or to be retried), ``delivered`` was accepted,
#: ``parked`` failed for good and holds its loan's later events back,
#: ``skipped`` was set aside by an operator (never sent; later events go on).
OutboxState = Literal["pending", "delivered", "parked", "skipped"]


@attrs.frozen
class Change:
    """One change for :meth:`SqlStore.transition_many`: move ``loan_apply_no`` to ``after`` at ``at``.

    ``expected_before``, when given, must be the loan's status at that point of
    the batch, or the whole batch fails with :class:`~loanstate.ConcurrentChange`.
    """

    loan_apply_no: str
    after: str
    at: datetime
    expected_before: str | None = None


@attrs.frozen
class OutboxEntry:
    """One row of the outbox: an event and how its delivery is going."""

    event: LoanChangeEvent
    sequence: int
    state: OutboxState
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None
    trace_id: str | None
    last_error: str | None

    @property
    def request_id(self) -> str:
        """The event's idempotency key."""
        return self.event.request_id

    @property
    def loan_apply_no(self) -> str:
        """The loan the event belongs to."""
        return self.event.loan_apply_no


@attrs.frozen
class ParkedLoan:
    """A loan whose head event failed for good: ``request_id`` and why (``last_error``)."""

    loan_apply_no: str
    request_id: str
    sequence: int
    attempts: int
    last_error: str | None
    waiting: int
    """How many later events of the loan wait behind the parked one."""


@attrs.frozen
class OutboxStatus:
    """A snapshot of the outbox, for operators and the CLI.

    ``lag`` is how long the oldest pending event has waited since it was
    recorded (``None`` when nothing is pending); ``leased`` counts pending
    events a worker is delivering right now.
    """

    pending: int
    delivered: int
    parked: int
    skipped: int
    leased: int
    oldest_pending_at: datetime | None
    lag: timedelta | None
    parked_loans: tuple[ParkedLoan, ...]


@attrs.frozen
class Claim:
    """An event a worker leased for delivery (the dispatcher's unit of work)."""

    outbox_id: int
    event: LoanChangeEvent
    sequence: int
    attempts: int
    first_failed_at: datetime | None
    lease_owner: str
    lease_expires_at: datetime


@attrs.frozen
class Outcome:
    """How one claimed delivery ended, for :meth:`Outbox.settle`.

    ``kind`` is ``delivered`` (the platform accepted it), ``retry`` (try again
    at ``next_attempt_at``) or ``parked`` (failed for good: hold the loan).
    """

    claim: Claim
    kind: Literal["delivered", "retry", "parked"]
    at: datetime
    error: str | None = None
    trace_id: str | None = None
    next_attempt_at: datetime | None = None
    tries: int = 1
    """How many times the event was sent during this claim (added to its ``attempts``)."""
