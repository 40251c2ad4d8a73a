"""SqlStore: one transaction per change (status, history, outbox), on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loanstate import (
    ConcurrentChange,
    IllegalTransition,
    InvalidEvent,
    LoanChangeEvent,
    LoanMachine,
    SqlStore,
    Transition,
    UnknownLoan,
)
from loanstate.store import SCHEMA_VERSION, Change
from loanstate.store._changes import payload_of
from loanstate.store._schema import history, loans, outbox
from loanstate.testing import change_events, change_times, loan_numbers

EXAMPLE = itertools.count()
AT = datetime(2024, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=8)))


def counts(store: SqlStore) -> tuple[int, int, int]:
    """Rows in (loans, history, outbox)."""
    with store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0) for t in (loans, history, outbox)
        )


def test_create_schema_is_idempotent_and_versioned(db_url: sa.URL) -> None:
    """create_schema() may run at every start; it records the schema version once."""
    store = SqlStore(db_url)
    assert store.schema_version() is None
    store.create_schema()
    store.open_loan("FI1", at=AT)
    store.create_schema()
    assert store.schema_version() == SCHEMA_VERSION
    assert store.status("FI1") == "NEW"
    store.close()


def test_create_schema_from_several_starting_workers_at_once(db_url: sa.URL) -> None:
    """Workers starting together on a fresh database may all call create_schema(): every one succeeds."""
    stores = [SqlStore(db_url) for _ in range(4)]
    together = threading.Barrier(len(stores), timeout=60)
    errors: list[str] = []

    def start(store: SqlStore) -> None:
        together.wait()
        try:
            store.create_schema()
        except Exception as exc:  # recorded for the assertion below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert stores[0].schema_version() == SCHEMA_VERSION
    finally:
        for s in stores:
            s.close()


def test_opening_a_loan_is_not_a_change(store: SqlStore) -> None:
    """open_loan registers the loan at the initial (or given) status, with no history and no outbox row."""
    store.open_loan("FI1", at=AT)
    store.open_loan("FI2", status="OVERDUE", at=AT, customer_id="C-9", institution_loan_no="INST-1")
    assert (store.status("FI1"), store.status("FI2")) == ("NEW", "OVERDUE")
    assert store.history("FI1") == []
    assert counts(store) == (2, 0, 0)


def test_opening_refuses_bad_input_and_duplicates(store: SqlStore) -> None:
    """A blank loan number, an unknown status, a naive time or a second open raise InvalidEvent."""
    store.open_loan("FI1", at=AT)
    with pytest.raises(InvalidEvent, match="loan_apply_no"):
        store.open_loan("  ", at=AT)
    with pytest.raises(InvalidEvent, match="UNHEARD_OF"):
        store.open_loan("FI2", status="UNHEARD_OF", at=AT)
    with pytest.raises(InvalidEvent, match="timezone-aware"):
        store.open_loan("FI3", at=datetime(2024, 1, 1))
    with pytest.raises(InvalidEvent, match="already open"):
        store.open_loan("FI1", at=AT)
    assert counts(store) == (1, 0, 0)


def test_transition_writes_status_history_and_outbox_together(store: SqlStore) -> None:
    """A change returns its event and leaves exactly one history row and one pending outbox row."""
    store.open_loan("FI1", at=AT, customer_id="C-1")
    event = store.transition("FI1", after="OVERDUE", at=AT)
    assert (event.before_status, event.after_status, event.customer_id) == ("NEW", "OVERDUE", "C-1")
    assert store.status("FI1") == "OVERDUE"
    assert store.history("FI1") == [event]
    [entry] = store.outbox_entries("FI1")
    assert (entry.event, entry.sequence, entry.state, entry.attempts) == (event, 1, "pending", 0)


def test_errors_write_nothing(store: SqlStore) -> None:
    """Unknown loan, illegal change, stale expected_before, bad time: each raises and writes nothing."""
    store.open_loan("FI1", at=AT)
    store.transition("FI1", after="OVERDUE", at=AT)
    before = counts(store)
    with pytest.raises(UnknownLoan, match="NOPE"):
        store.transition("NOPE", after="OVERDUE", at=AT)
    with pytest.raises(IllegalTransition) as illegal:
        store.transition("FI1", after="INVALID", at=AT)
    assert illegal.value.allowed == frozenset({"NEW", "SETTLED"})
    with pytest.raises(ConcurrentChange) as stale:
        store.transition("FI1", after="SETTLED", at=AT, expected_before="NEW")
    assert (stale.value.expected, stale.value.actual) == ("NEW", "OVERDUE")
    with pytest.raises(InvalidEvent, match="UNHEARD_OF"):
        store.transition("FI1", after="UNHEARD_OF", at=AT)
    with pytest.raises(InvalidEvent, match="timezone-aware"):
        store.transition("FI1", after="SETTLED", at=datetime(2024, 1, 1))
    assert counts(store) == before
    assert store.status("FI1") == "OVERDUE"


def test_batch_is_all_or_nothing_and_chains_per_loan(store: SqlStore) -> None:
    """transition_many applies every change in one transaction, chaining a loan's changes, or none at all."""
    for name in ("FI1", "FI2"):
        store.open_loan(name, at=AT)
    bad = [Change("FI1", "OVERDUE", AT), Change("FI2", "OVERDUE", AT), Change("FI1", "INVALID", AT)]
    with pytest.raises(IllegalTransition):
        store.transition_many(bad)
    assert counts(store) == (2, 0, 0)
    good = [
        Change("FI1", "OVERDUE", AT),
        Change("FI2", "SETTLED", AT),
        Change("FI1", "NEW", AT + timedelta(days=1), expected_before="OVERDUE"),
    ]
    events = store.transition_many(good)
    assert [(e.loan_apply_no, e.before_status, e.after_status) for e in events] == [
        ("FI1", "NEW", "OVERDUE"),
        ("FI2", "NEW", "SETTLED"),
        ("FI1", "OVERDUE", "NEW"),
    ]
    assert store.history("FI1") == [events[0], events[2]]
    assert [e.sequence for e in store.outbox_entries("FI1")] == [1, 2]
    assert store.transition_many([]) == []


def test_the_same_change_twice_gets_two_request_ids(store: SqlStore) -> None:
    """Two identical changes at the same instant differ by their sequence, so their request_ids differ."""
    store.open_loan("FI1", at=AT)
    first = store.transition("FI1", after="OVERDUE", at=AT)
    store.transition("FI1", after="NEW", at=AT)
    again = store.transition("FI1", after="OVERDUE", at=AT)
    assert first.to_dict() | {"request_id": ""} == again.to_dict() | {"request_id": ""}
    assert first.request_id != again.request_id


def test_connection_joins_the_callers_transaction(store: SqlStore) -> None:
    """With connection=, the lender's own write and ours commit together, or roll back together."""
    ledger = sa.Table("ledger", sa.MetaData(), sa.Column("entry", sa.String(64), primary_key=True))
    ledger.create(store.engine)
    store.open_loan("FI1", at=AT)
    with store.engine.begin() as conn:
        conn.execute(ledger.insert().values(entry="late fee FI1"))
        store.transition("FI1", after="OVERDUE", at=AT, connection=conn)

    def payoff_then_fail() -> None:
        with store.engine.begin() as conn:
            conn.execute(ledger.insert().values(entry="payoff FI1"))
            store.transition("FI1", after="SETTLED", at=AT, connection=conn)
            raise RuntimeError("the lender's own code failed after our write")

    with pytest.raises(RuntimeError, match="lender's own code"):
        payoff_then_fail()
    with store.engine.connect() as conn:
        assert conn.scalars(sa.select(ledger.c.entry)).all() == ["late fee FI1"]
    assert store.status("FI1") == "OVERDUE"
    assert counts(store) == (1, 1, 1)


def test_a_refused_joined_change_leaves_the_callers_transaction_usable(store: SqlStore) -> None:
    """A change refused inside the caller's transaction writes nothing, and the caller may go on and commit."""
    store.open_loan("FI2", at=AT)
    with store.engine.begin() as conn:
        with pytest.raises(ConcurrentChange):
            store.transition("FI2", after="OVERDUE", at=AT, expected_before="SETTLED", connection=conn)
        with pytest.raises(IllegalTransition):
            store.transition("FI2", after="NEW", at=AT, connection=conn)
        store.transition("FI2", after="SETTLED", at=AT, connection=conn)
    assert store.status("FI2") == "SETTLED"
    assert [e.after_status for e in store.history("FI2")] == ["SETTLED"]


def test_unknown_loans_have_no_status_or_history(store: SqlStore) -> None:
    """status() and history() of a loan never opened raise UnknownLoan naming it."""
    with pytest.raises(UnknownLoan, match="GHOST"):
        store.status("GHOST")
    with pytest.raises(UnknownLoan, match="GHOST"):
        store.history("GHOST")


def test_keys_are_compared_exactly(store: SqlStore) -> None:
    """Loan numbers differing only in case or a trailing space are different loans on every engine."""
    for name in ("fi1", "FI1", "FI1 "):
        store.open_loan(name, at=AT)
    store.transition("FI1 ", after="OVERDUE", at=AT)
    assert [store.status(n) for n in ("fi1", "FI1", "FI1 ")] == ["NEW", "NEW", "OVERDUE"]


def test_non_ascii_statuses_and_fields_round_trip(db_url: sa.URL) -> None:
    """A custom lifecycle with non-ASCII loan numbers and customer ids is stored and read back unchanged."""
    machine = LoanMachine.define(
        statuses={"ACTIVE": "生效", "LATE": "逾期", "CLOSED": "结清"},
        initial="ACTIVE",
        transitions=[Transition("ACTIVE", "LATE"), Transition(["ACTIVE", "LATE"], "CLOSED")],
        terminal=["CLOSED"],
    )
    store = SqlStore(db_url, machine=machine)
    store.create_schema()
    store.open_loan("借据-001", at=AT, customer_id="客户🙂")
    event = store.transition("借据-001", after="LATE", at=AT)
    assert store.history("借据-001") == [event]
    assert store.outbox_entries("借据-001")[0].event.customer_id == "客户🙂"
    store.close()


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=change_times(), loan=loan_numbers(), data=st.data())
def test_history_returns_each_change_exactly_as_made(
    store: SqlStore, at: datetime, loan: str, data: st.DataObject
) -> None:
    """Times keep their microseconds and their offset, and any valid text survives, on every engine."""
    loan = f"{loan[:50]}#{next(EXAMPLE)}"  # each example its own loan, in one database
    store.open_loan(loan, at=at)
    later = at + data.draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400)))
    later = later.astimezone(data.draw(st.sampled_from([UTC, timezone(timedelta(hours=-9, minutes=-30))])))
    made = [store.transition(loan, after="OVERDUE", at=at), store.transition(loan, after="SETTLED", at=later)]
    read = store.history(loan)
    assert [e.to_dict() for e in read] == [e.to_dict() for e in made]
    assert [e.to_top_param() for e in read] == [e.to_top_param() for e in made]


@given(event=change_events())
def test_the_outbox_payload_is_the_json_of_to_dict(event: LoanChangeEvent) -> None:
    """The store's fast payload writer gives exactly json.dumps(to_dict()) (compact, non-ASCII raw), and reads back."""
    payload = payload_of(event)
    assert payload == json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
    assert LoanChangeEvent.from_dict(json.loads(payload)) == event
