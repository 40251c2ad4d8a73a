"""Delivery: the dispatchers against a bare HTTP client, the 640 events/s limit, and the scale-out.

1. ``Dispatcher`` (threads, TopNotifier on httpx2) and ``AsyncDispatcher``
   (asyncio, AsyncTopNotifier on httpx2's AsyncClient) drain a SQLite outbox of 1000 loans x
   2 events to a FakeTopGateway answering after 50 ms, 32 in flight, against
   the physical limit 32 / 0.050 s = 640 events/s (target: at least 80%).
   Their CPU seconds per 1000 delivered events stand beside a bare client of
   the same HTTP library posting the same number of requests, signed and
   prepared beforehand, at the same concurrency (httpx2.Client in 32
   threads; httpx2.AsyncClient, 32 at a time): target within 1.25x. A bare
   aiohttp client, 32 at a time, stands beside them for information. The bare client keeps no
   outbox and no per-loan order, so each of its loans has one event.
2. On PostgreSQL, 4 dispatcher processes (AsyncDispatcher) sharing one
   outbox against 1, at 32 and at 8 in flight each. Workers start up before
   the clock starts; the time runs from "go" to the last delivery recorded.
   Target: 3x.

The gateway runs in its own process, so its CPU is not counted. Each side's
outbox is filled before its clock starts, with loans of its own (their
request_ids never repeat at the gateway). After every run the gateway's own
records must show each request_id taking effect exactly once and every loan's
events in the order the store recorded them, for every loan; the bare clients'
replies must all be fresh successes; the scale-out's delivered count must
equal the number of events exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx2
import sqlalchemy as sa

from benchmarks._checks import check, check_counts, check_deliveries, check_replies, expected_order
from benchmarks._gateway import ROOT, Gateway, gateway_process
from benchmarks._harness import Row, interleave, interleave_metrics, timed
from benchmarks.bench_store import open_book, postgres_server
from loanstate import AsyncDispatcher, AsyncTopNotifier, Dispatcher, SqlStore, TopNotifier, default_machine
from loanstate.store import Change
from loanstate.testing._databases import Server
from loanstate.top import CONTENT_TYPE, build_request

AT = datetime(2024, 1, 1, tzinfo=UTC)
LATENCY = 0.050
CONCURRENCY = 32
KEY, SECRET = "test-app-key", "test-app-secret"
LIMIT = CONCURRENCY / LATENCY

# Every run's loans get a tag of their own, so no request_id ever repeats at the gateway.
_TAGS = itertools.count()

Expected = dict[str, list[str]]
Reply = tuple[int, bytes, str | None]


def fill(url: str | sa.URL, prefix: str, loans: int, per_loan: int) -> tuple[SqlStore, Expected]:
    """A store whose outbox holds ``per_loan`` events of each of ``loans`` loans; each loan's request_ids in order."""
    store = SqlStore(url)
    store.create_schema()
    names = [f"{prefix}{n:06d}" for n in range(loans)]
    open_book(store, names, AT)
    walk = ("OVERDUE", "NEW")
    events = []
    for step in range(per_loan):
        events += store.transition_many(Change(n, walk[step % 2], AT + timedelta(seconds=step)) for n in names)
    return store, expected_order((e.loan_apply_no, e.request_id) for e in events)


def bare_requests(gateway: Gateway, prefix: str, count: int) -> tuple[list[tuple[str, bytes]], Expected]:
    """``count`` signed requests, prepared (URL and body) before any clock starts: one event per loan."""
    machine = default_machine()
    prepared, order = [], []
    for n in range(count):
        event = machine.change(loan_apply_no=f"{prefix}{n:06d}", before="NEW", after="OVERDUE", at=AT, sequence=1)
        request = build_request(event, app_key=KEY, app_secret=SECRET, now=datetime.now(UTC))
        prepared.append((f"{gateway.url}?{request.query_string()}", request.body()))
        order.append((event.loan_apply_no, event.request_id))
    return prepared, expected_order(order)


def _figures(events: int, wall: float, cpu: float) -> dict[str, float]:
    return {"rate": events / wall, "cpu_per_1000": cpu / events * 1000}


class Delivery:
    """The four sides of the delivery rows, each one run of ``loans`` x ``per_loan`` events."""

    def __init__(self, gateway: Gateway, directory: Path, loans: int, per_loan: int) -> None:
        self.gateway, self.directory = gateway, directory
        self.loans, self.per_loan = loans, per_loan
        self.events = loans * per_loan

    def _prefix(self, side: str) -> str:
        return f"D{side}{next(_TAGS)}-"

    def _outbox(self, side: str) -> tuple[SqlStore, Expected, str]:
        prefix = self._prefix(side)
        store, expected = fill(f"sqlite:///{self.directory / f'{prefix}.db'}", prefix, self.loans, self.per_loan)
        return store, expected, prefix

    def _settled(self, store: SqlStore, delivered: int, expected: Expected, prefix: str, what: str) -> None:
        status = store.outbox_status()
        store.close()
        counts = {"delivered (report)": delivered, "delivered (outbox)": status.delivered}
        counts |= {"pending": status.pending, "parked": status.parked}
        wanted = {"delivered (report)": self.events, "delivered (outbox)": self.events, "pending": 0, "parked": 0}
        check_counts(what, counts, wanted)
        check_deliveries(self.gateway.records(prefix), expected, what)

    def dispatcher(self) -> Mapping[str, float]:
        store, expected, prefix = self._outbox("s")
        with TopNotifier(KEY, SECRET, url=self.gateway.url, limits=httpx2.Limits(max_connections=64)) as notifier:
            dispatcher = Dispatcher(store, notifier, concurrency=CONCURRENCY)
            with timed() as t:
                report = dispatcher.run_once()
        self._settled(store, report.delivered, expected, prefix, "Dispatcher")
        return _figures(self.events, t.wall, t.cpu)

    def async_dispatcher(self) -> Mapping[str, float]:
        store, expected, prefix = self._outbox("a")

        async def drain() -> tuple[int, float, float]:
            async with AsyncTopNotifier(KEY, SECRET, url=self.gateway.url) as notifier:
                dispatcher = AsyncDispatcher(store, notifier, concurrency=CONCURRENCY)
                with timed() as t:
                    report = await dispatcher.run_once()
            return report.delivered, t.wall, t.cpu

        delivered, wall, cpu = asyncio.run(drain())
        self._settled(store, delivered, expected, prefix, "AsyncDispatcher")
        return _figures(self.events, wall, cpu)

    def bare_httpx2(self) -> Mapping[str, float]:
        prefix = self._prefix("h")
        prepared, expected = bare_requests(self.gateway, prefix, self.events)
        headers = {"Content-Type": CONTENT_TYPE}
        with httpx2.Client(limits=httpx2.Limits(max_connections=64)) as client:

            def post(request: tuple[str, bytes]) -> Reply:
                answer = client.post(request[0], content=request[1], headers=headers)
                return answer.status_code, answer.content, answer.headers.get("content-type")

            with ThreadPoolExecutor(CONCURRENCY) as pool, timed() as t:
                replies = list(pool.map(post, prepared))
        self._bare_checked(replies, expected, prefix, "bare httpx2 client, 32 threads")
        return _figures(self.events, t.wall, t.cpu)

    def bare_aiohttp(self) -> Mapping[str, float]:
        prefix = self._prefix("b")
        prepared, expected = bare_requests(self.gateway, prefix, self.events)
        headers = {"Content-Type": CONTENT_TYPE}

        async def post_all() -> tuple[list[Reply], float, float]:
            gate = asyncio.Semaphore(CONCURRENCY)
            async with aiohttp.ClientSession() as session:

                async def post(url: str, body: bytes) -> Reply:
                    async with gate, session.post(url, data=body, headers=headers) as answer:
                        return answer.status, await answer.read(), answer.headers.get("content-type")

                with timed() as t:
                    replies = await asyncio.gather(*(post(u, b) for u, b in prepared))
            return list(replies), t.wall, t.cpu

        replies, wall, cpu = asyncio.run(post_all())
        self._bare_checked(replies, expected, prefix, "bare aiohttp client, 32 at a time")
        return _figures(self.events, wall, cpu)

    def bare_httpx2_async(self) -> Mapping[str, float]:
        prefix = self._prefix("x")
        prepared, expected = bare_requests(self.gateway, prefix, self.events)
        headers = {"Content-Type": CONTENT_TYPE}

        async def post_all() -> tuple[list[Reply], float, float]:
            gate = asyncio.Semaphore(CONCURRENCY)
            async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=64)) as client:

                async def post(url: str, body: bytes) -> Reply:
                    async with gate:
                        answer = await client.post(url, content=body, headers=headers)
                    return answer.status_code, answer.content, answer.headers.get("content-type")

                with timed() as t:
                    replies = await asyncio.gather(*(post(u, b) for u, b in prepared))
            return list(replies), t.wall, t.cpu

        replies, wall, cpu = asyncio.run(post_all())
        self._bare_checked(replies, expected, prefix, "bare httpx2.AsyncClient, 32 at a time")
        return _figures(self.events, wall, cpu)

    def _bare_checked(self, replies: list[Reply], expected: Expected, prefix: str, what: str) -> None:
        check_replies(replies, self.events, what)
        check_deliveries(self.gateway.records(prefix), expected, what)

    def sides(self) -> dict[str, Callable[[], Mapping[str, float]]]:
        return {
            "sync": self.dispatcher,
            "bare_sync": self.bare_httpx2,
            "async": self.async_dispatcher,
            "bare_async": self.bare_httpx2_async,
            "bare_aiohttp": self.bare_aiohttp,
        }


def delivery_rows(gateway: Gateway, directory: Path, quick: bool) -> list[Row]:
    """The dispatchers and the bare clients, interleaved round by round."""
    loans, per_loan, rounds = (100, 2, 2) if quick else (1000, 2, 5)
    # Warm-up on a small run (lazy imports, first connections), then the measured rounds.
    interleave_metrics(Delivery(gateway, directory, 20, per_loan).sides(), 1, warm_up=False)
    t = interleave_metrics(Delivery(gateway, directory, loans, per_loan).sides(), rounds, warm_up=False)
    size = f"{loans} loans x {per_loan}, c={CONCURRENCY}, {LATENCY * 1000:.0f} ms"
    limit = f"physical limit {CONCURRENCY}/{LATENCY:.3f} s"
    return [
        Row(f"Dispatcher, {size}", t["sync"]["rate"], limit, LIMIT, "events/s", rounds, 0.8, True),
        Row(f"AsyncDispatcher, {size}", t["async"]["rate"], limit, LIMIT, "events/s", rounds, 0.8, True),
        Row(
            "bare httpx2 client, same (reference)", t["bare_sync"]["rate"], limit, LIMIT, "events/s", rounds, None, True
        ),
        Row(
            "bare httpx2.AsyncClient, same (reference)",
            t["bare_async"]["rate"],
            limit,
            LIMIT,
            "events/s",
            rounds,
            None,
            True,
        ),
        Row(
            "bare aiohttp client, same (reference)",
            t["bare_aiohttp"]["rate"],
            limit,
            LIMIT,
            "events/s",
            rounds,
            None,
            True,
        ),
        Row(
            "Dispatcher: CPU per 1000 delivered events",
            t["sync"]["cpu_per_1000"],
            "bare httpx2 client, 32 threads, same requests prepared",
            t["bare_sync"]["cpu_per_1000"],
            "CPU s",
            rounds,
            0.8,
        ),
        Row(
            "AsyncDispatcher: CPU per 1000 delivered events",
            t["async"]["cpu_per_1000"],
            "bare httpx2.AsyncClient, 32 at a time, same requests prepared",
            t["bare_async"]["cpu_per_1000"],
            "CPU s",
            rounds,
            0.8,
        ),
        Row(
            "AsyncDispatcher: CPU per 1000 delivered events",
            t["async"]["cpu_per_1000"],
            "bare aiohttp client, 32 at a time (informative: another HTTP library)",
            t["bare_aiohttp"]["cpu_per_1000"],
            "CPU s",
            rounds,
            None,
        ),
    ]


# -- the scale-out ------------------------------------------------------------------


def scale_out_run(server: Server, gateway: Gateway, prefix: str, loans: int, workers: int, c: int) -> float:
    """Events per second of ``workers`` processes draining one outbox of ``loans`` events (start-up untimed)."""
    url = server.create_database("loanstate_bench_scale")
    try:
        store, expected = fill(url, prefix, loans, 1)
        target = url.render_as_string(hide_password=False)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks._worker", target, gateway.url, str(c)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in range(workers)
        ]
        for proc in procs:
            assert proc.stdout is not None
            check(proc.stdout.readline().strip() == "ready", "a scale-out worker did not start")
        start = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        said = [proc.communicate(timeout=600)[0].split() for proc in procs]
        check(all(p.returncode == 0 for p in procs), "a scale-out worker failed")
        delivered = sum(int(words[1]) for words in said)
        end = max(float(words[2]) for words in said)
        status = store.outbox_status()
        store.close()
        what = f"scale-out, {workers} worker(s) at c={c}"
        counts = {"delivered (workers)": delivered, "delivered (outbox)": status.delivered}
        counts |= {"pending": status.pending, "parked": status.parked}
        check_counts(
            what, counts, {"delivered (workers)": loans, "delivered (outbox)": loans, "pending": 0, "parked": 0}
        )
        check_deliveries(gateway.records(prefix), expected, what)
    finally:
        server.drop_database(url)
    return loans / (end - start)


def scale_out_rows(gateway: Gateway, server: Server, quick: bool) -> list[Row]:
    """4 worker processes against 1 on one PostgreSQL outbox, paired round by round."""
    loans, rounds = (100, 1) if quick else (2000, 3)
    rows = []
    # c=32 is the setup the target names; c=8 keeps each process latency-bound
    # rather than CPU-bound, to show how the shared outbox itself scales.
    for c in (CONCURRENCY,) if quick else (CONCURRENCY, 8):

        def side(workers: int, c: int = c) -> Callable[[], float]:
            return lambda: scale_out_run(server, gateway, f"S{next(_TAGS)}-", loans, workers, c)

        t = interleave({"one": side(1), "four": side(4)}, rounds, warm_up=False)
        rows.append(
            Row(
                f"PostgreSQL, 4 dispatcher processes (c={c} each), {loans} loans",
                t["four"],
                "1 process",
                t["one"],
                "events/s",
                rounds,
                3.0,
                True,
            )
        )
    return rows


def main(quick: bool = False) -> list[Row]:
    """Run this module's benchmarks; return its rows."""
    with gateway_process(LATENCY) as gateway, tempfile.TemporaryDirectory(prefix="loanstate-bench-") as tmp:
        rows = delivery_rows(gateway, Path(tmp), quick)
        server = postgres_server()
        if server is not None:
            rows += scale_out_rows(gateway, server, quick)
    return rows
