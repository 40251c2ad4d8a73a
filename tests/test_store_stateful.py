"""A stateful test of the durable path against a plain dict model, on every engine.

Hypothesis interleaves opening loans, legal and illegal changes, stale
compare-and-sets, dispatcher runs, notifier faults, dispatchers dropped
mid-batch (claimed, maybe sent, never acknowledged), the clock moving on, and
operator retries and skips. After every step the store must agree with the
model and keep the outbox's promises.
"""

from __future__ import annotations

import contextlib
import itertools
from datetime import timedelta

import pytest
import sqlalchemy as sa
from _durable import START, FakeClock, first_effects
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from loanstate import (
    ConcurrentChange,
    DeliveryError,
    Dispatcher,
    IllegalTransition,
    InMemoryNotifier,
    InvalidEvent,
    PermanentDeliveryError,
    RetryPolicy,
    SqlStore,
    TransientDeliveryError,
    UnknownLoan,
    default_machine,
)
from loanstate.store._schema import history, loans, outbox

MACHINE = default_machine()
STATUSES = sorted(MACHINE.statuses)
LOANS = st.integers(0, 2).map(lambda n: f"FI{n}")
POLICY = RetryPolicy(attempts=1, wait_initial=1.0, wait_jitter=1.0, wait_max=60.0, max_age=timedelta(minutes=10))
DONE = ("delivered", "skipped")


class DurablePath(RuleBasedStateMachine):
    """The store, its outbox and a dispatcher, beside a dict model of each loan's history."""

    def __init__(self, store: SqlStore, clock: FakeClock) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self.notifier = InMemoryNotifier()
        self.dispatcher = Dispatcher(store, self.notifier, concurrency=3, retry=POLICY, worker_id="stateful")
        self.status: dict[str, str] = {}
        self.changes: dict[str, list[tuple[str, str]]] = {}
        self.doomed = itertools.count()
        self.minute = itertools.count(1)

    def teardown(self) -> None:
        # The next example starts from an empty database (cheaper than a new one).
        with self.store.engine.begin() as conn:
            for table in (outbox, history, loans):
                conn.execute(table.delete())

    @rule(loan=LOANS)
    def open_loan(self, loan: str) -> None:
        if loan in self.status:
            with pytest.raises(InvalidEvent, match="already open"):
                self.store.open_loan(loan, at=START)
            return
        self.store.open_loan(loan, at=START)
        self.status[loan] = MACHINE.initial
        self.changes[loan] = []

    @rule(loan=LOANS, data=st.data())
    def transition(self, loan: str, data: st.DataObject) -> None:
        at = START + timedelta(minutes=next(self.minute))
        if loan not in self.status:
            with pytest.raises(UnknownLoan):
                self.store.transition(loan, after="OVERDUE", at=at)
            return
        allowed = sorted(MACHINE.allowed(self.status[loan]))
        if not allowed:
            return
        after = data.draw(st.sampled_from(allowed))
        event = self.store.transition(loan, after=after, at=at)
        assert (event.before_status, event.after_status) == (self.status[loan], after)
        self.changes[loan].append((self.status[loan], after))
        self.status[loan] = after

    @rule(loan=LOANS, after=st.sampled_from(STATUSES))
    def illegal_transition(self, loan: str, after: str) -> None:
        if loan in self.status and not MACHINE.is_legal(self.status[loan], after):
            with pytest.raises(IllegalTransition):
                self.store.transition(loan, after=after, at=START)

    @rule(loan=LOANS, stale=st.sampled_from(STATUSES), after=st.sampled_from(STATUSES))
    def stale_compare_and_set(self, loan: str, stale: str, after: str) -> None:
        if loan not in self.status or stale == self.status[loan]:
            return
        with pytest.raises(ConcurrentChange):
            self.store.transition(loan, after=after, at=START, expected_before=stale)

    @rule(transient=st.booleans(), count=st.integers(1, 3))
    def notifier_faults(self, transient: bool, count: int) -> None:
        self.notifier.fail_next(count, TransientDeliveryError if transient else PermanentDeliveryError)

    @rule()
    def dispatch(self) -> None:
        self.dispatcher.run_once()

    @rule(limit=st.integers(1, 3), send=st.booleans())
    def dispatcher_dropped_mid_batch(self, limit: int, send: bool) -> None:
        claims = self.store.outbox.claim(f"doomed-{next(self.doomed)}", limit=limit, lease=timedelta(seconds=30))
        for claim in claims[: 1 if send else 0]:
            with contextlib.suppress(DeliveryError):
                self.notifier.send(claim.event)  # it reached the platform; the ack never came

    @rule(seconds=st.sampled_from([1, 5, 31, 120, 700]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(loan=LOANS)
    def operator_retries(self, loan: str) -> None:
        if loan in self.status:
            self.store.retry(loan)

    @rule(pick=st.integers(0, 10))
    def operator_skips(self, pick: int) -> None:
        parked = self.store.outbox_status().parked_loans
        if parked:
            self.store.skip(parked[pick % len(parked)].request_id)

    @rule(by_error=st.booleans())
    def operator_retries_every_parked_loan(self, by_error: bool) -> None:
        parked = len(self.store.outbox_status().parked_loans)
        # Every parked error here names its DeliveryError class, so the search selects them all.
        retried = self.store.retry(error_contains="DeliveryError") if by_error else self.store.retry(all_parked=True)
        assert retried == parked
        assert self.store.outbox_status().parked == 0

    @rule()
    def operator_skips_every_parked_event(self) -> None:
        parked = [p.request_id for p in self.store.outbox_status().parked_loans]
        if parked:
            assert self.store.skip(*parked) == len(parked)

    @invariant()
    def store_agrees_with_model(self) -> None:
        for loan, status in self.status.items():
            assert self.store.status(loan) == status
            assert [(e.before_status, e.after_status) for e in self.store.history(loan)] == self.changes[loan]

    @invariant()
    def one_outbox_row_per_committed_change(self) -> None:
        with self.store.engine.connect() as conn:
            in_outbox = conn.execute(sa.select(outbox.c.request_id)).scalars().all()
            in_history = conn.execute(sa.select(history.c.request_id)).scalars().all()
        assert len(in_outbox) == len(set(in_outbox))
        assert sorted(in_outbox) == sorted(in_history)
        assert len(in_history) == sum(len(c) for c in self.changes.values())

    @invariant()
    def delivery_follows_history(self) -> None:
        effects = first_effects(self.notifier.sent)
        for loan in self.status:
            made = self.store.history(loan)
            entries = self.store.outbox_entries(loan)
            assert [e.sequence for e in entries] == list(range(1, len(made) + 1))
            states = [e.state for e in entries]
            settled = len(list(itertools.takewhile(lambda s: s in DONE, states)))
            # Done events form a prefix; after it, at most the head may be parked.
            assert all(s not in DONE for s in states[settled:]), states
            assert "parked" not in states[settled + 1 :], states
            # What reached the platform (first arrivals) follows the history's order, and
            # the only events it passed over are ones an operator skipped.
            arrived = effects.get(loan, [])
            position = {e.request_id: n for n, e in enumerate(made)}
            places = [position[r] for r in arrived]
            assert places == sorted(places), places
            passed_over = set(range(places[-1] if places else 0)) - set(places)
            assert all(entries[n].state == "skipped" for n in passed_over), states
            delivered = {e.request_id for e in entries if e.state == "delivered"}
            assert delivered <= set(arrived)


@pytest.mark.slow
def test_durable_path_matches_its_model(db_url: sa.URL) -> None:
    """Any interleaving of changes, deliveries, faults, crashes and operator actions keeps the outbox's promises."""
    store = SqlStore(db_url, clock=(clock := FakeClock()))
    store.create_schema()
    try:
        run_state_machine_as_test(
            # A factory works as well as the class (Hypothesis only calls it); the stub says type.
            lambda: DurablePath(store, clock),  # type: ignore[arg-type]
            # 25 x 40 steps of real database work with crashes, per engine, in every CI run (100 would take minutes).
            settings=settings(max_examples=25, stateful_step_count=40, deadline=None),
        )
    finally:
        store.close()
