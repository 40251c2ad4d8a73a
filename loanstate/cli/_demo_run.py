"""The demo job behind ``loanstate demo``: the whole durable path on embedded defaults, checked.

It runs in four steps, one function each: plan (the seeded loans, changes and
faults), record (into the store, with illegal attempts refused), deliver
(through the dispatcher to a loopback gateway) and verify (the guarantees,
against what the gateway saw).

:func:`run_demo` starts a :class:`~loanstate.fake.FakeTopGateway` on
loopback (with seeded transient faults, and a *platform* lifecycle that
refuses one change the shipped default allows, so some loans park the way they
would if the default lifecycle were a wrong assumption), opens a SQLite store in
a temporary directory (or the given URL), drives many loans through random
legal lifecycles with realistic timestamps (and tries some illegal changes,
which must be refused), runs the :class:`~loanstate.Dispatcher` until all
deliverable events are delivered, then checks the guarantees against what the
gateway saw: each request_id took effect exactly once, per-loan order held,
and what the platform applied is exactly what the store says it delivered.

The same ``seed`` gives the same loans, changes, refusals, deliveries and
parked loans; how many transient faults and retries it took depends on timing.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from loanstate._errors import IllegalTransition, InvalidConfiguration
from loanstate._events import TOP_TIMEZONE, LoanChangeEvent
from loanstate._machine import LoanMachine, default_machine

if TYPE_CHECKING:
    from loanstate.fake import FaultPlan, GatewayRequest
    from loanstate.store import SqlStore

__all__ = ["REFUSED_BY_PLATFORM", "DemoProgress", "DemoSummary", "platform_machine", "run_demo"]

#: The change the demo's platform refuses: a payoff reversed onto a past-due loan.
REFUSED_BY_PLATFORM: Final = ("SETTLED", "OVERDUE")
_START: Final = datetime(2024, 1, 1, 9, 0, tzinfo=TOP_TIMEZONE)
_BATCH: Final = 500
_TEST_SECRET: Final = "test-app-secret"  # the fake gateway's published test secret, not a credential
# Weighted next steps of a servicing history, and how long after the previous
# change each comes (days, as a range).
_NEXT: Final[dict[str, tuple[tuple[str | None, float, tuple[int, int]], ...]]] = {
    "NEW": (("OVERDUE", 0.45, (25, 95)), ("SETTLED", 0.4, (20, 360)), ("INVALID", 0.03, (0, 3)), (None, 0.12, (0, 0))),
    "OVERDUE": (("NEW", 0.6, (1, 25)), ("SETTLED", 0.35, (3, 90)), (None, 0.05, (0, 0))),
    "SETTLED": (("NEW", 0.06, (1, 10)), ("OVERDUE", 0.03, (1, 10)), (None, 0.91, (0, 0))),
    "INVALID": ((None, 1.0, (0, 0)),),
}


class DemoProgress(Protocol):
    """Where the demo reports progress: a phase starts with a total, then advances."""

    def start(self, phase: str, total: int) -> None:
        """A phase (``recording``, ``delivering``) begins; ``total`` units of work."""

    def advance(self, phase: str, amount: int = 1) -> None:
        """``amount`` more units of ``phase`` are done."""

    def note(self, key: str, value: int) -> None:
        """A running counter (``rescheduled``, ``parked``) has a new value."""


@attrs.frozen
class DemoSummary:
    """What the demo did and whether every guarantee held (``ok``).

    Not delivered, by design: the ``parked_loans`` (the platform refused their
    head event) and the ``waiting_behind_parked`` events queued after them in
    per-loan order. ``undelivered`` counts what is left beyond those: deliverable
    events still pending when the run ended (a broken guarantee when not 0).
    """

    seed: int
    database: str
    loans: int
    changes: int
    illegal_rejected: int
    delivered: int
    faults_injected: int
    replays_absorbed: int
    rescheduled: int
    parked_loans: int
    waiting_behind_parked: int
    exactly_once: bool
    order_held: bool
    matches_store: bool
    undelivered: int
    elapsed: float

    @property
    def throughput(self) -> float:
        """Events delivered per second of the whole run."""
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def not_delivered(self) -> int:
        """Events the gateway did not take: parked, waiting behind a parked one, or left pending."""
        return self.parked_loans + self.waiting_behind_parked + self.undelivered

    @property
    def ok(self) -> bool:
        """Every guarantee held and nothing deliverable was left behind."""
        return self.exactly_once and self.order_held and self.matches_store and self.undelivered == 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (with ``throughput``, ``not_delivered`` and ``ok``)."""
        out: dict[str, object] = attrs.asdict(self)
        out["not_delivered"] = self.not_delivered
        out["throughput"] = round(self.throughput, 1)
        out["elapsed"] = round(self.elapsed, 3)
        out["ok"] = self.ok
        return out


def platform_machine(machine: LoanMachine | None = None) -> LoanMachine:
    """The lifecycle the demo's fake platform enforces: ``machine`` without SETTLED -> OVERDUE."""
    m = machine or default_machine()
    before, after = REFUSED_BY_PLATFORM
    transitions = []
    for t in m.transitions:
        kept = tuple(b for b in t.before if not (b == before and t.after == after))
        if kept:
            transitions.append(attrs.evolve(t, before=kept))
    return LoanMachine.define(
        statuses=m.descriptions,
        initial=m.initial,
        terminal=m.terminal,
        transitions=transitions,
        name=f"{m.name}_platform",
    )


@attrs.frozen
class _Plan:
    """What the demo will do, fixed by the seed: the loans, their changes, the gateway's faults."""

    seed: int
    machine: LoanMachine
    opened: list[tuple[str, datetime]]
    changes: list[list[tuple[str, datetime]]]
    faults: FaultPlan
    rng: random.Random

    @property
    def total(self) -> int:
        """How many changes the plan records."""
        return sum(len(steps) for steps in self.changes)


@attrs.frozen
class _Delivery:
    """What delivering the outbox did, as the dispatcher and the gateway saw it."""

    rescheduled: int
    requests: list[GatewayRequest]
    effects: dict[str, int]
    applied: list[LoanChangeEvent]
    order_violations: list[str]


def run_demo(
    *,
    loans: int = 2000,
    seed: int = 0,
    db: str | None = None,
    concurrency: int = 32,
    fault_rate: float = 0.03,
    time_limit: float = 120.0,
    progress: DemoProgress | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Run the demo (see the module docstring) and return its summary.

    ``db`` is a SQLAlchemy URL (default: SQLite in a temporary directory,
    removed afterwards) of a database that holds no loans yet
    (:class:`~loanstate.InvalidConfiguration` otherwise).
    ``fault_rate`` is the share of requests the gateway fails transiently.
    ``on_ready(database)`` is called once the store is open.
    """
    from loanstate.store import SqlStore

    started = time.monotonic()
    # The gateway's faults make stamina log every in-process retry; the summary counts them instead.
    logging.getLogger("stamina").setLevel(logging.ERROR)
    plan = _plan(seed, loans, fault_rate)
    tmp = tempfile.TemporaryDirectory(prefix="loanstate-demo-") if db is None else None
    url = db or f"sqlite:///{Path(tmp.name if tmp else '.') / 'loans.db'}"
    store = SqlStore(url, machine=plan.machine)
    try:
        _prepare(store)
        if on_ready is not None:
            on_ready(store.engine.url.render_as_string(hide_password=True))
        illegal = _record(store, plan, progress)
        delivery = _deliver(store, plan, concurrency=concurrency, time_limit=time_limit, progress=progress)
        return _verify(
            store,
            plan,
            delivery,
            database=url if tmp is None else "sqlite (temporary)",
            illegal=illegal,
            elapsed=time.monotonic() - started,
        )
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()


def _plan(seed: int, loans: int, fault_rate: float) -> _Plan:
    """Each loan's opening and its changes, and the gateway's transient faults, all from ``seed``."""
    from loanstate.fake import Fault, FaultPlan

    machine = default_machine()
    rng = random.Random(seed)
    opened: list[tuple[str, datetime]] = []
    changes: list[list[tuple[str, datetime]]] = []
    for n in range(loans):
        loan = f"FI{rng.randrange(10**9):09d}{n:05d}"
        at = _START + timedelta(days=rng.randrange(365), seconds=rng.randrange(86_400))
        opened.append((loan, at))
        changes.append(_lifecycle(rng, machine, at))
    transient = (Fault.HTTP_500, Fault.HTTP_503, Fault.DROP, Fault.TIMEOUT, Fault.ISP_ERROR, Fault.MALFORMED)
    faults = FaultPlan.random(
        {fault: fault_rate / len(transient) for fault in transient}, latency=0.0, hang=1.0, retry_after=1
    )
    return _Plan(seed=seed, machine=machine, opened=opened, changes=changes, faults=faults, rng=rng)


def _lifecycle(rng: random.Random, machine: LoanMachine, at: datetime) -> list[tuple[str, datetime]]:
    """One loan's random legal changes after it opened at ``at``: [(after, at), ...], at most eight."""
    status = machine.initial
    steps: list[tuple[str, datetime]] = []
    while len(steps) < 8:
        options = _NEXT.get(status, ((None, 1.0, (0, 0)),))
        after, _, (low, high) = rng.choices(options, weights=[w for _, w, _ in options])[0]
        if after is None or not machine.is_legal(status, after):
            break
        at = at + timedelta(days=rng.randint(low, high), seconds=rng.randrange(1, 86_400))
        steps.append((after, at))
        status = after
    return steps


def _prepare(store: SqlStore) -> None:
    """Create the schema; refuse a database that already holds loans."""
    store.create_schema()
    # The guarantees are checked against everything in the outbox, so earlier
    # loans (another run's, or real ones) would read as broken guarantees.
    held = _loans_held(store)
    if held:
        raise InvalidConfiguration(
            "demo database",
            store.engine.url.render_as_string(hide_password=True),
            f"already holds {held} loans; the demo needs an empty database",
        )


def _deliver(
    store: SqlStore, plan: _Plan, *, concurrency: int, time_limit: float, progress: DemoProgress | None
) -> _Delivery:
    """Deliver the outbox through a loopback gateway until only parked loans' events are left (or time is up)."""
    from loanstate.dispatch import Dispatcher, RetryPolicy
    from loanstate.fake import FakeTopGateway
    from loanstate.notifiers.top import TopNotifier

    counters = {"rescheduled": 0, "parked": 0}

    def on_delivered(event: LoanChangeEvent, receipt: object) -> None:
        if progress is not None:
            progress.advance("delivering")

    def counting(key: str) -> Callable[[LoanChangeEvent, Exception], None]:
        def hook(event: LoanChangeEvent, error: Exception) -> None:
            counters[key] += 1
            if progress is not None:
                progress.note(key, counters[key])

        return hook

    with (
        FakeTopGateway(machine=platform_machine(plan.machine), faults=plan.faults, seed=plan.seed) as gateway,
        TopNotifier(gateway.app_key, _TEST_SECRET, url=gateway.url, timeout=0.5) as notifier,
    ):
        dispatcher = Dispatcher(
            store,
            notifier,
            concurrency=concurrency,
            retry=RetryPolicy(attempts=3, wait_initial=0.02, wait_max=0.3, wait_jitter=0.05, in_process_timeout=3.0),
            on_delivered=on_delivered,
            on_retry=counting("rescheduled"),
            on_parked=counting("parked"),
        )
        if progress is not None:
            progress.start("delivering", plan.total)
        deadline = time.monotonic() + time_limit
        while True:
            report = dispatcher.run_once()
            status = store.outbox_status()
            waiting = sum(p.waiting for p in status.parked_loans)
            if status.pending - waiting <= 0 or time.monotonic() > deadline:
                break
            if report.delivered == 0:
                time.sleep(0.05)  # only rescheduled events are left: wait for them to fall due
        return _Delivery(
            rescheduled=counters["rescheduled"],
            requests=list(gateway.requests),
            effects=dict(gateway.effects),
            applied=list(gateway.delivered()),
            order_violations=list(gateway.order_violations),
        )


def _verify(
    store: SqlStore, plan: _Plan, delivery: _Delivery, *, database: str, illegal: int, elapsed: float
) -> DemoSummary:
    """Check the guarantees against what the gateway saw, and sum the run up."""
    from loanstate.fake import Fault

    status = store.outbox_status()
    waiting = sum(p.waiting for p in status.parked_loans)
    by_loan_store: dict[str, list[str]] = {}
    for entry in store.outbox_entries():
        if entry.state == "delivered":
            by_loan_store.setdefault(entry.loan_apply_no, []).append(entry.request_id)
    by_loan_gateway: dict[str, list[str]] = {}
    for event in delivery.applied:
        by_loan_gateway.setdefault(event.loan_apply_no, []).append(event.request_id)
    delivered_ids = {request_id for ids in by_loan_store.values() for request_id in ids}
    effects = delivery.effects
    return DemoSummary(
        seed=plan.seed,
        database=database,
        loans=len(plan.opened),
        changes=plan.total,
        illegal_rejected=illegal,
        delivered=len(delivered_ids),
        faults_injected=sum(1 for r in delivery.requests if r.fault is not None and r.fault is not Fault.LATENCY),
        replays_absorbed=sum(1 for r in delivery.requests if r.replay),
        rescheduled=delivery.rescheduled,
        parked_loans=len(status.parked_loans),
        waiting_behind_parked=waiting,
        exactly_once=all(count == 1 for count in effects.values()) and set(effects) == delivered_ids,
        order_held=not delivery.order_violations,
        matches_store=by_loan_store == by_loan_gateway,
        undelivered=max(status.pending - waiting, 0),
        elapsed=elapsed,
    )


def _loans_held(store: SqlStore) -> int:
    """How many loans the store already holds."""
    import sqlalchemy as sa

    from loanstate.store._schema import loans

    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(loans)) or 0)


def _record(store: SqlStore, plan: _Plan, progress: DemoProgress | None) -> int:
    """Open the loans and record their changes in batches; try a few illegal changes. Returns the refusals."""
    from loanstate.store import Change

    opened, planned, machine, rng = plan.opened, plan.changes, plan.machine, plan.rng
    if progress is not None:
        progress.start("recording", plan.total)
    with store.engine.begin() as conn:
        for loan, at in opened:
            store.open_loan(loan, at=at, connection=conn)
    batch: list[Change] = []
    illegal = 0
    for (loan, _), steps in zip(opened, planned, strict=True):
        for after, at in steps:
            batch.append(Change(loan, after, at))
        if len(batch) >= _BATCH:
            store.transition_many(batch)
            if progress is not None:
                progress.advance("recording", len(batch))
            batch = []
    if batch:
        store.transition_many(batch)
        if progress is not None:
            progress.advance("recording", len(batch))
    # Servicing code makes mistakes; the store must refuse them and leave no trace.
    for (loan, _), steps in rng.sample(list(zip(opened, planned, strict=True)), k=max(1, len(opened) // 50)):
        current = steps[-1][0] if steps else machine.initial
        wrong = sorted(machine.statuses - machine.allowed(current) - {current})
        if not wrong:
            continue
        at = (steps[-1][1] if steps else _START) + timedelta(days=1)
        try:
            store.transition(loan, after=rng.choice(wrong), at=at)
        except IllegalTransition:
            illegal += 1
    return illegal
