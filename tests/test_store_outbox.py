"""The operator's outbox tools (bulk retry and skip) and a bad outbox row, on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from _durable import START, FakeClock, assert_delivered_in_order, populate

from loanstate import (
    Dispatcher,
    InMemoryNotifier,
    InvalidEvent,
    PermanentDeliveryError,
    RetryPolicy,
    SqlStore,
    UnknownLoan,
)
from loanstate.store._schema import outbox

ONE_TRY = RetryPolicy(attempts=1, wait_initial=1.0, wait_jitter=1.0, wait_max=600.0, max_age=timedelta(hours=1))


@pytest.fixture
def clock() -> FakeClock:
    """A store clock the test moves by hand."""
    return FakeClock()


@pytest.fixture
def timed_store(db_url: sa.URL, clock: FakeClock) -> Iterator[SqlStore]:
    """A store on each engine whose clock is the test's FakeClock."""
    store = SqlStore(db_url, clock=clock)
    store.create_schema()
    yield store
    store.close()


def park(store: SqlStore, loans: set[str]) -> InMemoryNotifier:
    """Run a dispatcher whose notifier fails ``loans`` permanently (each error names its loan); return it cleared."""
    notifier = InMemoryNotifier()
    notifier.fail_when(lambda e: e.loan_apply_no in loans, PermanentDeliveryError)
    Dispatcher(store, notifier, retry=ONE_TRY).run_once()
    assert {p.loan_apply_no for p in store.outbox_status().parked_loans} == loans
    notifier.clear_failures()
    return notifier


def states(store: SqlStore) -> dict[str, str]:
    """request_id -> outbox state, for every row (read with SQL: a test may have broken a payload)."""
    with store.engine.connect() as conn:
        return {r.request_id: r.state for r in conn.execute(sa.select(outbox.c.request_id, outbox.c.state))}


def test_retry_takes_several_loans_at_once(store: SqlStore) -> None:
    """retry(a, b) un-parks both loans' events in one call and returns how many it un-parked."""
    names = populate(store, loans=4, changes=2)
    notifier = park(store, {"FI00000", "FI00001", "FI00002"})
    assert store.retry("FI00000", "FI00001") == 2
    assert {p.loan_apply_no for p in store.outbox_status().parked_loans} == {"FI00002"}
    assert store.retry("FI00000", "FI00001") == 0  # nothing parked any more
    Dispatcher(store, notifier).run_once()
    assert_delivered_in_order(store, [n for n in names if n != "FI00002"], notifier.sent)


def test_retry_all_parked_un_parks_every_loan(store: SqlStore) -> None:
    """retry(all_parked=True) returns every parked event to pending; then every loan is delivered whole, in order."""
    names = populate(store, loans=5, changes=2)
    notifier = park(store, {"FI00001", "FI00003", "FI00004"})
    assert store.retry(all_parked=True) == 3
    assert store.outbox_status().parked == 0
    Dispatcher(store, notifier).run_once()
    assert_delivered_in_order(store, names, notifier.sent)


def test_retry_error_contains_selects_by_the_last_error(store: SqlStore) -> None:
    """error_contains picks the parked events whose last error contains the text (case-sensitive), alone or per loan."""
    populate(store, loans=4, changes=1)
    park(store, {"FI00000", "FI00001", "FI00002"})
    assert store.retry(error_contains="'fi00001'") == 0  # case counts
    assert store.retry(error_contains="'FI00001'") == 1
    assert store.retry("FI00000", error_contains="'FI00002'") == 0  # the loan's error says FI00000
    assert store.retry("FI00002", all_parked=False, error_contains="'FI00002'") == 1
    assert [p.loan_apply_no for p in store.outbox_status().parked_loans] == ["FI00000"]
    assert store.retry(error_contains="100%_") == 0  # LIKE's wildcards are searched as text


def test_retry_refuses_an_empty_or_wrong_selection_and_changes_nothing(store: SqlStore) -> None:
    """No selection, loans with all_parked, a non-str, or an unknown loan: a typed error and no row changes."""
    populate(store, loans=2, changes=1)
    park(store, {"FI00000", "FI00001"})
    before = states(store)
    with pytest.raises(InvalidEvent, match="nothing selected"):
        store.retry()
    with pytest.raises(InvalidEvent, match="not both"):
        store.retry("FI00000", all_parked=True)
    with pytest.raises(InvalidEvent, match="loan_apply_no: must be a string, got int"):
        store.retry("FI00000", 13)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="all_parked"):
        store.retry(all_parked="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="error_contains"):
        store.retry(error_contains="")
    with pytest.raises(UnknownLoan, match="GHOST"):
        store.retry("FI00000", "GHOST")
    assert states(store) == before


def test_skip_takes_several_request_ids(store: SqlStore) -> None:
    """skip(a, b) sets both events aside and returns 2; skipping them again is accepted and counts 0."""
    names = populate(store, loans=3, changes=2)
    notifier = park(store, {"FI00000", "FI00001"})
    parked = [p.request_id for p in store.outbox_status().parked_loans]
    assert store.skip(*parked, parked[0]) == 2  # a repeated id counts once
    assert store.skip(*parked) == 0
    Dispatcher(store, notifier).run_once()
    skipped = {rid for rid, state in states(store).items() if state == "skipped"}
    assert skipped == set(parked)
    assert {rid for rid, state in states(store).items() if state != "skipped"} == {e.request_id for e in notifier.sent}
    assert_delivered_in_order(store, names[2:], notifier.sent)


def test_skip_is_all_or_nothing(timed_store: SqlStore, clock: FakeClock) -> None:
    """One request_id that cannot be skipped (unknown, delivered, leased, malformed) refuses the whole call."""
    populate(timed_store, loans=3, changes=1)
    notifier = park(timed_store, {"FI00000"})
    parked = timed_store.outbox_status().parked_loans[0].request_id
    delivered = notifier.sent[0].request_id
    timed_store.open_loan("LEASED", at=START)
    timed_store.transition("LEASED", after="OVERDUE", at=START)
    [leased] = timed_store.outbox.claim("worker", limit=5, lease=timedelta(seconds=30))
    before = states(timed_store)
    cases = [
        ("no-such-id", "no event with request_id"),
        (delivered, "already delivered"),
        ("not a request id!", r"\[A-Za-z0-9_-\]"),
        (13, "must be a string, got int"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidEvent, match=message):
            timed_store.skip(parked, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="being delivered by 'worker'"):
        timed_store.skip(parked, leased.event.request_id)
    with pytest.raises(InvalidEvent, match="nothing selected"):
        timed_store.skip()
    assert states(timed_store) == before


def test_an_unreadable_payload_parks_its_loan_and_every_other_loan_is_delivered(store: SqlStore) -> None:
    """A corrupted payload, or one naming another change, parks that loan with the reason; the rest go through."""
    names = populate(store, loans=6, changes=2)
    first = {e.loan_apply_no: e for e in store.outbox_entries() if e.sequence == 1}
    with store.engine.begin() as conn:
        rid = first["FI00002"].request_id
        conn.execute(sa.update(outbox).where(outbox.c.request_id == rid).values(payload='{"loan_apply_no": [1'))
        rid = first["FI00004"].request_id
        other = store.outbox_entries("FI00005")[0]
        stolen = other.event.to_dict()
        conn.execute(sa.update(outbox).where(outbox.c.request_id == rid).values(payload=json.dumps(stolen)))
    notifier = InMemoryNotifier()
    report = Dispatcher(store, notifier, retry=ONE_TRY).run_once()
    assert report.delivered == 8
    parked = {p.loan_apply_no: p for p in store.outbox_status().parked_loans}
    assert set(parked) == {"FI00002", "FI00004"}
    assert "unreadable outbox payload" in (parked["FI00002"].last_error or "")
    assert "does not match its row" in (parked["FI00004"].last_error or "")
    assert_delivered_in_order(store, [n for n in names if n not in parked], notifier.sent)
    assert store.outbox.claim("again", limit=10, lease=timedelta(seconds=30)) == []  # parked: never returned
    assert store.skip(parked["FI00002"].request_id) == 1  # an operator can set a broken row aside
    Dispatcher(store, notifier).run_once()
    with pytest.raises(InvalidEvent, match=r"outbox row .* of loan 'FI00002': unreadable outbox payload"):
        store.outbox_entries("FI00002")
    broken = [e.request_id for e in store.history("FI00002")]
    assert [states(store)[rid] for rid in broken] == ["skipped", "delivered"]
