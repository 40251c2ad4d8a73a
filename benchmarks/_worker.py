"""One scale-out worker: ``python -m benchmarks._worker DB_URL GATEWAY_URL CONCURRENCY``.

It starts up (imports, the store's first connection, the notifier's session),
prints ``ready``, and waits for a line on standard input; then it drains the
shared outbox once with an AsyncDispatcher on AsyncTopNotifier and prints
``delivered <count> <monotonic time of its last recorded delivery>`` (``0 0``
when it delivered nothing). The start-up is outside the timing: the
parent starts its clock when it says go, and ``time.monotonic`` is one clock
for every process on the machine (Linux ``CLOCK_MONOTONIC``).
"""

from __future__ import annotations

import asyncio
import sys
import time


async def _main(db_url: str, gateway_url: str, concurrency: int) -> None:
    from loanstate import AsyncDispatcher, AsyncTopNotifier, SqlStore

    store = SqlStore(db_url)
    await asyncio.to_thread(store.outbox_status)  # the first connection, before the clock starts
    async with AsyncTopNotifier("test-app-key", "test-app-secret", url=gateway_url) as notifier:
        last = [0.0]

        def delivered(event: object, receipt: object) -> None:
            last[0] = time.monotonic()  # after the delivery's commit

        dispatcher = AsyncDispatcher(store, notifier, concurrency=concurrency, on_delivered=delivered)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        report = await dispatcher.run_once()
    store.close()
    print(f"delivered {report.delivered} {last[0]!r}", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
