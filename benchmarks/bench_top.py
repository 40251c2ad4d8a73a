"""Delivery to the open platform: signing and encoding against the bare hash, round trips against bare httpx2.

(1) ``sign()`` of one event's full parameter set (system parameters and the
business JSON, concatenated and UTF-8 encoded, then HMAC-SHA256 and hex)
against the floor: the bare HMAC-SHA256 call over the same, already
concatenated bytes; target within 3x. (2) For information, the whole
``build_request`` (event JSON, timestamp, signature, query string and body)
against the same floor: JSON serialisation and form encoding alone cost
several floors, so no target is set on it.
(3) Sequential ``TopNotifier.send`` round trips to a ``FakeTopGateway`` on
loopback against bare ``httpx2.Client.post`` calls of the very same prepared
requests (URL, body and headers built beforehand), each run against a fresh
gateway so both sides make every change take effect. (4) 32 concurrent
``AsyncTopNotifier`` deliveries (on aiohttp's client) against bare aiohttp
client posts of the same prepared requests and, for information, bare
``httpx2.AsyncClient`` posts (the gateway shares the loop, so a client's CPU
per request shows as throughput). (5) The AsyncDispatcher draining a SQLite
outbox to a gateway in its own process (answers after 20 ms): CPU per event
with AsyncTopNotifier against the same protocol code on httpx2's async client,
the measurement behind the async twin's choice of aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx2

from benchmarks._harness import Row, print_table
from benchmarks.bench_store import gateway_process
from loanstate import AsyncDispatcher, AsyncTopNotifier, LoanChangeEvent, SqlStore, TopNotifier, default_machine
from loanstate.notifiers import AsyncCallbackNotifier, Receipt
from loanstate.store import Change
from loanstate.testing import FakeTopGateway
from loanstate.top import CONTENT_TYPE, build_request, classify, sign, signing_string

SECRET = "bench-app-secret"
APP_KEY = "test-app-key"
NOW = datetime.now(UTC)


def make_events(count: int, tag: str) -> list[LoanChangeEvent]:
    machine = default_machine()
    return [
        machine.change(
            loan_apply_no=f"FI{tag}{i:07d}",
            before="NEW",
            after="OVERDUE",
            at=NOW,
            customer_id="2088000000000001",
            institution_loan_no=f"借据-{i}",
            sequence=1,
        )
        for i in range(count)
    ]


def interleaved(fns: list[Callable[[int], None]], n: int, repeat: int) -> list[float]:
    """Median seconds per operation of each ``fn(n)``, the functions taking turns in every repetition."""
    for fn in fns:
        fn(max(1, n // 10))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn(n)
            out.append((time.perf_counter() - start) / n)
    return [statistics.median(out) for out in samples]


def signing_rows(n: int, repeat: int) -> list[Row]:
    event = make_events(1, "s")[0]
    params = build_request(event, app_key=APP_KEY, app_secret=SECRET, now=NOW).params()
    data = signing_string(params)
    key = SECRET.encode()

    def ours_sign(k: int) -> None:
        for _ in range(k):
            sign(params, SECRET, "hmac-sha256")

    def ours_build(k: int) -> None:
        for _ in range(k):
            request = build_request(event, app_key=APP_KEY, app_secret=SECRET, now=NOW)
            request.query_string()
            request.body()

    business = "param_xfd_loan_change_external_request"
    system = {name: value for name, value in params.items() if name != business}

    def ours_encode_sign(k: int) -> None:
        # "sign + encode one event": the event's JSON form field, then the signature over every parameter.
        for _ in range(k):
            sign({**system, business: event.to_top_param()}, SECRET, "hmac-sha256")

    def floor(k: int) -> None:
        for _ in range(k):
            hmac.new(key, data, hashlib.sha256).hexdigest()

    def floor_digest(k: int) -> None:
        for _ in range(k):
            hmac.digest(key, data, "sha256")

    # Interleaved repetitions: on a shared machine, load then moves every side alike.
    t_sign, t_encode_sign, t_build, t_floor, t_digest = interleaved(
        [ours_sign, ours_encode_sign, ours_build, floor, floor_digest], n, repeat
    )
    return [
        Row(
            "to_top_param() + sign() one event",
            t_encode_sign,
            "floor: hmac.new(...).hexdigest()",
            t_floor,
            "s/op",
            ">= 0.33x",
        ),
        Row("sign() one event", t_sign, "floor: hmac.new(...).hexdigest()", t_floor, "s/op"),
        Row("sign() one event", t_sign, "floor: hmac.digest() (C one-shot)", t_digest, "s/op"),
        Row("build_request + encode (informative)", t_build, "floor: hmac.new(...).hexdigest()", t_floor, "s/op"),
    ]


def ours_round_trips(count: int, tag: str) -> float:
    """Seconds per sequential TopNotifier.send to a fresh gateway (the first send, opening the connection, untimed)."""
    events = make_events(count + 1, tag)
    with FakeTopGateway() as gw, TopNotifier(APP_KEY, "test-app-secret", url=gw.url) as notifier:
        notifier.send(events[0])
        start = time.perf_counter()
        for event in events[1:]:
            notifier.send(event)
        return (time.perf_counter() - start) / count


def bare_round_trips(count: int, tag: str) -> float:
    """Seconds per bare httpx2 post of requests prepared beforehand, to a fresh gateway."""
    events = make_events(count + 1, tag)
    headers = {"Content-Type": CONTENT_TYPE}
    with FakeTopGateway() as gw, httpx2.Client(timeout=10.0) as client:
        prepared = []
        for event in events:
            request = build_request(event, app_key=APP_KEY, app_secret="test-app-secret", now=datetime.now(UTC))
            prepared.append((f"{gw.url}?{request.query_string()}", request.body()))
        client.post(prepared[0][0], content=prepared[0][1], headers=headers)
        start = time.perf_counter()
        for url, body in prepared[1:]:
            client.post(url, content=body, headers=headers)
        return (time.perf_counter() - start) / count


def round_trip_rows(n: int, repeat: int) -> list[Row]:
    ours_round_trips(max(2, n // 10), "warm-o")
    bare_round_trips(max(2, n // 10), "warm-b")
    ours_samples, bare_samples = [], []
    for i in range(repeat):  # interleaved, so machine load moves both sides together
        ours_samples.append(ours_round_trips(n, f"o{i}"))
        bare_samples.append(bare_round_trips(n, f"b{i}"))
    return [
        Row(
            "sequential round trip to FakeTopGateway",
            statistics.median(ours_samples),
            "bare httpx2 post, same prepared requests",
            statistics.median(bare_samples),
            "s/op",
            ">= 0.67x",
        )
    ]


CONCURRENCY = 32


async def _async_notifier_run(count: int, tag: str) -> float:
    events = make_events(count, tag)
    async with FakeTopGateway() as gw, AsyncTopNotifier(APP_KEY, "test-app-secret", url=gw.url) as notifier:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(event: LoanChangeEvent) -> None:
            async with gate:
                await notifier.send(event)

        start = time.perf_counter()
        await asyncio.gather(*(one(e) for e in events))
        return count / (time.perf_counter() - start)


def _prepared(url: str, events: list[LoanChangeEvent]) -> list[tuple[str, bytes]]:
    out = []
    for event in events:
        request = build_request(event, app_key=APP_KEY, app_secret="test-app-secret", now=datetime.now(UTC))
        out.append((f"{url}?{request.query_string()}", request.body()))
    return out


async def _bare_httpx2_run(count: int, tag: str) -> float:
    events = make_events(count, tag)
    headers = {"Content-Type": CONTENT_TYPE}
    async with FakeTopGateway() as gw, httpx2.AsyncClient(timeout=10.0) as client:
        prepared = _prepared(gw.url, events)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(url: str, body: bytes) -> None:
            async with gate:
                await client.post(url, content=body, headers=headers)

        start = time.perf_counter()
        await asyncio.gather(*(one(u, b) for u, b in prepared))
        return count / (time.perf_counter() - start)


async def _bare_aiohttp_run(count: int, tag: str) -> float:
    events = make_events(count, tag)
    headers = {"Content-Type": CONTENT_TYPE}
    async with FakeTopGateway() as gw, aiohttp.ClientSession() as session:
        prepared = _prepared(gw.url, events)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(url: str, body: bytes) -> None:
            async with gate, session.post(url, data=body, headers=headers) as response:
                await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(one(u, b) for u, b in prepared))
        return count / (time.perf_counter() - start)


def async_rows(n: int, repeat: int) -> list[Row]:
    """32 concurrent deliveries, gateway in the same loop: AsyncTopNotifier against bare async clients."""
    ours, bare, aio = [], [], []
    for i in range(repeat):
        ours.append(asyncio.run(_async_notifier_run(n, f"ao{i}")))
        bare.append(asyncio.run(_bare_httpx2_run(n, f"ab{i}")))
        aio.append(asyncio.run(_bare_aiohttp_run(n, f"aa{i}")))
    t_ours, t_bare, t_aio = statistics.median(ours), statistics.median(bare), statistics.median(aio)
    return [
        Row(
            f"AsyncTopNotifier, {CONCURRENCY} concurrent",
            t_ours,
            "bare aiohttp client posts, same prepared requests",
            t_aio,
            "req/s",
            ">= 0.67x",
            higher_is_better=True,
        ),
        Row(
            f"AsyncTopNotifier, {CONCURRENCY} concurrent",
            t_ours,
            "bare httpx2.AsyncClient posts (informative)",
            t_bare,
            "req/s",
            higher_is_better=True,
        ),
    ]


def _store_with_changes(path: Path, loans: int) -> SqlStore:
    store = SqlStore(f"sqlite:///{path}")
    store.create_schema()
    for n in range(loans):
        store.open_loan(f"FI{n:06d}", at=NOW)
    store.transition_many([Change(f"FI{n:06d}", "OVERDUE", NOW + timedelta(seconds=1)) for n in range(loans)])
    return store


def _httpx2_async_notifier(client: httpx2.AsyncClient, url: str) -> AsyncCallbackNotifier:
    """What AsyncTopNotifier would be on httpx2's async client: same protocol code, other HTTP client."""

    async def send(event: LoanChangeEvent) -> Receipt:
        request = build_request(event, app_key=APP_KEY, app_secret="test-app-secret", now=datetime.now(UTC))
        response = await client.post(
            f"{url}?{request.query_string()}", content=request.body(), headers={"Content-Type": CONTENT_TYPE}
        )
        outcome = classify(response.status_code, response.content, content_type=response.headers.get("content-type"))
        if outcome.ok:
            return outcome.receipt(event.request_id, datetime.now(UTC))
        raise outcome.error(event.request_id)

    return AsyncCallbackNotifier(send)


async def _dispatch(store: SqlStore, url: str, client_kind: str, loans: int) -> None:
    if client_kind == "aiohttp":
        async with AsyncTopNotifier(APP_KEY, "test-app-secret", url=url) as notifier:
            report = await AsyncDispatcher(store, notifier, concurrency=CONCURRENCY).run_once()
    else:
        async with httpx2.AsyncClient() as client:
            report = await AsyncDispatcher(
                store, _httpx2_async_notifier(client, url), concurrency=CONCURRENCY
            ).run_once()
    assert report.delivered == loans, report


def dispatcher_rows(loans: int, repeat: int) -> list[Row]:
    """CPU per event of the AsyncDispatcher delivering to a gateway in its own process (20 ms answers)."""
    cpu: dict[str, list[float]] = {"aiohttp": [], "httpx2": []}
    with gateway_process(0.02) as url, tempfile.TemporaryDirectory() as directory:
        for i in range(repeat):
            for kind, samples in cpu.items():
                store = _store_with_changes(Path(directory) / f"{kind}{i}.db", loans)
                start = time.process_time()
                asyncio.run(_dispatch(store, url, kind, loans))
                samples.append((time.process_time() - start) / loans)
                store.close()
    return [
        Row(
            f"AsyncDispatcher CPU per event, {CONCURRENCY} concurrent",
            statistics.median(cpu["aiohttp"]),
            "the same on httpx2.AsyncClient (informative)",
            statistics.median(cpu["httpx2"]),
            "s/op",
        )
    ]


def main(quick: bool = False) -> list[Row]:
    n, repeat = (2_000, 3) if quick else (10_000, 15)
    trips, trip_repeat = (100, 3) if quick else (1_000, 5)
    rows = signing_rows(n, repeat) + round_trip_rows(trips, trip_repeat) + async_rows(trips, trip_repeat)
    rows += dispatcher_rows(200 if quick else 2_000, 1 if quick else 3)
    print_table("Delivery to the open platform (TOP)", rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the benchmark runs")
    main(parser.parse_args().quick)
