"""loanstate.testing: the strategies keep their promises, and the stateful base catches a planted bug."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from example_servicing.eager_loan_book import EagerLoanBook
from example_servicing.loan_book import LoanBook
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from strategies import (
    broken_definitions,
    change_events,
    definitions,
    histories,
    illegal_pairs,
    legal_pairs,
    lifecycles,
    machines,
    statuses,
)

from loanstate import (
    IllegalTransition,
    InvalidDefinition,
    LoanChangeEvent,
    LoanMachine,
    TransientDeliveryError,
    default_machine,
)
from loanstate.audit import HistoryAudit
from loanstate.dispatch import Dispatcher, RetryPolicy
from loanstate.notifiers import InMemoryNotifier, TopNotifier
from loanstate.store import SqlStore
from loanstate.testing import (
    ANOMALY_KINDS,
    AnomalyKind,
    DeliveryFaults,
    FakeTopGateway,
    History,
    LoanLifecycleStateMachine,
    ServicingAdapter,
)

# -- strategies ---------------------------------------------------------------


@given(machines(), st.data())
def test_pairs_partition_the_known_statuses(machine: LoanMachine, data: st.DataObject) -> None:
    """statuses() are declared, legal_pairs() legal, illegal_pairs() known but not legal."""
    assert data.draw(statuses(machine)) in machine.statuses
    if any(machine.allowed(s) for s in machine.statuses):
        before, after = data.draw(legal_pairs(machine))
        assert machine.is_legal(before, after)
    before, after = data.draw(illegal_pairs(machine))
    assert {before, after} <= machine.statuses
    assert not machine.is_legal(before, after)


@given(illegal_pairs())
def test_illegal_pairs_are_refused_by_the_machine(pair: tuple[str, str]) -> None:
    """Every illegal pair makes LoanMachine.change raise IllegalTransition."""
    with pytest.raises(IllegalTransition):
        default_machine().change(
            loan_apply_no="L1", before=pair[0], after=pair[1], at=datetime.now().astimezone(), sequence=1
        )


def test_illegal_pairs_include_same_status_pairs() -> None:
    """A same-status pair is among the illegal pairs (a change must change)."""
    assert find(illegal_pairs(), lambda pair: pair[0] == pair[1]) is not None


def _assert_legal_path(machine: LoanMachine, events: Sequence[LoanChangeEvent]) -> None:
    status = machine.initial
    for previous, event in zip([None, *events], events, strict=False):
        assert event.before_status == status
        assert machine.is_legal(status, event.after_status)
        assert event.change_time.utcoffset() is not None
        if previous is not None:
            assert event.change_time > previous.change_time
            assert event.loan_apply_no == previous.loan_apply_no
        status = event.after_status


@given(machines(), st.data())
def test_lifecycles_are_legal_paths_in_increasing_time(machine: LoanMachine, data: st.DataObject) -> None:
    """lifecycles() start at the initial status, follow legal pairs, and move forward in time."""
    _assert_legal_path(machine, data.draw(lifecycles(machine)))


@given(lifecycles(min_size=4, max_size=6))
def test_lifecycles_reach_min_size_when_the_lifecycle_allows(events: list[LoanChangeEvent]) -> None:
    """With the default lifecycle (which never has to stop), a path has at least min_size changes."""
    assert 4 <= len(events) <= 6


@given(machines(), st.data())
def test_change_events_are_valid_and_round_trip(machine: LoanMachine, data: st.DataObject) -> None:
    """change_events() are legal for their machine and survive to_dict/from_dict and to_top_param."""
    if not any(machine.allowed(s) for s in machine.statuses):
        return  # a lifecycle with no change at all has no events to draw
    event = data.draw(change_events(machine))
    assert machine.is_legal(event.before_status, event.after_status)
    assert LoanChangeEvent.from_dict(event.to_dict(), machine=machine) == event
    assert json.loads(event.to_top_param())["loan_apply_no"] == event.loan_apply_no


@given(histories(loans=(2, 6)))
def test_clean_histories_are_interleaved_legal_chains(history: History) -> None:
    """Without anomalies every loan's records form a legal chain and every request_id is unique."""
    events = history.events()
    assert len(events) == len(history.records)
    assert len({e.request_id for e in events}) == len(events)
    machine = default_machine()
    for loan in history.loans():
        _assert_legal_path(machine, [e for e in events if e.loan_apply_no == loan])


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(histories(anomalies=True))
def test_planted_anomalies_are_exactly_what_the_audit_finds(history: History) -> None:
    """The audit engine reports each planted record, with its kind, and nothing else."""
    found = sorted((f.line - 1, f.kind) for f in HistoryAudit.of_records(list(history.records)).findings())
    assert found == sorted((a.index, a.kind) for a in history.anomalies)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(histories(anomalies=True))
def test_history_files_audit_the_same(history: History) -> None:
    """History.to_jsonl() and to_csv() write files the audit reads with the same findings, by line."""
    planted = sorted((a.index, a.kind) for a in history.anomalies)
    with tempfile.TemporaryDirectory() as directory:
        for suffix, text, header_lines in (("jsonl", history.to_jsonl(), 0), ("csv", history.to_csv(), 1)):
            path = Path(directory) / f"history.{suffix}"
            path.write_text(text, encoding="utf-8", newline="")
            found = sorted((f.line - 1 - header_lines, f.kind) for f in HistoryAudit.of_file(path).findings())
            assert found == planted, suffix


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(machines(), st.data())
def test_planted_anomalies_hold_for_any_lifecycle(machine: LoanMachine, data: st.DataObject) -> None:
    """Anomalies planted for a random lifecycle are exactly what the audit finds with that lifecycle."""
    history = data.draw(histories(machine, anomalies=True))
    findings = HistoryAudit.of_records(list(history.records), machine=machine).findings()
    assert sorted((f.line - 1, f.kind) for f in findings) == sorted((a.index, a.kind) for a in history.anomalies)


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
# 10 per kind: parametrized over every anomaly kind, so the generator is tried 10 x kinds times in all.
@settings(max_examples=10)
@given(data=st.data())
def test_every_anomaly_kind_is_planted(kind: AnomalyKind, data: st.DataObject) -> None:
    """With the default lifecycle, histories(kinds=(k,)) always plants kind k, and no other kind."""
    history = data.draw(histories(anomalies=True, kinds=(kind,)))
    assert {a.kind for a in history.anomalies} == {kind}
    for anomaly in history.anomalies:
        loan_records = [r for r in history.records if r.get("loan_apply_no") == anomaly.loan_apply_no]
        assert loan_records[-1] is history.records[anomaly.index] or kind == "malformed"


@given(definitions())
def test_definitions_build_machines(data: dict[str, object]) -> None:
    """definitions() are accepted by LoanMachine.from_dict and pass the static checks."""
    machine = LoanMachine.from_dict(data)
    assert machine.check() == []
    assert LoanMachine.problems_in_dict(data) == []


@given(broken_definitions())
def test_broken_definitions_report_exactly_their_codes(broken: object) -> None:
    """The static checks report exactly the codes broken_definitions() predicts."""
    from loanstate.testing import BrokenDefinition

    assert isinstance(broken, BrokenDefinition)
    codes = sorted(p.code for p in LoanMachine.problems_in_dict(broken.data))
    assert tuple(codes) == broken.codes, broken.mistakes
    with pytest.raises(InvalidDefinition):
        LoanMachine.from_dict(broken.data)


@given(definitions(valid=False))
def test_definitions_valid_false_are_refused(data: dict[str, object]) -> None:
    """definitions(valid=False) never builds a machine."""
    with pytest.raises(InvalidDefinition):
        LoanMachine.from_dict(data)


# -- the stateful base and the worked example ------------------------------------


class LoanBookAdapter:
    """Connects the kit to the example loan book: SQLite in memory, an InMemoryNotifier."""

    def __init__(self, book_class: type[LoanBook], machine: LoanMachine | None = None) -> None:
        self.notifier = InMemoryNotifier()
        self.book = book_class(sqlite3.connect(":memory:"), self.notifier, machine)

    def open_loan(self, loan_apply_no: str, *, at: datetime) -> None:
        self.book.open(loan_apply_no, at=at)

    def change(self, loan_apply_no: str, *, after: str, at: datetime) -> object:
        return self.book.change(loan_apply_no, after=after, at=at)

    def status(self, loan_apply_no: str) -> str:
        return self.book.status(loan_apply_no)

    def notified(self) -> Sequence[LoanChangeEvent]:
        return self.notifier.sent

    def close(self) -> None:
        self.book.db.close()


class LoanBookLifecycle(LoanLifecycleStateMachine):
    """The fixed loan book under the kit."""

    def make_adapter(self) -> ServicingAdapter:
        return LoanBookAdapter(LoanBook)


class EagerLoanBookLifecycle(LoanLifecycleStateMachine):
    """The loan book with the planted bug under the kit."""

    def make_adapter(self) -> ServicingAdapter:
        return LoanBookAdapter(EagerLoanBook)


def test_adapter_satisfies_the_protocol() -> None:
    """The example adapter is a ServicingAdapter (runtime-checkable protocol)."""
    adapter = LoanBookAdapter(LoanBook)
    try:
        assert isinstance(adapter, ServicingAdapter)
    finally:
        adapter.close()


def test_the_fixed_loan_book_passes() -> None:
    """The correct loan book agrees with the model through random legal and illegal changes."""
    run_state_machine_as_test(LoanBookLifecycle, settings=settings(stateful_step_count=25))


def _steps(notes: Sequence[str]) -> list[str]:
    """The rule calls of a shrunk counterexample (not the invariant checks or teardown)."""
    invariants = {"statuses_agree", "notified_exactly_the_legal_changes_in_order", "teardown"}
    calls = re.findall(r"state\.(\w+)\(", "\n".join(notes))
    return [c for c in calls if c not in invariants]


def test_the_planted_bug_is_found_and_shrunk() -> None:
    """Notifying before the commit is caught, and the counterexample shrinks to at most three steps."""
    quick = settings(
        database=None,
        derandomize=True,
        max_examples=200,
        phases=[Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
    )
    with pytest.raises(AssertionError, match=r"notified \[.+\], but the legal changes made were") as info:
        run_state_machine_as_test(EagerLoanBookLifecycle, settings=quick)
    steps = _steps(getattr(info.value, "__notes__", []))
    assert steps[0] == "open_loan"
    assert 2 <= len(steps) <= 3, steps


def test_the_base_asks_for_an_adapter() -> None:
    """Forgetting make_adapter() says what to override."""

    class Forgetful(LoanLifecycleStateMachine):
        pass

    with pytest.raises(NotImplementedError, match="make_adapter"):
        Forgetful()


class OwnLifecycle(LoanLifecycleStateMachine):
    """The kit drives a team's own lifecycle: statuses are drawn from it."""

    loan_machine = LoanMachine.from_dict(
        {
            "lifecycle": {"initial": "ACTIVE", "terminal": ["CLOSED"]},
            "statuses": ["ACTIVE", "LATE", "CLOSED"],
            "transitions": [
                {"before": "ACTIVE", "after": "LATE"},
                {"before": "LATE", "after": "ACTIVE"},
                {"before": ["ACTIVE", "LATE"], "after": "CLOSED"},
            ],
        }
    )

    #: Every status a loan reached, over all runs (so the test can tell its lifecycle was driven).
    reached: ClassVar[set[str]] = set()

    def make_adapter(self) -> ServicingAdapter:
        return LoanBookAdapter(LoanBook, self.loan_machine)

    def teardown(self) -> None:
        type(self).reached.update(self.model.values())
        super().teardown()


def test_a_custom_lifecycle_is_driven() -> None:
    """With loan_machine set, the fixed loan book passes against that lifecycle, whose own statuses are reached."""
    OwnLifecycle.reached.clear()
    # 20: this shows the kit drives a custom lifecycle to its own statuses; the guarantees are tested elsewhere.
    run_state_machine_as_test(OwnLifecycle, settings=settings(max_examples=20, stateful_step_count=20))
    assert OwnLifecycle.reached & {"LATE", "CLOSED"}  # statuses the shipped lifecycle does not have


# -- our own durable path under the kit ---------------------------------------------


class DurableAdapter:
    """SqlStore (SQLite file) + Dispatcher + InMemoryNotifier: what is notified is what the dispatcher delivered.

    It lets the kit fail deliveries (DeliveryFaults): a failed event waits in the
    outbox for its backoff on the store's clock, which only ``settle`` moves on
    (so deliveries visibly lag, and no test sleeps); ``settle`` then drains it.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="loanstate-kit-")
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.store = SqlStore(f"sqlite:///{self.directory}/loans.sqlite3", clock=lambda: self.now)
        self.store.create_schema()
        self.notifier = InMemoryNotifier()
        retry = RetryPolicy(attempts=1, wait_initial=1.0, wait_jitter=0.0)
        self.dispatcher = Dispatcher(self.store, self.notifier, concurrency=2, retry=retry)

    def open_loan(self, loan_apply_no: str, *, at: datetime) -> None:
        self.store.open_loan(loan_apply_no, at=at)

    def change(self, loan_apply_no: str, *, after: str, at: datetime) -> object:
        return self.store.transition(loan_apply_no, after=after, at=at)

    def status(self, loan_apply_no: str) -> str:
        return self.store.status(loan_apply_no)

    def notified(self) -> Sequence[LoanChangeEvent]:
        self.dispatcher.run_once()
        return self.notifier.sent

    def fail_deliveries(self, count: int) -> None:
        self.notifier.fail_next(count)

    def settle(self) -> None:
        self.notifier.clear_failures()  # the outage is over
        for _ in range(10):
            self.now += timedelta(hours=1)  # past any backoff
            if self.dispatcher.run_once().pending == 0:
                return
        raise AssertionError("the outbox did not drain in 10 dispatcher runs")

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class DurableLifecycle(LoanLifecycleStateMachine):
    """loanstate's own store and dispatcher under the kit."""

    def make_adapter(self) -> ServicingAdapter:
        return DurableAdapter()


def test_the_durable_path_passes_the_kit() -> None:
    """SqlStore + Dispatcher, deliveries failing at random: nothing lost, nothing extra, in order per loan."""
    adapter = DurableAdapter()
    try:
        assert isinstance(adapter, DeliveryFaults)
    finally:
        adapter.close()
    # 10: each example runs a real SqlStore and Dispatcher for 20 steps; test_store_stateful.py explores them at length.
    run_state_machine_as_test(DurableLifecycle, settings=settings(max_examples=10, stateful_step_count=20))


class FlakyPlatformAdapter(LoanBookAdapter):
    """The fixed loan book, with deliveries that can fail: it has no outbox to fall back on."""

    def fail_deliveries(self, count: int) -> None:
        self.notifier.fail_next(count)

    def settle(self) -> None:
        """The outage is over; nothing is pending in a loan book that sends at once."""
        self.notifier.clear_failures()


class FlakyPlatformLifecycle(LoanLifecycleStateMachine):
    """The fixed loan book under the kit, deliveries failing at random."""

    def make_adapter(self) -> ServicingAdapter:
        return FlakyPlatformAdapter(LoanBook)


class ShrugLoanBook(LoanBook):
    """Commits, then notifies, and shrugs off a failed delivery (logs it and moves on): the change is never told."""

    def change(self, loan_apply_no: str, *, after: str, at: datetime) -> LoanChangeEvent:
        with self.db:
            event = self.machine.change(
                loan_apply_no=loan_apply_no,
                before=self.status(loan_apply_no),
                after=after,
                at=at,
                sequence=self.sequence(loan_apply_no),
            )
            self._record(event)
        with contextlib.suppress(TransientDeliveryError):  # "the platform will catch up" (nothing retries)
            self.notifier.send(event)
        return event


class ShrugLifecycle(LoanLifecycleStateMachine):
    """The shrugging loan book under the kit, deliveries failing at random."""

    def make_adapter(self) -> ServicingAdapter:
        return FlakyPlatformAdapter(ShrugLoanBook)


def test_a_swallowed_delivery_failure_is_found() -> None:
    """A notification that never arrives is found (by settle(), or by a later one arriving first), in a few steps."""
    quick = settings(
        database=None,
        derandomize=True,
        max_examples=300,
        phases=[Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
    )
    with pytest.raises(AssertionError, match=r"loan '.*': notified .*(but the legal changes|not a beginning)") as info:
        run_state_machine_as_test(ShrugLifecycle, settings=quick)
    steps = _steps(getattr(info.value, "__notes__", []))
    assert {"deliveries_fail", "open_loan", "change"} <= set(steps)
    assert len(steps) <= 5, steps


def test_a_lost_notification_is_found() -> None:
    """Committing then notifying, without an outbox, loses the notification when the platform fails."""
    quick = settings(database=None, derandomize=True, phases=[Phase.generate, Phase.shrink], report_multiple_bugs=False)
    with pytest.raises(AssertionError, match=r"the legal change .* was refused: TransientDeliveryError") as info:
        run_state_machine_as_test(FlakyPlatformLifecycle, settings=quick)
    assert sorted(_steps(getattr(info.value, "__notes__", []))) == ["change", "deliveries_fail", "open_loan"]


# -- the pytest plugin's fixtures ---------------------------------------------------


def test_a_hypothesis_profile_is_loaded() -> None:
    """The plugin loaded one of its profiles for this suite (no deadline on a shared machine)."""
    profile = settings.default
    assert profile is not None
    assert profile.deadline is None
    assert profile.max_examples in (30, 100)


def test_loan_machine_fixture(loan_machine: LoanMachine) -> None:
    """loan_machine is the shipped lifecycle unless overridden."""
    assert loan_machine is default_machine()


def test_in_memory_notifier_fixture(in_memory_notifier: InMemoryNotifier, loan_machine: LoanMachine) -> None:
    """in_memory_notifier records what it is sent."""
    event = loan_machine.change(loan_apply_no="L1", before="NEW", after="OVERDUE", at=datetime.now(UTC), sequence=1)
    in_memory_notifier.send(event)
    assert in_memory_notifier.sent == [event]


def test_fake_top_gateway_fixture(fake_top_gateway: FakeTopGateway, loan_machine: LoanMachine) -> None:
    """fake_top_gateway runs on loopback and takes a signed notification once."""
    event = loan_machine.change(loan_apply_no="L1", before="NEW", after="SETTLED", at=datetime.now(UTC), sequence=1)
    with TopNotifier(fake_top_gateway.app_key, "test-app-secret", url=fake_top_gateway.url) as notifier:
        notifier.send(event)
    (delivered,) = fake_top_gateway.delivered()  # the platform keeps whole seconds only
    assert (delivered.request_id, delivered.after_status) == (event.request_id, "SETTLED")
    assert fake_top_gateway.effects[event.request_id] == 1


def test_sqlite_store_fixture(sqlite_store: SqlStore) -> None:
    """sqlite_store has its schema and records a change."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    sqlite_store.open_loan("L1", at=at)
    event = sqlite_store.transition("L1", after="OVERDUE", at=at + timedelta(days=1))
    assert sqlite_store.status("L1") == "OVERDUE"
    assert sqlite_store.history("L1") == [event]


@pytest.mark.postgres
def test_postgres_store_fixture(postgres_store: SqlStore) -> None:
    """postgres_store is a SqlStore on a fresh PostgreSQL database."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    postgres_store.open_loan("L1", at=at)
    postgres_store.transition("L1", after="SETTLED", at=at + timedelta(days=1))
    assert postgres_store.dialect == "postgresql"
    assert postgres_store.status("L1") == "SETTLED"


def test_the_plugin_loads_without_hypothesis() -> None:
    """The pytest11 plugin imports on an install without the test extra (fixtures yes, profiles no)."""
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import loanstate.testing.plugin as plugin\n"
        "assert not plugin._HAS_HYPOTHESIS and callable(plugin.sqlite_store)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr


def test_star_import_works_without_hypothesis() -> None:
    """``from loanstate.testing import *`` works on a plain install: __all__ lists only what is there."""
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "from loanstate.testing import *\n"
        "import loanstate.testing as kit\n"
        "assert sorted(kit.__all__) == ['FakeTopGateway', 'Fault', 'FaultPlan', 'GatewayRequest'], kit.__all__\n"
        "assert FakeTopGateway is kit.FakeTopGateway\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
