"""Helpers shared by the store and dispatcher tests (not tests themselves)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from loanstate import LoanChangeEvent, SqlStore
from loanstate.store import Change

START = datetime(2024, 1, 1, tzinfo=UTC)
# The walk every populated loan takes: each step legal in the shipped lifecycle.
WALK = ("OVERDUE", "NEW", "OVERDUE", "SETTLED", "NEW", "SETTLED")


class FakeClock:
    """A clock the test moves by hand, shared by the store and the dispatcher."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2025, 6, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def populate(store: SqlStore, loans: int, changes: int, *, prefix: str = "FI") -> list[str]:
    """Open ``loans`` loans and give each ``changes`` changes (batched); return the loan numbers."""
    names = [f"{prefix}{n:05d}" for n in range(loans)]
    for name in names:
        store.open_loan(name, at=START)
    batch = [
        Change(name, WALK[step % len(WALK)], START + timedelta(minutes=step))
        for step in range(changes)
        for name in names
    ]
    for at in range(0, len(batch), 1000):
        store.transition_many(batch[at : at + 1000])
    return names


def first_effects(events: Iterable[LoanChangeEvent]) -> dict[str, list[str]]:
    """Per loan, the request_ids in the order they first arrived (replays ignored)."""
    seen: set[str] = set()
    order: dict[str, list[str]] = {}
    for event in events:
        if event.request_id not in seen:
            seen.add(event.request_id)
            order.setdefault(event.loan_apply_no, []).append(event.request_id)
    return order


def assert_delivered_in_order(store: SqlStore, names: Sequence[str], events: Iterable[LoanChangeEvent]) -> None:
    """Every loan's history arrived whole, each event first arriving in history order."""
    got = first_effects(events)
    for name in names:
        assert got.get(name, []) == [e.request_id for e in store.history(name)], name
