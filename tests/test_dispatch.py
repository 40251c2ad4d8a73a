"""Dispatcher and AsyncDispatcher: order per loan, retries, parking, operator actions, leases, graceful stop."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import stamina
from _durable import FakeClock, Twin, assert_delivered_in_order, populate

from loanstate import (
    AsyncCallbackNotifier,
    AsyncDispatcher,
    AsyncInMemoryNotifier,
    CallbackNotifier,
    Dispatcher,
    InMemoryNotifier,
    InvalidConfiguration,
    InvalidEvent,
    LoanChangeEvent,
    PermanentDeliveryError,
    RetryPolicy,
    SqlStore,
    SystemicDeliveryError,
    TransientDeliveryError,
    UnknownLoan,
)
from loanstate.dispatch import Attempt, Pause

# One try per claim (no in-process sleeps); durable retries after 1-2 s of store time.
ONE_TRY = RetryPolicy(attempts=1, wait_initial=1.0, wait_jitter=1.0, wait_max=600.0, max_age=timedelta(hours=1))
HERE = Path(__file__).resolve().parent


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest) -> Twin:
    """Each test runs against both faces of the one loop: Dispatcher and AsyncDispatcher."""
    return Twin(request.param)


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


def test_delivers_every_event_in_order_per_loan(twin: Twin, store: SqlStore) -> None:
    """All events of many loans are delivered, each loan's strictly in history order, and the report says so."""
    names = populate(store, loans=40, changes=4)
    notifier = twin.notifier()
    report = twin.run_once(twin.dispatcher(store, notifier, concurrency=8))
    assert (report.delivered, report.retried, report.parked, report.pending, report.lag) == (160, 0, 0, 0, None)
    assert len(notifier.sent) == 160
    assert_delivered_in_order(store, names, notifier.sent)
    status = store.outbox_status()
    assert (status.delivered, status.pending, status.leased) == (160, 0, 0)
    assert all(e.trace_id and e.delivered_at for e in store.outbox_entries())


def test_transient_failures_retry_in_process_with_the_same_request_id(twin: Twin, store: SqlStore) -> None:
    """A transient failure is retried (stamina, jittered backoff) with the same request_id until it goes through."""
    populate(store, loans=1, changes=1)
    notifier = twin.notifier()
    notifier.fail_next(2, TransientDeliveryError)
    policy = RetryPolicy(attempts=3, wait_initial=0.001, wait_jitter=0.001, wait_max=0.01)
    report = twin.run_once(twin.dispatcher(store, notifier, retry=policy))
    assert (report.delivered, report.retried) == (1, 0)
    assert len({e.request_id for e in notifier.attempts}) == 1
    assert len(notifier.attempts) == 3
    assert store.outbox_entries()[0].attempts == 3


def test_durable_retry_waits_its_backoff_and_holds_the_loan(
    twin: Twin, timed_store: SqlStore, clock: FakeClock
) -> None:
    """After the in-process tries, the event is rescheduled with backoff; the loan's next event waits for it."""
    populate(timed_store, loans=2, changes=2)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: e.loan_apply_no == "FI00000", TransientDeliveryError)
    dispatcher = twin.dispatcher(timed_store, notifier, retry=ONE_TRY)
    report = twin.run_once(dispatcher)
    assert (report.delivered, report.retried, report.pending) == (2, 1, 2)
    head, waiting = timed_store.outbox_entries("FI00000")
    assert (head.state, waiting.state) == ("pending", "pending")
    assert timedelta(seconds=1) <= head.next_attempt_at - clock.now <= timedelta(seconds=2)
    assert "TransientDeliveryError" in (head.last_error or "")
    assert twin.run_once(dispatcher).delivered == 0  # not due yet
    notifier.clear_failures()
    clock.advance(2)
    assert twin.run_once(dispatcher).delivered == 2
    assert_delivered_in_order(timed_store, ["FI00000", "FI00001"], notifier.sent)


def test_an_operator_retry_cuts_a_backoff_short(twin: Twin, timed_store: SqlStore) -> None:
    """retry(loan) makes a pending event that is waiting out its backoff due at once (nothing was parked: 0)."""
    populate(timed_store, loans=1, changes=1)
    notifier = twin.notifier()
    notifier.fail_next(1, TransientDeliveryError)
    dispatcher = twin.dispatcher(timed_store, notifier, retry=ONE_TRY)
    assert twin.run_once(dispatcher).retried == 1
    assert twin.run_once(dispatcher).delivered == 0
    assert timed_store.retry("FI00000") == 0
    assert twin.run_once(dispatcher).delivered == 1
    assert_delivered_in_order(timed_store, ["FI00000"], notifier.sent)


def test_backoff_doubles_up_to_its_cap() -> None:
    """RetryPolicy.backoff grows as wait_initial * 2**(n-1) plus jitter, never above wait_max."""
    policy = RetryPolicy(wait_initial=1.0, wait_jitter=0.5, wait_max=600.0)
    for n, base in ((1, 1.0), (2, 2.0), (5, 16.0)):
        assert base <= policy.backoff(n) <= base + 0.5
    assert policy.backoff(40) == 600.0
    # 2.0 ** 1024 overflows a float: a loan failing for days (3 tries per claim) gets there.
    assert policy.backoff(5000) == 600.0


def test_a_long_failing_event_is_rescheduled_not_crashing_the_dispatcher(twin: Twin, timed_store: SqlStore) -> None:
    """An event with thousands of failed attempts behind it is rescheduled at wait_max, and the dispatcher goes on."""
    populate(timed_store, loans=1, changes=1)
    with timed_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE loanstate_outbox SET attempts = 5000"))
    notifier = twin.notifier()
    notifier.fail_when(lambda e: True, TransientDeliveryError)
    report = twin.run_once(twin.dispatcher(timed_store, notifier, retry=ONE_TRY))
    assert (report.retried, report.pending) == (1, 1)
    [entry] = timed_store.outbox_entries()
    assert entry.next_attempt_at - timed_store.now() <= timedelta(seconds=600)


def test_permanent_failure_parks_the_loan_and_an_operator_retries_it(twin: Twin, store: SqlStore) -> None:
    """A permanent failure parks that loan (its later events wait, others go on) until an operator retries it."""
    names = populate(store, loans=3, changes=3)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: e.loan_apply_no == "FI00001" and e.after_status == "NEW", PermanentDeliveryError)
    dispatcher = twin.dispatcher(store, notifier, retry=ONE_TRY)
    report = twin.run_once(dispatcher)
    assert (report.delivered, report.parked, report.pending) == (7, 1, 1)
    status = store.outbox_status()
    [parked] = status.parked_loans
    assert (parked.loan_apply_no, parked.sequence, parked.waiting) == ("FI00001", 2, 1)
    assert "PermanentDeliveryError" in (parked.last_error or "")
    assert twin.run_once(dispatcher).delivered == 0  # parked stays parked
    notifier.clear_failures()
    assert store.retry("FI00001") == 1
    assert store.retry("FI00001") == 0
    assert twin.run_once(dispatcher).delivered == 2
    assert_delivered_in_order(store, names, notifier.sent)
    with pytest.raises(UnknownLoan):
        store.retry("GHOST")


def test_an_operator_skips_a_parked_event_and_the_loan_goes_on(twin: Twin, store: SqlStore) -> None:
    """skip(request_id) sets the parked event aside for good; the loan's later events are delivered."""
    populate(store, loans=1, changes=3)
    notifier = twin.notifier()
    notifier.fail_next(1, PermanentDeliveryError)
    dispatcher = twin.dispatcher(store, notifier, retry=ONE_TRY)
    twin.run_once(dispatcher)
    parked = store.outbox_status().parked_loans[0]
    assert store.skip(parked.request_id) == 1
    assert twin.run_once(dispatcher).delivered == 2
    states = [e.state for e in store.outbox_entries("FI00000")]
    assert states == ["skipped", "delivered", "delivered"]
    with pytest.raises(InvalidEvent, match="already delivered"):
        store.skip(store.outbox_entries("FI00000")[1].request_id)
    with pytest.raises(InvalidEvent, match="no event"):
        store.skip("no-such-request-id")


def test_an_event_being_delivered_cannot_be_skipped(timed_store: SqlStore, clock: FakeClock) -> None:
    """skip() refuses an event under a live lease (it may reach the platform anyway); after the lease it works."""
    populate(timed_store, loans=1, changes=2)
    [claim] = timed_store.outbox.claim("busy-worker", limit=5, lease=timedelta(seconds=30))
    with pytest.raises(InvalidEvent, match="being delivered by 'busy-worker'"):
        timed_store.skip(claim.event.request_id)
    assert [e.state for e in timed_store.outbox_entries("FI00000")] == ["pending", "pending"]
    clock.advance(31)
    assert timed_store.skip(claim.event.request_id) == 1
    assert [e.state for e in timed_store.outbox_entries("FI00000")] == ["skipped", "pending"]


def test_a_loan_failing_past_max_age_is_parked(twin: Twin, timed_store: SqlStore, clock: FakeClock) -> None:
    """Transient failures that outlast RetryPolicy.max_age park the loan for an operator."""
    populate(timed_store, loans=1, changes=1)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: True, TransientDeliveryError)
    dispatcher = twin.dispatcher(timed_store, notifier, retry=ONE_TRY)
    parked = 0
    for _ in range(20):
        parked += twin.run_once(dispatcher).parked
        clock.advance(600)
    assert parked == 1
    [entry] = timed_store.outbox_entries()
    assert entry.state == "parked"
    assert "max_age" in (entry.last_error or "")


def test_a_crashed_workers_leases_expire_and_another_takes_over(
    twin: Twin, timed_store: SqlStore, clock: FakeClock
) -> None:
    """Events a dead worker claimed are untouchable until its lease expires, then another worker delivers them."""
    names = populate(timed_store, loans=5, changes=2)
    claimed = timed_store.outbox.claim("dead-worker", limit=3, lease=timedelta(seconds=30))
    assert len(claimed) == 3
    notifier = twin.notifier()
    dispatcher = twin.dispatcher(timed_store, notifier, lease=timedelta(seconds=30))
    assert twin.run_once(dispatcher).delivered == 4  # two loans free, two events each
    clock.advance(31)
    assert twin.run_once(dispatcher).delivered == 6
    assert_delivered_in_order(timed_store, names, notifier.sent)


def test_a_restart_under_the_same_worker_id_takes_its_leases_over_at_once(twin: Twin, timed_store: SqlStore) -> None:
    """A worker restarted under its predecessor's worker_id releases that predecessor's leases immediately."""
    populate(timed_store, loans=3, changes=1)
    timed_store.outbox.claim("worker-7", limit=3, lease=timedelta(hours=1))
    notifier = twin.notifier()
    assert twin.run_once(twin.dispatcher(timed_store, notifier, worker_id="worker-7")).delivered == 3


def test_a_huge_retry_after_is_honoured_up_to_max_age(twin: Twin, timed_store: SqlStore) -> None:
    """A platform's Retry-After beyond any date (1e12 s) reschedules the event at most max_age away, no crash."""
    populate(timed_store, loans=1, changes=1)
    notifier = twin.notifier()
    notifier.fail_next(1, TransientDeliveryError("banned", request_id="x", retry_after=1e12))
    report = twin.run_once(twin.dispatcher(timed_store, notifier, retry=ONE_TRY))
    assert (report.retried, report.pending) == (1, 1)
    [entry] = timed_store.outbox_entries()
    assert entry.next_attempt_at - timed_store.now() == ONE_TRY.max_age


def test_a_claim_left_waiting_past_half_its_lease_is_let_go_not_sent(
    twin: Twin, timed_store: SqlStore, clock: FakeClock
) -> None:
    """A claimed event still waiting for a slot when its lease runs out is not sent after another worker moved on."""
    populate(timed_store, loans=2, changes=2)
    sent: list[LoanChangeEvent] = []
    other = twin.dispatcher(timed_store, twin.callback(sent.append), worker_id="other", lease=timedelta(seconds=60))

    def slow_first(event: LoanChangeEvent) -> None:
        sent.append(event)
        if len(sent) == 1:
            # This delivery outlasts the lease of the claim queued behind it: another worker takes over.
            clock.advance(61)
            twin.run_once(other)

    twin.run_once(
        twin.dispatcher(
            timed_store, twin.callback(slow_first), concurrency=1, worker_id="slow", lease=timedelta(seconds=60)
        )
    )
    # FI00001's first event was claimed with FI00000's, then delivered (with its second) by the other worker.
    per_loan = [e.sequence for e in timed_store.outbox_entries("FI00001")]
    assert per_loan == [1, 2]
    assert [e.request_id for e in sent if e.loan_apply_no == "FI00001"] == [
        e.request_id for e in timed_store.history("FI00001")
    ]
    assert timed_store.outbox_status().pending == 0


async def test_async_a_claim_left_waiting_past_half_its_lease_is_let_go_not_sent(
    timed_store: SqlStore, clock: FakeClock
) -> None:
    """The asyncio twin too never sends a queued claim whose lease ran out while it waited for a slot."""
    populate(timed_store, loans=2, changes=2)
    sent: list[LoanChangeEvent] = []

    async def record(event: LoanChangeEvent) -> None:
        sent.append(event)

    other = AsyncDispatcher(timed_store, AsyncCallbackNotifier(record), worker_id="other")

    async def slow_first(event: LoanChangeEvent) -> None:
        sent.append(event)
        if len(sent) == 1:
            clock.advance(61)
            await other.run_once()

    await AsyncDispatcher(timed_store, AsyncCallbackNotifier(slow_first), concurrency=1, worker_id="slow").run_once()
    assert [e.request_id for e in sent if e.loan_apply_no == "FI00001"] == [
        e.request_id for e in timed_store.history("FI00001")
    ]
    assert timed_store.outbox_status().pending == 0


def test_many_loans_are_in_flight_at_once(twin: Twin, store: SqlStore) -> None:
    """With concurrency=4, four different loans' deliveries run at the same time."""
    populate(store, loans=8, changes=1)
    barrier = threading.Barrier(4, timeout=30)

    def meet(event: LoanChangeEvent) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            raise PermanentDeliveryError("fewer than four deliveries in flight") from None

    async def meet_async(event: LoanChangeEvent) -> None:
        try:
            async with asyncio.timeout(30):
                await gathering.wait()
        except TimeoutError:
            raise PermanentDeliveryError("fewer than four deliveries in flight") from None

    gathering: asyncio.Barrier = asyncio.Barrier(4)
    notifier = CallbackNotifier(meet) if twin.kind == "sync" else AsyncCallbackNotifier(meet_async)
    report = twin.run_once(twin.dispatcher(store, notifier, concurrency=4, retry=ONE_TRY))
    assert (report.delivered, report.parked) == (8, 0)


def test_hooks_see_every_outcome_after_it_is_committed(twin: Twin, store: SqlStore) -> None:
    """on_delivered, on_retry and on_parked are called once per outcome, after the outbox recorded it."""
    populate(store, loans=3, changes=1)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: e.loan_apply_no == "FI00001", TransientDeliveryError)
    notifier.fail_when(lambda e: e.loan_apply_no == "FI00002", PermanentDeliveryError)
    seen: list[tuple[str, str, str]] = []

    def delivered(event: LoanChangeEvent, receipt: object) -> None:
        [entry] = store.outbox_entries(event.loan_apply_no)
        seen.append(("delivered", event.loan_apply_no, entry.state))

    dispatcher = twin.dispatcher(
        store,
        notifier,
        retry=ONE_TRY,
        on_delivered=delivered,
        on_retry=lambda e, err: seen.append(("retry", e.loan_apply_no, type(err).__name__)),
        on_parked=lambda e, err: seen.append(("parked", e.loan_apply_no, type(err).__name__)),
    )
    twin.run_once(dispatcher)
    assert sorted(seen) == [
        ("delivered", "FI00000", "delivered"),
        ("parked", "FI00002", "PermanentDeliveryError"),
        ("retry", "FI00001", "TransientDeliveryError"),
    ]


def test_a_notifier_bug_is_retried_not_lost(twin: Twin, timed_store: SqlStore) -> None:
    """An exception that is not a DeliveryError is logged and the event rescheduled, never dropped."""
    populate(timed_store, loans=1, changes=1)

    def broken(event: LoanChangeEvent) -> None:
        raise KeyError("oops")

    report = twin.run_once(twin.dispatcher(timed_store, twin.callback(broken), retry=ONE_TRY))
    assert (report.delivered, report.retried, report.pending) == (0, 1, 1)
    assert "KeyError" in (timed_store.outbox_entries()[0].last_error or "")


def test_run_forever_stops_when_asked_and_holds_no_lease(twin: Twin, store: SqlStore) -> None:
    """run_forever(stop) delivers what arrives while it runs, and on stop returns with every lease released."""
    names = populate(store, loans=5, changes=1)
    notifier = twin.notifier()
    runner = twin.run_forever(twin.dispatcher(store, notifier, poll_interval=0.05))
    more = populate(store, loans=3, changes=2, prefix="LATE")
    while len(notifier.sent) < 11:
        threading.Event().wait(0.05)
    report = runner.stop()
    assert report.delivered == 11
    assert store.outbox_status().leased == 0
    assert_delivered_in_order(store, names + more, notifier.sent)


@pytest.mark.parametrize("command", ["serve-slow", "serve-slow-async"])
def test_sigterm_stops_a_dispatcher_process_gracefully(tmp_path: Path, command: str) -> None:
    """SIGTERM: the process (sync or asyncio) stops claiming, finishes in-flight work, releases its leases, exits 0."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    store = SqlStore(url)
    store.create_schema()
    populate(store, loans=200, changes=1)
    process = subprocess.Popen(
        [sys.executable, str(HERE / "_worker.py"), command, url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "delivering"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    status = store.outbox_status()
    assert status.leased == 0
    assert 0 < status.delivered < 200
    assert status.delivered + status.pending == 200
    assert f"delivered={status.delivered}" in out
    store.close()


def test_both_faces_have_the_same_guarantees(twin: Twin, store: SqlStore) -> None:
    """Each face delivers in order per loan, retries, parks, and reports the same way."""
    names = populate(store, loans=20, changes=3)
    notifier = twin.notifier()
    notifier.fail_next(3, TransientDeliveryError)
    notifier.fail_when(lambda e: e.loan_apply_no == "FI00007" and e.after_status == "NEW", PermanentDeliveryError)
    policy = RetryPolicy(attempts=5, wait_initial=0.001, wait_jitter=0.001, wait_max=0.01)
    report = twin.run_once(twin.dispatcher(store, notifier, concurrency=6, retry=policy))
    assert (report.delivered, report.parked, report.pending) == (58, 1, 1)
    notifier.clear_failures()
    assert store.retry("FI00007") == 1
    assert twin.run_once(twin.dispatcher(store, notifier)).delivered == 2
    assert_delivered_in_order(store, names, notifier.sent)


async def test_async_run_forever_stops_on_its_event(store: SqlStore) -> None:
    """AsyncDispatcher.run_forever(stop) returns once stop is set, leases released."""
    populate(store, loans=4, changes=1)
    notifier = AsyncInMemoryNotifier()
    stop = asyncio.Event()
    task = asyncio.create_task(AsyncDispatcher(store, notifier, poll_interval=0.05).run_forever(stop))
    while len(notifier.sent) < 4:
        await asyncio.sleep(0.02)
    stop.set()
    report = await asyncio.wait_for(task, 30)
    assert (report.delivered, report.pending) == (4, 0)


def test_bad_settings_are_refused(twin: Twin, store: SqlStore) -> None:
    """A concurrency below 1, an empty or over-long worker_id, or a non-positive lease raise InvalidConfiguration."""
    notifier = twin.notifier()
    with pytest.raises(InvalidConfiguration, match="concurrency"):
        twin.dispatcher(store, notifier, concurrency=0)
    with pytest.raises(InvalidConfiguration, match="worker_id"):
        twin.dispatcher(store, notifier, worker_id="w" * 129)
    with pytest.raises(InvalidConfiguration, match="lease"):
        twin.dispatcher(store, notifier, lease=timedelta(0))


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"attempts": 0}, "retry.attempts"),
        ({"attempts": 2.5}, "retry.attempts"),
        ({"wait_initial": -1.0}, "retry.wait_initial"),
        ({"wait_jitter": float("inf")}, "retry.wait_jitter"),
        ({"wait_max": float("nan")}, "retry.wait_max"),
        ({"wait_initial": 5.0, "wait_max": 1.0}, "retry.wait_max"),
        ({"max_age": timedelta(0)}, "retry.max_age"),
        ({"in_process_timeout": -0.1}, "retry.in_process_timeout"),
    ],
)
def test_retry_policy_refuses_nonsense(settings: dict[str, Any], setting: str) -> None:
    """A RetryPolicy that could not work is refused on construction, naming the setting."""
    with pytest.raises(InvalidConfiguration) as info:
        RetryPolicy(**settings)
    assert info.value.setting == setting


# -- systemic failures pause delivery -------------------------------------------------------------

WRONG_SECRET = SystemicDeliveryError(
    "code 25: Invalid signature",
    cause="signature",
    remedy="the platform rejects our signature: check LOANSTATE_APP_SECRET",
)
QUICK_PROBES = RetryPolicy(attempts=1, wait_jitter=0.0, probe_initial=0.01, probe_max=0.05)


def _pause_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "loanstate.dispatch" and r.levelno >= logging.ERROR]


def test_a_systemic_failure_parks_nothing_charges_nothing_and_pauses(
    twin: Twin, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong secret failing every event of 200 loans: nothing parked or charged, paused with the cause, one error."""
    names = populate(store, loans=200, changes=2)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: True, WRONG_SECRET)
    pauses: list[Pause] = []
    attempts: list[Attempt] = []
    resumed: list[bool] = []
    dispatcher = twin.dispatcher(
        store,
        notifier,
        retry=QUICK_PROBES,
        on_paused=pauses.append,
        on_attempt=attempts.append,
        on_resumed=lambda: resumed.append(True),
    )
    with caplog.at_level(logging.INFO, logger="loanstate.dispatch"):
        report = twin.run_once(dispatcher)
        assert (report.delivered, report.retried, report.parked, report.pending) == (0, 0, 0, 400)
        assert report.paused is not None
        assert report.paused == dispatcher.paused
        assert (report.paused.cause, report.paused.remedy) == ("signature", WRONG_SECRET.remedy)
        assert pauses == [report.paused]
        assert attempts
        assert {a.outcome for a in attempts} == {"paused"}
        assert all("Invalid signature" in (a.error or "") for a in attempts)
        entries = store.outbox_entries()
        assert {(e.state, e.attempts, e.last_error) for e in entries} == {("pending", 0, None)}
        assert store.outbox_status().leased == 0
        # Still failing: the next run sends one probe and returns, no new error line.
        tried = len(notifier.attempts)
        assert twin.run_once(dispatcher).paused == report.paused
        assert len(notifier.attempts) == tried + 1
        [error] = _pause_errors(caplog)
        assert "signature" in error.getMessage()
        assert "LOANSTATE_APP_SECRET" in error.getMessage()
        # Fixed: the probe goes through, delivery resumes and drains the outbox.
        notifier.clear_failures()
        report = twin.run_once(dispatcher)
    assert (report.delivered, report.parked, report.pending, report.paused) == (400, 0, 0, None)
    assert dispatcher.paused is None
    assert resumed == [True]
    assert len(notifier.sent) == len({e.request_id for e in notifier.sent}) == 400
    assert_delivered_in_order(store, names, notifier.sent)
    assert len(_pause_errors(caplog)) == 1
    assert {a.outcome for a in attempts[-400:]} == {"delivered"}


def test_run_forever_probes_while_paused_and_resumes_when_a_probe_passes(
    twin: Twin, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """run_forever pauses on a systemic failure, probes one event at a time, resumes and delivers all, in order."""
    names = populate(store, loans=30, changes=2)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: True, WRONG_SECRET)
    paused = threading.Event()
    resumed = threading.Event()
    dispatcher = twin.dispatcher(
        store,
        notifier,
        retry=QUICK_PROBES,
        poll_interval=0.02,
        on_paused=lambda pause: paused.set(),
        on_resumed=resumed.set,
    )
    with caplog.at_level(logging.INFO, logger="loanstate.dispatch"):
        runner = twin.run_forever(dispatcher)
        assert paused.wait(30)
        probes = len(notifier.attempts)
        while len(notifier.attempts) < probes + 3:  # a few failed probes, one event each
            threading.Event().wait(0.01)
        assert {(e.attempts, e.state) for e in store.outbox_entries()} == {(0, "pending")}
        notifier.clear_failures()
        assert resumed.wait(30)
        while store.outbox_status().pending:
            threading.Event().wait(0.02)
        report = runner.stop()
    assert (report.delivered, report.parked, report.paused) == (60, 0, None)
    assert len(_pause_errors(caplog)) == 1
    assert len(notifier.sent) == len({e.request_id for e in notifier.sent}) == 60
    assert_delivered_in_order(store, names, notifier.sent)


def test_a_stop_ends_a_paused_run_forever_with_no_lease_held(twin: Twin, store: SqlStore) -> None:
    """A stop while paused (waiting between probes) returns at once, paused, holding no lease."""
    populate(store, loans=5, changes=1)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: True, WRONG_SECRET)
    paused = threading.Event()
    slow_probes = RetryPolicy(attempts=1, probe_initial=3600.0, probe_max=3600.0)
    dispatcher = twin.dispatcher(
        store, notifier, retry=slow_probes, poll_interval=0.02, on_paused=lambda pause: paused.set()
    )
    runner = twin.run_forever(dispatcher)
    assert paused.wait(30)
    report = runner.stop()
    assert report.paused is not None
    assert report.paused.cause == "signature"
    assert (report.parked, report.pending, store.outbox_status().leased) == (0, 5, 0)


def test_a_business_failure_parks_only_its_loan_and_pauses_nothing(twin: Twin, store: SqlStore) -> None:
    """A PermanentDeliveryError of one loan parks that loan only; delivery is not paused."""
    names = populate(store, loans=20, changes=2)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: e.loan_apply_no == "FI00003", PermanentDeliveryError)
    attempts: list[Attempt] = []
    report = twin.run_once(twin.dispatcher(store, notifier, retry=ONE_TRY, on_attempt=attempts.append))
    assert (report.delivered, report.parked, report.pending, report.paused) == (38, 1, 1, None)
    [parked] = store.outbox_status().parked_loans
    assert parked.loan_apply_no == "FI00003"
    assert sorted(a.outcome for a in attempts) == ["delivered"] * 38 + ["parked"]
    assert_delivered_in_order(store, [n for n in names if n != "FI00003"], notifier.sent)


def test_every_wait_between_tries_belongs_to_stamina(twin: Twin, store: SqlStore) -> None:
    """Under stamina.set_testing, an hour-long first backoff is skipped: no wait is hand-written."""
    populate(store, loans=1, changes=1)
    notifier = twin.notifier()
    notifier.fail_next(2, TransientDeliveryError)
    patient = RetryPolicy(attempts=3, wait_initial=3600.0, wait_max=3600.0, in_process_timeout=7200.0)
    with stamina.set_testing(True, attempts=3):
        report = twin.run_once(twin.dispatcher(store, notifier, retry=patient))
    assert (report.delivered, report.retried) == (1, 0)
    assert len(notifier.attempts) == 3


# -- settings ---------------------------------------------------------------------------------------


class _DeadlineNotifier(InMemoryNotifier):
    """An in-memory notifier that says each send takes at most ``deadline`` seconds."""

    deadline = 45.0


class _AsyncDeadlineNotifier(AsyncInMemoryNotifier):
    deadline = 45.0


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1.0}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
        ({"poll_interval": "0.5"}, "poll_interval"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 2.0}, "concurrency"),
        ({"concurrency": 10**6}, "concurrency"),
        ({"lease": 30}, "lease"),
        ({"lease": timedelta(seconds=-1)}, "lease"),
        ({"lease": timedelta(days=400)}, "lease"),
        ({"worker_id": 7}, "worker_id"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "a\nb"}, "worker_id"),
        ({"retry": {"attempts": 3}}, "retry"),
        ({"on_delivered": "print"}, "on_delivered"),
        ({"on_retry": 1}, "on_retry"),
        ({"on_parked": object()}, "on_parked"),
        ({"on_attempt": "log"}, "on_attempt"),
        ({"on_paused": 3}, "on_paused"),
        ({"on_resumed": "go"}, "on_resumed"),
    ],
)
def test_wrong_settings_are_refused_at_construction(
    twin: Twin, store: SqlStore, settings: dict[str, Any], setting: str
) -> None:
    """A wrong type or value of any setting raises InvalidConfiguration naming it, before anything runs."""
    with pytest.raises(InvalidConfiguration) as info:
        twin.dispatcher(store, twin.notifier(), **settings)
    assert info.value.setting == setting
    assert store.outbox_status().leased == 0


def test_the_wrong_kind_of_notifier_or_store_is_refused(twin: Twin, store: SqlStore) -> None:
    """A sync notifier given to AsyncDispatcher (or the reverse), or a store that is not a SqlStore, is refused."""
    other = AsyncInMemoryNotifier() if twin.kind == "sync" else InMemoryNotifier()
    with pytest.raises(InvalidConfiguration, match="notifier"):
        twin.dispatcher(store, other)
    with pytest.raises(InvalidConfiguration, match="store"):
        twin.dispatcher("sqlite:///loans.db", twin.notifier())  # type: ignore[arg-type]


def test_the_lease_follows_the_notifiers_deadline(twin: Twin, store: SqlStore) -> None:
    """With a notifier deadline, the default lease covers twice the longest delivery, and a shorter one is refused."""
    notifier = _DeadlineNotifier() if twin.kind == "sync" else _AsyncDeadlineNotifier()
    policy = RetryPolicy()
    longest = policy.longest_delivery(45.0)
    assert longest >= 45.0
    dispatcher = twin.dispatcher(store, notifier, retry=policy)
    assert dispatcher.lease.total_seconds() >= 2 * longest
    with pytest.raises(InvalidConfiguration, match="lease") as info:
        twin.dispatcher(store, notifier, lease=timedelta(seconds=longest))
    assert "deadline" in str(info.value)
    assert twin.dispatcher(store, notifier, lease=timedelta(seconds=2 * longest)).lease.total_seconds() == 2 * longest
    # One try per claim: the delivery is one deadline long.
    assert twin.dispatcher(store, notifier, retry=ONE_TRY).lease >= timedelta(seconds=90)
    notifier.deadline = -1.0
    with pytest.raises(InvalidConfiguration, match="deadline"):
        twin.dispatcher(store, notifier)


def test_a_str_subclass_worker_id_counts_as_its_value(twin: Twin, store: SqlStore) -> None:
    """A StrEnum member as worker_id is used as its plain string value."""

    class Worker(enum.StrEnum):
        ONE = "worker-one"

    dispatcher = twin.dispatcher(store, twin.notifier(), worker_id=Worker.ONE)
    assert type(dispatcher.worker_id) is str
    assert dispatcher.worker_id == "worker-one"


async def test_the_sync_dispatcher_works_when_called_inside_an_event_loop(store: SqlStore) -> None:
    """Dispatcher.run_once called from a coroutine runs its loop in a thread of its own, and delivers."""
    names = populate(store, loans=3, changes=2)
    notifier = InMemoryNotifier()
    report = Dispatcher(store, notifier).run_once()
    assert (report.delivered, report.pending) == (6, 0)
    assert_delivered_in_order(store, names, notifier.sent)


def test_a_stop_cuts_a_wait_between_tries_short_and_keeps_the_event(twin: Twin, store: SqlStore) -> None:
    """A stop during an hour-long wait between tries returns promptly; the event stays pending, rescheduled."""
    populate(store, loans=1, changes=1)
    notifier = twin.notifier()
    notifier.fail_when(lambda e: True, TransientDeliveryError)
    failed = threading.Event()
    patient = RetryPolicy(attempts=3, wait_initial=3600.0, wait_max=3600.0, in_process_timeout=7200.0)
    dispatcher = twin.dispatcher(store, notifier, retry=patient, poll_interval=0.02)
    runner = twin.run_forever(dispatcher)
    while not notifier.attempts:
        failed.wait(0.01)
    report = runner.stop()
    assert (report.delivered, report.retried, report.pending) == (0, 1, 1)
    [entry] = store.outbox_entries()
    assert (entry.state, entry.attempts) == ("pending", 1)
    assert store.outbox_status().leased == 0
