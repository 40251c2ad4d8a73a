"""The demo job: the whole durable path on embedded defaults, end to end, and checked.

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
    from loanstate.store import SqlStore

__all__ = ["DemoProgress", "DemoSummary", "platform_machine", "run_demo"]

#: The change the demo's platform refuses: a payoff reversed onto a past-due loan.
REFUSED_BY_PLATFORM: Final = ("SETTLED", "OVERDUE")
_START: Final = datetime(2024, 1, 1, 9, 0, tzinfo=TOP_TIMEZONE)
_BATCH: Final = 500
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
        """A running counter (``retries``, ``parked``) has a new value."""


@attrs.frozen
class DemoSummary:
    """What the demo did and whether every guarantee held (``ok``)."""

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
    def ok(self) -> bool:
        """Every guarantee held and nothing deliverable was left behind."""
        return self.exactly_once and self.order_held and self.matches_store and self.undelivered == 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (with ``throughput`` and ``ok``)."""
        out: dict[str, object] = attrs.asdict(self)
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


def _plan(
    rng: random.Random, loans: int, machine: LoanMachine
) -> tuple[list[tuple[str, datetime]], list[list[tuple[str, datetime]]]]:
    """Each loan's opening and its changes: (loan number, opened at), [(after, at), ...]."""
    opened: list[tuple[str, datetime]] = []
    changes: list[list[tuple[str, datetime]]] = []
    for n in range(loans):
        loan = f"FI{rng.randrange(10**9):09d}{n:05d}"
        at = _START + timedelta(days=rng.randrange(365), seconds=rng.randrange(86_400))
        opened.append((loan, at))
        status = machine.initial
        steps: list[tuple[str, datetime]] = []
        while len(steps) < 8:
            options = _NEXT.get(status, ((None, 1.0, (0, 0)),))
            choice = rng.choices(options, weights=[w for _, w, _ in options])[0]
            after, _, (low, high) = choice
            if after is None or not machine.is_legal(status, after):
                break
            at = at + timedelta(days=rng.randint(low, high), seconds=rng.randrange(1, 86_400))
            steps.append((after, at))
            status = after
        changes.append(steps)
    return opened, changes


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
    from loanstate.dispatch import Dispatcher, RetryPolicy
    from loanstate.fake import FakeTopGateway, Fault, FaultPlan
    from loanstate.notifiers.top import TopNotifier
    from loanstate.store import SqlStore

    started = time.monotonic()
    # The gateway's faults make stamina log every in-process retry; the summary counts them instead.
    logging.getLogger("stamina").setLevel(logging.ERROR)
    machine = default_machine()
    rng = random.Random(seed)
    opened, planned = _plan(rng, loans, machine)
    tmp = tempfile.TemporaryDirectory(prefix="loanstate-demo-") if db is None else None
    url = db or f"sqlite:///{Path(tmp.name if tmp else '.') / 'loans.db'}"
    transient = (Fault.HTTP_500, Fault.HTTP_503, Fault.DROP, Fault.TIMEOUT, Fault.ISP_ERROR, Fault.MALFORMED)
    plan = FaultPlan.random(
        {fault: fault_rate / len(transient) for fault in transient}, latency=0.0, hang=1.0, retry_after=1
    )
    store = SqlStore(url, machine=machine)
    try:
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
        if on_ready is not None:
            on_ready(store.engine.url.render_as_string(hide_password=True))
        illegal = _record(store, opened=opened, planned=planned, rng=rng, machine=machine, progress=progress)
        total = sum(len(steps) for steps in planned)
        counters = {"retries": 0, "parked": 0}

        def on_delivered(event: LoanChangeEvent, receipt: object) -> None:
            if progress is not None:
                progress.advance("delivering")

        def on_retry(event: LoanChangeEvent, error: Exception) -> None:
            counters["retries"] += 1
            if progress is not None:
                progress.note("rescheduled", counters["retries"])

        def on_parked(event: LoanChangeEvent, error: Exception) -> None:
            counters["parked"] += 1
            if progress is not None:
                progress.note("parked", counters["parked"])

        with (
            FakeTopGateway(machine=platform_machine(machine), faults=plan, seed=seed) as gateway,
            TopNotifier(gateway.app_key, "test-app-secret", url=gateway.url, timeout=0.5) as notifier,
        ):
            dispatcher = Dispatcher(
                store,
                notifier,
                concurrency=concurrency,
                retry=RetryPolicy(
                    attempts=3, wait_initial=0.02, wait_max=0.3, wait_jitter=0.05, in_process_timeout=3.0
                ),
                on_delivered=on_delivered,
                on_retry=on_retry,
                on_parked=on_parked,
            )
            if progress is not None:
                progress.start("delivering", total)
            deadline = time.monotonic() + time_limit
            delivered = 0
            while True:
                report = dispatcher.run_once()
                delivered += report.delivered
                status = store.outbox_status()
                waiting = sum(p.waiting for p in status.parked_loans)
                if status.pending - waiting <= 0 or time.monotonic() > deadline:
                    break
                if report.delivered == 0:
                    time.sleep(0.05)  # only rescheduled events are left: wait for them to fall due
            requests = gateway.requests
            effects = gateway.effects
            applied = gateway.delivered()
            violations = gateway.order_violations
        entries = store.outbox_entries()
        delivered_ids = [e.request_id for e in entries if e.state == "delivered"]
        by_loan_store: dict[str, list[str]] = {}
        for e in entries:
            if e.state == "delivered":
                by_loan_store.setdefault(e.loan_apply_no, []).append(e.request_id)
        by_loan_gateway: dict[str, list[str]] = {}
        for event in applied:
            by_loan_gateway.setdefault(event.loan_apply_no, []).append(event.request_id)
        return DemoSummary(
            seed=seed,
            database=url if tmp is None else "sqlite (temporary)",
            loans=loans,
            changes=total,
            illegal_rejected=illegal,
            delivered=len(delivered_ids),
            faults_injected=sum(1 for r in requests if r.fault is not None and r.fault is not Fault.LATENCY),
            replays_absorbed=sum(1 for r in requests if r.replay),
            rescheduled=counters["retries"],
            parked_loans=len(status.parked_loans),
            waiting_behind_parked=waiting,
            exactly_once=all(count == 1 for count in effects.values()) and set(effects) == set(delivered_ids),
            order_held=not violations,
            matches_store=by_loan_store == by_loan_gateway,
            undelivered=max(status.pending - waiting, 0),
            elapsed=time.monotonic() - started,
        )
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()


def _loans_held(store: SqlStore) -> int:
    """How many loans the store already holds."""
    import sqlalchemy as sa

    from loanstate.store._schema import loans

    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(loans)) or 0)


def _record(
    store: SqlStore,
    *,
    opened: list[tuple[str, datetime]],
    planned: list[list[tuple[str, datetime]]],
    rng: random.Random,
    machine: LoanMachine,
    progress: DemoProgress | None,
) -> int:
    """Open the loans and record their changes in batches; try a few illegal changes. Returns the refusals."""
    from loanstate.store import Change

    total = sum(len(steps) for steps in planned)
    if progress is not None:
        progress.start("recording", total)
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
