"""Dispatcher and writer processes the tests start, kill and restart (not a test module).

Usage: ``python tests/_worker.py COMMAND URL [ARGS...]``:

* ``serve-slow URL``: run_forever with a notifier taking 50 ms per event;
  prints ``delivering`` once the first event went out and the report at exit.
* ``serve-slow-async URL``: the same with the AsyncDispatcher.
* ``deliver URL GATEWAY_URL WORKER_ID LEASE_S CONCURRENCY [gate]``: run_forever
  through a TopNotifier to a FakeTopGateway until the outbox is empty (or
  killed); prints ``delivering`` after the first delivery, the report at exit.
  With ``gate``, it first prints ``ready`` and waits for a line on stdin, so
  several workers can start delivering at the same moment.
* ``transition URL LOANS ROUNDS SEED``: hammer compare-and-set changes on
  shared loans; prints ``won lost`` counts.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from loanstate import (
    AsyncCallbackNotifier,
    AsyncDispatcher,
    CallbackNotifier,
    ConcurrentChange,
    Dispatcher,
    DispatchReport,
    LoanChangeEvent,
    RetryPolicy,
    SqlStore,
)


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


def deliver(url: str, gateway_url: str, worker_id: str, lease_s: str, concurrency: str, gate: str = "") -> None:
    from loanstate.notifiers import TopNotifier

    store = SqlStore(url)
    fast = RetryPolicy(attempts=2, wait_initial=0.01, wait_jitter=0.01, wait_max=0.2)
    stop = threading.Event()
    announced = threading.Event()

    def announce(event: LoanChangeEvent, receipt: object) -> None:
        if not announced.is_set():
            announced.set()
            print("delivering", flush=True)

    with TopNotifier("test-app-key", "test-app-secret", url=gateway_url, timeout=2.0) as notifier:
        dispatcher = Dispatcher(
            store,
            notifier,
            concurrency=int(concurrency),
            on_delivered=announce,
            retry=fast,
            lease=timedelta(seconds=float(lease_s)),
            worker_id=worker_id,
            poll_interval=0.05,
        )

        def watch() -> None:
            # Stop once nothing is left to do (the test also checks from outside).
            while not stop.wait(0.2):
                status = store.outbox_status()
                if status.pending == 0:
                    stop.set()

        if gate == "gate":
            # Imports and setup are done: a slow start cannot leave this worker no work to share.
            print("ready", flush=True)
            sys.stdin.readline()
        threading.Thread(target=watch, daemon=True).start()
        report = dispatcher.run_forever(stop)
    print(f"delivered={report.delivered} retried={report.retried}", flush=True)


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
