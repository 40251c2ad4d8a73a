"""Helpers shared by the store and dispatcher tests (not tests themselves)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from loanstate import (
    AsyncCallbackNotifier,
    AsyncDispatcher,
    AsyncInMemoryNotifier,
    CallbackNotifier,
    Dispatcher,
    DispatchReport,
    InMemoryNotifier,
    LoanChangeEvent,
    SqlStore,
)
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


class Twin:
    """One face of the dispatcher, driven the same way from a test: ``kind`` is ``"sync"`` or ``"async"``.

    ``notifier()`` and ``callback(fn)`` make a notifier of the matching kind
    (``fn`` is a plain function either way); ``run_once`` and ``run_forever``
    return the report, whatever the face.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"Twin({self.kind})"

    @property
    def cls(self) -> type[Dispatcher] | type[AsyncDispatcher]:
        return Dispatcher if self.kind == "sync" else AsyncDispatcher

    def dispatcher(self, store: SqlStore, notifier: Any, **settings: Any) -> Dispatcher | AsyncDispatcher:
        return self.cls(store, notifier, **settings)

    def notifier(self) -> InMemoryNotifier | AsyncInMemoryNotifier:
        return InMemoryNotifier() if self.kind == "sync" else AsyncInMemoryNotifier()

    def callback(self, fn: Callable[[LoanChangeEvent], Any]) -> CallbackNotifier | AsyncCallbackNotifier:
        if self.kind == "sync":
            return CallbackNotifier(fn)

        async def call(event: LoanChangeEvent) -> Any:
            return fn(event)

        return AsyncCallbackNotifier(call)

    def run_once(self, dispatcher: Dispatcher | AsyncDispatcher) -> DispatchReport:
        if isinstance(dispatcher, Dispatcher):
            return dispatcher.run_once()
        return _run_coroutine(dispatcher.run_once)

    def run_forever(self, dispatcher: Dispatcher | AsyncDispatcher) -> Background:
        """Start ``run_forever`` in a thread; the handle's ``stop()`` sets its stop and returns the report."""
        return Background(dispatcher)


def _run_coroutine(make: Callable[[], Coroutine[Any, Any, DispatchReport]]) -> DispatchReport:
    # Called from a notifier running inside another loop (a nested run_once), run in a thread of its own.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class Background:
    """A dispatcher's ``run_forever`` in a thread, stopped through its own kind of stop event."""

    def __init__(self, dispatcher: Dispatcher | AsyncDispatcher) -> None:
        self.report: DispatchReport | None = None
        self._sync_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_stop: asyncio.Event | None = None
        started = threading.Event()

        def run() -> None:
            if isinstance(dispatcher, Dispatcher):
                started.set()
                self.report = dispatcher.run_forever(self._sync_stop)
                return

            async def main() -> DispatchReport:
                self._loop, self._async_stop = asyncio.get_running_loop(), asyncio.Event()
                started.set()
                return await dispatcher.run_forever(self._async_stop)

            self.report = asyncio.run(main())

        self._thread = threading.Thread(target=run)
        self._thread.start()
        started.wait(30)

    def stop(self) -> DispatchReport:
        if self._loop is not None and self._async_stop is not None:
            self._loop.call_soon_threadsafe(self._async_stop.set)
        self._sync_stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()
        assert self.report is not None
        return self.report
