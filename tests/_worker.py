"""Dispatcher and writer processes the tests start, kill and restart (not a test module).

Usage: ``python tests/_worker.py COMMAND URL [ARGS...]``:

* ``serve-slow URL``: run_forever with a notifier taking 50 ms per event;
  prints ``delivering`` once the first event went out and the report at exit.
* ``serve-slow-async URL``: the same with the AsyncDispatcher.
* ``deliver URL GATEWAY_URL WORKER_ID LEASE_S CONCURRENCY FACE [gate]``: run_forever
  through a TopNotifier (FACE ``sync``: Dispatcher) or an AsyncTopNotifier (FACE
  ``async``: AsyncDispatcher) to a FakeTopGateway until the outbox is empty (or
  killed); prints ``delivering`` after the first delivery, the report at exit.
  With ``gate``, it first prints ``ready`` and waits for a line on stdin, so
  several workers can start delivering at the same moment.
* ``transition URL LOANS ROUNDS SEED``: hammer compare-and-set changes on
  shared loans; prints ``won lost`` counts.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from loanstate import (
    AsyncCallbackNotifier,
    AsyncDispatcher,
    AsyncTopNotifier,
    CallbackNotifier,
    ConcurrentChange,
    Dispatcher,
    DispatchReport,
    LoanChangeEvent,
    RetryPolicy,
    SqlStore,
)
from loanstate.notifiers import TopNotifier


def serve_slow(url: str) -> None:
    store = SqlStore(url)
    started = threading.Event()

    def slow(event: LoanChangeEvent) -> None:
        time.sleep(0.05)
        if not started.is_set():
            started.set()
            print("delivering", flush=True)

    report = Dispatcher(store, CallbackNotifier(slow), concurrency=4, poll_interval=0.05).run_forever()
    print(f"delivered={report.delivered}", flush=True)


def serve_slow_async(url: str) -> None:
    store = SqlStore(url)

    async def slow(event: LoanChangeEvent) -> None:
        await asyncio.sleep(0.05)
        if not started.is_set():
            started.set()
            print("delivering", flush=True)

    started = asyncio.Event()

    async def main() -> DispatchReport:
        return await AsyncDispatcher(
            store, AsyncCallbackNotifier(slow), concurrency=4, poll_interval=0.05
        ).run_forever()

    report = asyncio.run(main())
    print(f"delivered={report.delivered}", flush=True)


def deliver(
    url: str, gateway_url: str, worker_id: str, lease_s: str, concurrency: str, face: str, gate: str = ""
) -> None:
    store = SqlStore(url)
    # Short tries and a short deadline, so that a short lease passes the lease rule.
    fast = RetryPolicy(attempts=2, wait_initial=0.01, wait_jitter=0.01, wait_max=0.2, in_process_timeout=0.4)
    announced = threading.Event()

    def announce(event: LoanChangeEvent, receipt: object) -> None:
        if not announced.is_set():
            announced.set()
            print("delivering", flush=True)

    settings: dict[str, Any] = {
        "concurrency": int(concurrency),
        "on_delivered": announce,
        "retry": fast,
        "lease": timedelta(seconds=float(lease_s)),
        "worker_id": worker_id,
        "poll_interval": 0.05,
    }
    if gate == "gate":
        # Imports and setup are done: a slow start cannot leave this worker no work to share.
        print("ready", flush=True)
        sys.stdin.readline()
    report = (
        _deliver_async(store, gateway_url, settings) if face == "async" else _deliver_sync(store, gateway_url, settings)
    )
    print(f"delivered={report.delivered} retried={report.retried}", flush=True)


def _notifier_settings(cls: type) -> dict[str, Any]:
    # A notifier that declares a deadline gets a short one, which the lease rule then allows.
    return {"timeout": 1.0, **({"deadline": 1.0} if "deadline" in inspect.signature(cls).parameters else {})}


def _deliver_sync(store: SqlStore, gateway_url: str, settings: dict[str, Any]) -> DispatchReport:
    stop = threading.Event()

    def watch() -> None:
        # Stop once nothing is left to do (the test also checks from outside).
        while not stop.wait(0.2):
            if store.outbox_status().pending == 0:
                stop.set()

    with TopNotifier("test-app-key", "test-app-secret", url=gateway_url, **_notifier_settings(TopNotifier)) as notifier:
        dispatcher = Dispatcher(store, notifier, **settings)
        threading.Thread(target=watch, daemon=True).start()
        return dispatcher.run_forever(stop)


def _deliver_async(store: SqlStore, gateway_url: str, settings: dict[str, Any]) -> DispatchReport:
    async def main() -> DispatchReport:
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.2)
                if (await asyncio.to_thread(store.outbox_status)).pending == 0:
                    stop.set()

        extra = _notifier_settings(AsyncTopNotifier)
        async with AsyncTopNotifier("test-app-key", "test-app-secret", url=gateway_url, **extra) as notifier:
            watcher = asyncio.create_task(watch())
            report = await AsyncDispatcher(store, notifier, **settings).run_forever(stop)
            await watcher
            return report

    return asyncio.run(main())


def transition(url: str, loans: str, rounds: str, seed: str) -> None:
    store = SqlStore(url)
    rng = random.Random(int(seed))
    won = lost = 0
    for _ in range(int(rounds)):
        loan = f"RACE{rng.randrange(int(loans))}"
        before = store.status(loan)
        after = {"NEW": "OVERDUE", "OVERDUE": "NEW", "SETTLED": "NEW"}[before]
        try:
            store.transition(loan, after=after, at=datetime.now(UTC), expected_before=before)
            won += 1
        except ConcurrentChange:
            lost += 1
    print(won, lost, flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    commands: dict[str, Callable[..., None]] = {
        "serve-slow": serve_slow,
        "serve-slow-async": serve_slow_async,
        "deliver": deliver,
        "transition": transition,
    }
    commands[command](*args)
