"""Hostile arguments to the store and its outbox: a typed error or a correct result, and nothing written.

The cases the adversarial campaign found run on the real MariaDB and
PostgreSQL servers, where a wrong type used to reach SQL (MariaDB compares a
number with a string column numerically).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from _durable import START, populate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loanstate import (
    AsyncDispatcher,
    AsyncInMemoryNotifier,
    Dispatcher,
    InMemoryNotifier,
    InvalidConfiguration,
    InvalidEvent,
    LoanStateError,
    SqlStore,
)
from loanstate._events import derive_request_id
from loanstate.store import Change
from loanstate.store._schema import history, loans, outbox

LONG = "x" * 1_000_000
HOSTILE: list[object] = [0, 13, 1.5, None, b"FI1", ["FI1"], "FI\x001", "FI\ud800", "", "   ", LONG, "\x1b[31m"]
# Aware moments at the ends of datetime's range: not writable in UTC.
EDGES = [
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=14))),
]


class Status(enum.StrEnum):
    """Statuses as a lender's own enum."""

    NEW = "NEW"
    OVERDUE = "OVERDUE"


def snapshot(store: SqlStore) -> list[list[tuple[Any, ...]]]:
    """Every row of the three tables, in a stable order."""
    with store.engine.connect() as conn:
        return [
            [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in (loans, history, outbox)
        ]


def calls(value: object) -> dict[str, Callable[[SqlStore], object]]:
    """Each public store method, with ``value`` where a text argument goes."""
    return {
        "open_loan": lambda s: s.open_loan(value, at=START),  # type: ignore[arg-type]
        "open_loan customer_id": lambda s: s.open_loan("NEW1", at=START, customer_id=value),  # type: ignore[arg-type]
        "open_loan status": lambda s: s.open_loan("NEW2", at=START, status=value),  # type: ignore[arg-type]
        "transition": lambda s: s.transition(value, after="OVERDUE", at=START),  # type: ignore[arg-type]
        "transition after": lambda s: s.transition("FI00000", after=value, at=START),  # type: ignore[arg-type]
        "transition expected_before": lambda s: s.transition(
            "FI00000",
            after="SETTLED",
            at=START,
            expected_before=value,  # type: ignore[arg-type]
        ),
        "transition_many": lambda s: s.transition_many([Change(value, "SETTLED", START)]),  # type: ignore[arg-type]
        "open_loan at": lambda s: s.open_loan("NEW3", at=value),  # type: ignore[arg-type]
        "transition at": lambda s: s.transition("FI00000", after="SETTLED", at=value),  # type: ignore[arg-type]
        "status": lambda s: s.status(value),  # type: ignore[arg-type]
        "history": lambda s: s.history(value),  # type: ignore[arg-type]
        "retry": lambda s: s.retry(value),  # type: ignore[arg-type]
        "retry error_contains": lambda s: s.retry(error_contains=value),  # type: ignore[arg-type]
        "skip": lambda s: s.skip(value),  # type: ignore[arg-type]
        "outbox_entries": lambda s: s.outbox_entries(value),  # type: ignore[arg-type]
    }


# Methods where None is a valid value (an optional argument left out).
OPTIONAL = {"open_loan customer_id", "open_loan status", "transition expected_before", "outbox_entries"}


def test_mariadb_never_matches_a_number_against_a_key(store: SqlStore) -> None:
    """skip(13) does not skip a request_id starting '13'; status(0) does not answer for another loan (every engine)."""
    name = next(
        n
        for n in (f"FI{i}" for i in itertools.count())
        if derive_request_id(n, "NEW", "OVERDUE", START, sequence=1).startswith("13")
    )
    store.open_loan(name, at=START)
    store.transition(name, after="OVERDUE", at=START)
    before = snapshot(store)
    with pytest.raises(InvalidEvent, match="request_id: must be a string, got int 13"):
        store.skip(13)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="loan_apply_no: must be a string, got int 0"):
        store.status(0)  # type: ignore[arg-type]
    assert snapshot(store) == before
    assert [e.state for e in store.outbox_entries(name)] == ["pending"]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:12])
def test_every_method_refuses_a_hostile_value_and_writes_nothing(store: SqlStore, value: object) -> None:
    """Wrong types, NUL, lone surrogates, blanks, 1 MB strings: InvalidEvent with a short message, no row changed."""
    populate(store, loans=1, changes=1)
    before = snapshot(store)
    for name, call in calls(value).items():
        if value is None and name in OPTIONAL:
            continue
        with pytest.raises(InvalidEvent) as refused:
            call(store)
        assert len(str(refused.value)) < 400, name
    assert snapshot(store) == before


@pytest.mark.parametrize("at", EDGES, ids=["year 1", "year 9999"])
def test_a_moment_not_writable_in_utc_is_refused(store: SqlStore, at: datetime) -> None:
    """An aware time at the edge of datetime's range is InvalidEvent (not OverflowError) for both writers."""
    populate(store, loans=1, changes=1)
    before = snapshot(store)
    with pytest.raises(InvalidEvent, match="out of range"):
        store.open_loan("EDGE", at=at)
    with pytest.raises(InvalidEvent, match="out of range"):
        store.transition("FI00000", after="SETTLED", at=at)
    assert snapshot(store) == before


def test_str_subclasses_are_taken_as_their_string_value(store: SqlStore) -> None:
    """A StrEnum status or loan number works like the plain string, and is stored as one."""

    class Loan(enum.StrEnum):
        ONE = "FI-ENUM"

    store.open_loan(Loan.ONE, status=Status.NEW, at=START)
    event = store.transition(Loan.ONE, after=Status.OVERDUE, at=START, expected_before=Status.NEW)
    assert (event.loan_apply_no.__class__, event.after_status.__class__) == (str, str)
    assert store.status(Loan.ONE) == "OVERDUE"
    assert store.history(Loan.ONE) == [event]
    assert store.outbox_entries(Loan.ONE)[0].event == event


@pytest.mark.parametrize(
    ("call", "setting"),
    [
        (lambda s: s.outbox.claim(7, limit=1, lease=timedelta(seconds=5)), "owner"),
        (lambda s: s.outbox.claim("w\x00", limit=1, lease=timedelta(seconds=5)), "owner"),
        (lambda s: s.outbox.claim("w", limit=-1, lease=timedelta(seconds=5)), "limit"),
        (lambda s: s.outbox.claim("w", limit=True, lease=timedelta(seconds=5)), "limit"),
        (lambda s: s.outbox.claim("w", limit=1, lease=5), "lease"),
        (lambda s: s.outbox.claim("w", limit=1, lease=timedelta(0)), "lease"),
        (lambda s: s.outbox.settle(["not an outcome"]), "outcomes"),
        (lambda s: s.outbox.settle("delivered"), "outcomes"),
        (lambda s: s.outbox.release(None), "owner"),
    ],
)
def test_outbox_settings_are_checked(store: SqlStore, call: Callable[[SqlStore], object], setting: str) -> None:
    """The outbox's owner, limit, lease and outcomes are checked: InvalidConfiguration naming them, nothing leased."""
    populate(store, loans=1, changes=1)
    before = snapshot(store)
    with pytest.raises(InvalidConfiguration) as refused:
        call(store)
    assert refused.value.setting == setting
    assert snapshot(store) == before


def test_construction_refuses_wrong_settings() -> None:
    """A non-URL, a wrong machine or clock, or a malformed URL: InvalidConfiguration naming the setting."""
    for kwargs, setting in (
        ({"url_or_engine": 42}, "url_or_engine"),
        ({"url_or_engine": "not a url"}, "url_or_engine"),
        ({"url_or_engine": "nosuchdb://x"}, "url_or_engine"),
        ({"url_or_engine": "sqlite://", "machine": "xfd_default"}, "machine"),
        ({"url_or_engine": "sqlite://", "clock": datetime.now(UTC)}, "clock"),
    ):
        with pytest.raises(InvalidConfiguration) as refused:
            SqlStore(**kwargs)
        assert refused.value.setting == setting


def test_an_autocommit_engine_or_connection_is_refused(db_url: sa.URL) -> None:
    """AUTOCOMMIT (engine-wide, per engine view, or on a joined connection) is refused, saying why; nothing written."""
    plain = SqlStore(db_url)
    plain.create_schema()
    plain.open_loan("FI1", at=START)
    engine = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        for refused_engine in (engine, plain.engine.execution_options(isolation_level="AUTOCOMMIT")):
            with pytest.raises(InvalidConfiguration, match=r"AUTOCOMMIT.*no outbox row"):
                SqlStore(refused_engine)
        with plain.engine.connect() as opened:
            conn = opened.execution_options(isolation_level="AUTOCOMMIT")
            with pytest.raises(InvalidConfiguration, match="AUTOCOMMIT"):
                plain.transition("FI1", after="OVERDUE", at=START, connection=conn)
        with pytest.raises(InvalidConfiguration, match="connection"):
            plain.transition("FI1", after="OVERDUE", at=START, connection="conn")  # type: ignore[arg-type]
        assert plain.history("FI1") == []
        assert plain.status("FI1") == "NEW"
    finally:
        engine.dispose()
        plain.close()


@pytest.fixture
def memory_store() -> Iterator[SqlStore]:
    """A store on in-memory SQLite."""
    store = SqlStore("sqlite://")
    store.create_schema()
    yield store
    store.close()


def test_in_memory_sqlite_works_with_the_thread_pool_dispatcher(memory_store: SqlStore) -> None:
    """SqlStore('sqlite://') is one database for every thread: the dispatcher's workers deliver every event."""
    names = populate(memory_store, loans=20, changes=2)
    notifier = InMemoryNotifier()
    report = Dispatcher(memory_store, notifier, concurrency=4).run_once()
    assert report.delivered == 40
    assert {e.loan_apply_no for e in notifier.sent} == set(names)


async def test_in_memory_sqlite_works_with_the_async_dispatcher(memory_store: SqlStore) -> None:
    """The asyncio dispatcher (store calls on other threads) sees the same in-memory database and delivers it all."""
    populate(memory_store, loans=10, changes=3)
    notifier = AsyncInMemoryNotifier()
    report = await AsyncDispatcher(memory_store, notifier, concurrency=4).run_once()
    assert report.delivered == 30
    assert memory_store.outbox_status().delivered == 30


def test_an_in_memory_engine_with_one_database_per_thread_is_refused() -> None:
    """A caller's in-memory engine on the default per-thread pool is refused with the fix; a StaticPool one works."""
    engine = sa.create_engine("sqlite://")
    with pytest.raises(InvalidConfiguration, match="StaticPool"):
        SqlStore(engine)
    shared = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
    store = SqlStore(shared)
    store.create_schema()
    populate(store, loans=2, changes=1)
    assert Dispatcher(store, InMemoryNotifier(), concurrency=2).run_once().delivered == 2
    shared.dispose()


HOSTILE_VALUES = st.one_of(
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.datetimes(),  # naive
    st.datetimes(timezones=st.timezones()),  # aware, the edges of the range included
    st.sampled_from(EDGES),
    st.text(max_size=80),  # any code point: NUL, lone surrogates, controls, blanks, over-long
    st.text(min_size=65, max_size=200),
    st.sampled_from(list(Status)),
)
METHODS = sorted(calls(None))


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOSTILE_VALUES, method=st.sampled_from(METHODS))
def test_any_value_gives_a_typed_error_or_a_correct_result(store: SqlStore, value: object, method: str) -> None:
    """For every public method and any value: a LoanStateError and no row changed, or a result consistent with it."""
    if not snapshot(store)[0]:
        populate(store, loans=1, changes=1)
    before = snapshot(store)
    try:
        result = calls(value)[method](store)
    except LoanStateError:
        assert snapshot(store) == before
        return
    after = snapshot(store)
    # Success only for valid text (or an optional left out), and then it did what was asked.
    longest = 1000 if method == "retry error_contains" else 64
    if method.endswith(" at"):
        assert isinstance(value, datetime)
        assert value.utcoffset() is not None
        return
    assert (value is None and method in OPTIONAL) or (
        isinstance(value, str) and value.isprintable() and 0 < len(value) <= longest and not value.isspace()
    )
    if method.startswith("open_loan"):
        assert len(after[0]) == len(before[0]) + 1
        assert after[1:] == before[1:]
        store.transition_many([])  # a no-op, and the new loan must not trip the next example
    elif method in ("status", "history", "outbox_entries", "retry", "retry error_contains"):
        assert after == before
        assert result is not None
    else:
        assert len(after[1]) == len(before[1]) + 1  # a change: one history row (and one outbox row)
