"""Retention: prune deletes only delivered and skipped outbox rows older than the cut-off, in batches."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from loanstate import InvalidConfiguration
from loanstate.store import Outcome, SqlStore
from loanstate.store import _schema as schema

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _rows(store: SqlStore) -> dict[str, dict[str, Any]]:
    with store.engine.connect() as conn:
        return {r["request_id"]: dict(r) for r in conn.execute(sa.select(schema.outbox)).mappings()}


def _history_count(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(schema.history)) or 0)


def _book(store: SqlStore, clock: Clock, loans: int = 6) -> None:
    """Each loan: NEW -> OVERDUE -> NEW -> OVERDUE, an hour apart."""
    for n in range(loans):
        store.open_loan(f"P{n}", at=clock())
    for after in ("OVERDUE", "NEW", "OVERDUE"):
        clock.now += timedelta(hours=1)
        for n in range(loans):
            store.transition(f"P{n}", after=after, at=clock())


def _deliver_heads(store: SqlStore, clock: Clock, kind: str = "delivered", limit: int = 100) -> list[str]:
    claims = store.outbox.claim("tester", limit=limit, lease=timedelta(minutes=5))
    error = None if kind == "delivered" else "boom"
    store.outbox.settle([Outcome(claim=c, kind=kind, at=clock(), error=error) for c in claims])  # type: ignore[arg-type]
    return [c.event.request_id for c in claims]


def test_prune_deletes_only_old_done_rows_on_every_engine(db_url: sa.URL) -> None:
    """Delivered and skipped rows before the cut-off go; pending, parked, leased and newer rows stay; history stays."""
    clock = Clock()
    store = SqlStore(db_url, clock=clock)
    store.create_schema()
    try:
        _book(store, clock)
        first = _deliver_heads(store, clock)  # sequence 1 of every loan delivered at T0+3h
        clock.now += timedelta(hours=1)
        parked, skipped = _deliver_heads(store, clock, kind="parked", limit=2)  # two loans' sequence 2 parked
        store.skip(skipped)  # ... and one of them set aside at T0+4h
        second = _deliver_heads(store, clock)  # the other loans' sequence 2, and the skipped one's 3, delivered
        leased = store.outbox.claim("other", limit=2, lease=timedelta(hours=1))  # two sequence-3 rows under lease
        clock.now += timedelta(days=40)
        history_before = _history_count(store)

        cutoff = T0 + timedelta(hours=3, minutes=30)  # after the first deliveries, before the second
        deleted = store.prune(delivered_before=cutoff, batch_size=2)

        rows = _rows(store)
        assert deleted == len(first)
        assert not set(first) & set(rows)
        assert set(second) <= set(rows)
        assert {parked, skipped} <= set(rows)
        assert {c.event.request_id for c in leased} <= set(rows)
        assert _history_count(store) == history_before
        assert store.prune(delivered_before=clock(), batch_size=1000) == len(second) + 1  # leased/parked/pending stay
        assert {r["state"] for r in _rows(store).values()} == {"pending", "parked"}
    finally:
        store.close()


def test_prune_archives_each_row_before_deleting_it(tmp_path: Path) -> None:
    """With an archive, every deleted row reaches it first, with its event; a failing archive deletes nothing."""
    clock = Clock()
    store = SqlStore(f"sqlite:///{tmp_path / 'p.db'}", clock=clock)
    store.create_schema()
    _book(store, clock, loans=3)
    delivered = _deliver_heads(store, clock)
    clock.now += timedelta(days=1)
    archived: list[Mapping[str, Any]] = []

    def failing(rows: Sequence[Mapping[str, Any]]) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.prune(delivered_before=clock(), archive=failing)
    assert set(delivered) <= set(_rows(store))  # nothing deleted without its archive

    assert store.prune(delivered_before=clock(), batch_size=2, archive=archived.extend) == 3
    assert sorted(r["request_id"] for r in archived) == sorted(delivered)
    from loanstate.store._prune import archive_record

    line = json.loads(archive_record(archived[0]))
    assert line["state"] == "delivered"
    assert line["event"]["request_id"] == line["request_id"]
    assert datetime.fromisoformat(line["delivered_at"]).tzinfo is not None
    store.close()


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"delivered_before": datetime(2024, 1, 1)}, "delivered_before"),
        ({"delivered_before": "2024-01-01"}, "delivered_before"),
        ({"delivered_before": T0, "batch_size": 0}, "batch_size"),
        ({"delivered_before": T0, "batch_size": True}, "batch_size"),
        ({"delivered_before": T0, "batch_size": 10**9}, "batch_size"),
    ],
)
def test_prune_refuses_bad_arguments(store: SqlStore, kwargs: dict[str, Any], setting: str) -> None:
    """A naive or non-datetime cut-off, or a batch size out of range, is an InvalidConfiguration naming it."""
    with pytest.raises(InvalidConfiguration) as refused:
        store.prune(**kwargs)
    assert refused.value.setting == setting


class PruneMachine(RuleBasedStateMachine):
    """Changes, deliveries, parks, skips, leases and prunes in any order, beside a model of what must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = SqlStore("sqlite://", clock=self.clock)
        self.store.create_schema()
        self.loans: list[str] = []
        self.history = 0
        self.pruned: set[str] = set()

    @initialize(count=st.integers(1, 4))
    def open_loans(self, count: int) -> None:
        for n in range(count):
            self.store.open_loan(f"S{n}", at=self.clock())
            self.loans.append(f"S{n}")

    @rule(pick=st.integers(0, 3), hours=st.integers(0, 30))
    def change(self, pick: int, hours: int) -> None:
        self.clock.now += timedelta(hours=hours)
        loan = self.loans[pick % len(self.loans)]
        after = "OVERDUE" if self.store.status(loan) == "NEW" else "NEW"
        self.store.transition(loan, after=after, at=self.clock())
        self.history += 1

    @rule(kind=st.sampled_from(["delivered", "delivered", "parked", "retry"]), limit=st.integers(1, 3))
    def settle_some(self, kind: str, limit: int) -> None:
        _deliver_heads(self.store, self.clock, kind=kind, limit=limit)

    @rule(minutes=st.integers(1, 600))
    def lease_some(self, minutes: int) -> None:
        self.store.outbox.claim("someone", limit=1, lease=timedelta(minutes=minutes))

    @precondition(lambda self: any(r["state"] == "parked" for r in _rows(self.store).values()))
    @rule()
    def skip_a_parked_one(self) -> None:
        parked = sorted(k for k, r in _rows(self.store).items() if r["state"] == "parked")
        self.store.skip(parked[0])

    @rule(hours=st.integers(0, 72), back=st.integers(0, 48), batch=st.integers(1, 5))
    def prune(self, hours: int, back: int, batch: int) -> None:
        self.clock.now += timedelta(hours=hours)
        cutoff = self.clock() - timedelta(hours=back)
        before = _rows(self.store)
        deleted = self.store.prune(delivered_before=cutoff, batch_size=batch)
        after = _rows(self.store)
        gone = set(before) - set(after)
        assert deleted == len(gone)
        for request_id in gone:
            row = before[request_id]
            assert row["state"] in ("delivered", "skipped"), row
            assert row["lease_owner"] is None, row
            settled = row["delivered_at"] if row["state"] == "delivered" else row["skipped_at"]
            assert settled < cutoff, row
        for row in after.values():  # nothing old and done is left behind
            settled = row["delivered_at"] if row["state"] == "delivered" else row["skipped_at"]
            assert not (row["state"] in ("delivered", "skipped") and settled < cutoff and row["lease_owner"] is None)
        self.pruned |= gone

    @invariant()
    def history_is_never_pruned(self) -> None:
        assert _history_count(self.store) == self.history

    @invariant()
    def every_unpruned_change_is_in_the_outbox(self) -> None:
        assert len(_rows(self.store)) + len(self.pruned) == self.history

    def teardown(self) -> None:
        self.store.close()


TestPruneMachine = PruneMachine.TestCase
