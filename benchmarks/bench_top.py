"""Delivery to the open platform: signing and encoding against the bare hash, round trips against bare clients.

(1) ``to_top_param()`` + ``sign()`` of one event's full parameter set (the
event's JSON form field, then the system parameters and it concatenated,
UTF-8 encoded, HMAC-SHA256 and hex) against the floor: the bare HMAC-SHA256
call over the same, already concatenated bytes; target within 3x. For
information, ``sign()`` alone and the whole ``build_request`` (timestamp,
signature, query string and body) against the same floor.
(2) Sequential ``TopNotifier.send`` round trips to a ``FakeTopGateway`` on
loopback against bare ``httpx2.Client.post`` calls of the very same prepared
requests (URL, body and headers built beforehand), each round against a fresh
gateway. (3) 32 concurrent ``AsyncTopNotifier`` deliveries (on httpx2's
AsyncClient) against bare ``httpx2.AsyncClient`` posts of the same prepared
requests (the same client library) and, for information, bare aiohttp client
posts (the gateway shares the loop, so a client's CPU per request shows as
throughput).

Sides are interleaved round by round. After every round, the gateway's own
records must show each request_id taking effect exactly once and the bare
clients' replies must all be fresh successes (read after the timing).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import httpx2

from benchmarks._checks import check_deliveries, check_replies, expected_order
from benchmarks._gateway import records_of
from benchmarks._harness import Row, interleave
from loanstate import AsyncTopNotifier, LoanChangeEvent, TopNotifier, default_machine
from loanstate.fake import FakeTopGateway
from loanstate.top import CONTENT_TYPE, build_request, sign, signing_string

SECRET = "bench-app-secret"
APP_KEY = "test-app-key"
NOW = datetime.now(UTC)


def make_events(count: int, tag: str) -> list[LoanChangeEvent]:
    """``count`` first changes of distinct loans (``tag`` keeps loans, and so request_ids, apart across rounds)."""
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


def _per_op(fn: Callable[[int], None], n: int) -> Callable[[], float]:
    def side() -> float:
        start = time.perf_counter()
        fn(n)
        return (time.perf_counter() - start) / n

    return side


def signing_rows(n: int, rounds: int) -> list[Row]:
    """Encoding and signing one event against the bare HMAC over the finished signing string."""
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

    fns = {"sign": ours_sign, "encode_sign": ours_encode_sign, "build": ours_build, "floor": floor}
    t = interleave({name: _per_op(fn, n) for name, fn in {**fns, "digest": floor_digest}.items()}, rounds)
    hexdigest = "floor: hmac.new(...).hexdigest()"
    return [
        Row("to_top_param() + sign() one event", t["encode_sign"], hexdigest, t["floor"], "s/op", rounds, 0.33),
        Row("sign() one event", t["sign"], hexdigest, t["floor"], "s/op", rounds),
        Row("sign() one event", t["sign"], "floor: hmac.digest() (C one-shot)", t["digest"], "s/op", rounds),
        Row("build_request + encode (informative)", t["build"], hexdigest, t["floor"], "s/op", rounds),
    ]


def _round_trip_side(count: int, tag: str, bare: bool) -> Callable[[], float]:
    """A side for :func:`interleave`: seconds per sequential round trip to a fresh in-process gateway.

    Ours sends through ``TopNotifier.send``; the bare side posts requests
    prepared beforehand with ``httpx2.Client`` and reads its replies only
    after the timing. The first request of each (opening the connection) is
    untimed. Both then check the gateway's own records.
    """
    rounds = itertools.count()

    def side() -> float:
        events = make_events(count + 1, f"{tag}{next(rounds)}")
        with FakeTopGateway() as gw:
            if bare:
                seconds, replies = _bare_posts(gw.url, events)
                check_replies(replies, count + 1, "bare httpx2 posts")
            else:
                with TopNotifier(APP_KEY, "test-app-secret", url=gw.url) as notifier:
                    notifier.send(events[0])
                    start = time.perf_counter()
                    for event in events[1:]:
                        notifier.send(event)
                    seconds = time.perf_counter() - start
            check_deliveries(records_of(gw), _order(events), "bare httpx2 posts" if bare else "TopNotifier.send")
        return seconds / count

    return side


def _bare_posts(url: str, events: list[LoanChangeEvent]) -> tuple[float, list[tuple[int, bytes, str | None]]]:
    """Post prepared requests in turn (the first one untimed); the timed seconds and every reply."""
    headers = {"Content-Type": CONTENT_TYPE}
    prepared = _prepared(url, events)
    with httpx2.Client(timeout=10.0) as client:
        first = client.post(prepared[0][0], content=prepared[0][1], headers=headers)
        answers = []
        start = time.perf_counter()
        for target, body in prepared[1:]:
            answers.append(client.post(target, content=body, headers=headers))
        seconds = time.perf_counter() - start
    replies = [(a.status_code, a.content, a.headers.get("content-type")) for a in (first, *answers)]
    return seconds, replies


def _order(events: list[LoanChangeEvent]) -> dict[str, list[str]]:
    return expected_order((e.loan_apply_no, e.request_id) for e in events)


def round_trip_rows(n: int, rounds: int) -> list[Row]:
    """Sequential round trips: TopNotifier.send against bare httpx2 posts, interleaved."""
    t = interleave({"ours": _round_trip_side(n, "o", bare=False), "bare": _round_trip_side(n, "b", bare=True)}, rounds)
    return [
        Row(
            "sequential round trip to FakeTopGateway",
            t["ours"],
            "bare httpx2 post, same prepared requests",
            t["bare"],
            "s/op",
            rounds,
            0.67,
        )
    ]


CONCURRENCY = 32


def _prepared(url: str, events: list[LoanChangeEvent]) -> list[tuple[str, bytes]]:
    out = []
    for event in events:
        request = build_request(event, app_key=APP_KEY, app_secret="test-app-secret", now=datetime.now(UTC))
        out.append((f"{url}?{request.query_string()}", request.body()))
    return out


async def _async_notifier_run(events: list[LoanChangeEvent]) -> float:
    async with FakeTopGateway() as gw, AsyncTopNotifier(APP_KEY, "test-app-secret", url=gw.url) as notifier:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(event: LoanChangeEvent) -> None:
            async with gate:
                await notifier.send(event)

        start = time.perf_counter()
        await asyncio.gather(*(one(e) for e in events))
        rate = len(events) / (time.perf_counter() - start)
        check_deliveries(records_of(gw), _order(events), "AsyncTopNotifier, 32 concurrent")
    return rate


async def _bare_async_run(events: list[LoanChangeEvent], client: str) -> float:
    """Bare posts of prepared requests, 32 at a time, on aiohttp or httpx2; replies checked after the timing."""
    headers = {"Content-Type": CONTENT_TYPE}
    replies: list[tuple[int, bytes, str | None]] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    async with FakeTopGateway() as gw, aiohttp.ClientSession() as session, httpx2.AsyncClient(timeout=10.0) as hx:
        prepared = _prepared(gw.url, events)

        async def with_aiohttp(url: str, body: bytes) -> None:
            async with gate, session.post(url, data=body, headers=headers) as response:
                replies.append((response.status, await response.read(), response.headers.get("content-type")))

        async def with_httpx2(url: str, body: bytes) -> None:
            async with gate:
                response = await hx.post(url, content=body, headers=headers)
            replies.append((response.status_code, response.content, response.headers.get("content-type")))

        one = with_aiohttp if client == "aiohttp" else with_httpx2
        start = time.perf_counter()
        await asyncio.gather(*(one(u, b) for u, b in prepared))
        rate = len(events) / (time.perf_counter() - start)
        what = f"bare {client} posts, 32 concurrent"
        check_replies(replies, len(events), what)
        check_deliveries(records_of(gw), _order(events), what)
    return rate


def async_rows(n: int, rounds: int) -> list[Row]:
    """32 concurrent deliveries, gateway in the same loop: AsyncTopNotifier against bare async clients."""
    tags = itertools.count()

    def side(kind: str) -> Callable[[], float]:
        def run() -> float:
            events = make_events(n, f"a{kind[0]}{next(tags)}")
            if kind == "ours":
                return asyncio.run(_async_notifier_run(events))
            return asyncio.run(_bare_async_run(events, kind))

        return run

    t = interleave({kind: side(kind) for kind in ("ours", "aiohttp", "httpx2")}, rounds)
    return [
        Row(
            f"AsyncTopNotifier, {CONCURRENCY} concurrent",
            t["ours"],
            "bare httpx2.AsyncClient posts, same prepared requests",
            t["httpx2"],
            "req/s",
            rounds,
            0.67,
            higher_is_better=True,
        ),
        Row(
            f"AsyncTopNotifier, {CONCURRENCY} concurrent",
            t["ours"],
            "bare aiohttp client posts (informative: another HTTP library)",
            t["aiohttp"],
            "req/s",
            rounds,
            higher_is_better=True,
        ),
    ]


def main(quick: bool = False) -> list[Row]:
    """Run this module's benchmarks; return its rows."""
    n, rounds = (2_000, 3) if quick else (10_000, 15)
    trips, trip_rounds = (100, 3) if quick else (1_000, 5)
    return signing_rows(n, rounds) + round_trip_rows(trips, trip_rounds) + async_rows(trips, trip_rounds)
