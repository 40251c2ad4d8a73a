"""A real stand-in for Alibaba's open-platform gateway, on loopback: :class:`FakeTopGateway`.

An aiohttp server (one asyncio loop: hundreds of concurrent connections,
thousands of requests per second) that checks requests like the platform,
answers in its exact shapes, deduplicates by ``request_id``, records
everything, and injects faults on a plan. Use it from sync code (``with``: the
server runs in a background thread), from asyncio (``async with``: in the
running loop), or in the foreground (:meth:`FakeTopGateway.serve_forever`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import ssl
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

import attrs
from aiohttp import web

from loanstate._errors import InvalidConfiguration
from loanstate._events import LoanChangeEvent
from loanstate._machine import LoanMachine
from loanstate.fake._faults import Fault, FaultPlan
from loanstate.fake._rules import Answer, check_request, error_answer, render, success_answer
from loanstate.top import Secret

__all__ = ["FakeTopGateway", "GatewayRequest"]

_PATH: Final = "/router/rest"
_MALFORMED: Final = b'{"alibaba_finance_xfd_loan_change_notify_response":{"result":{"response_co'


@attrs.frozen
class GatewayRequest:
    """One request as the fake gateway saw it.

    ``params``: every parameter but the signature (query and body merged).
    ``arrived``: where each parameter came, ``"query"``, ``"body"`` or
    ``"both"`` (``sign`` included).
    ``event``: the change it carried, when it passed the checks. ``fault``:
    what was injected. ``http_status``: ``None`` when no answer was sent.
    ``code``/``sub_code``: the error answered (``sub_code`` is the
    ``response_code`` of a business answer). ``replay``: a duplicate
    ``request_id`` answered from memory. ``took_effect``: this request applied
    the change.
    """

    index: int
    params: Mapping[str, str]
    event: LoanChangeEvent | None
    fault: Fault | None
    http_status: int | None
    code: str | None
    sub_code: str | None
    replay: bool
    took_effect: bool
    arrived: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def request_id(self) -> str | None:
        """The idempotency key of the change carried, if it was readable."""
        return self.event.request_id if self.event is not None else None


def _check_settings(
    *, machine: object, seed: object, latency: object, port: object, clock: object, keep: object, context: object
) -> None:
    """Refuse wrong-typed or wrong-valued settings of the gateway, naming the first one."""
    checks: tuple[tuple[str, object, bool, str], ...] = (
        ("machine", machine, machine is None or isinstance(machine, LoanMachine), "a LoanMachine or None"),
        ("seed", seed, isinstance(seed, int) and not isinstance(seed, bool), "an integer"),
        (
            "latency",
            latency,
            isinstance(latency, int | float) and not isinstance(latency, bool) and 0 <= latency < math.inf,
            "a finite number of seconds, 0 or more",
        ),
        (
            "port",
            port,
            isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535,
            "a port number from 0 to 65535",
        ),
        ("clock", clock, clock is None or callable(clock), "a function returning an aware datetime, or None"),
        (
            "keep_requests",
            keep,
            keep is None or (isinstance(keep, int) and not isinstance(keep, bool) and keep > 0),
            "a positive integer or None",
        ),
        ("ssl_context", context, context is None or isinstance(context, ssl.SSLContext), "an ssl.SSLContext or None"),
    )
    for setting, value, ok, expected in checks:
        if not ok:
            raise InvalidConfiguration(setting, value, f"expected {expected}")


def _arrived(query: Mapping[str, str], form: Mapping[str, str]) -> dict[str, str]:
    where = dict.fromkeys(query, "query")
    for key in form:
        where[key] = "both" if key in where else "body"
    return where


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FakeTopGateway:
    """A fake ``/router/rest`` for ``alibaba.finance.xfd.loan.change.notify`` on 127.0.0.1.

    It verifies signatures (md5, hmac, hmac-sha256; ``sign`` from the query
    string only, in upper-case hex, as the platform's own clients send it: a
    wrong secret answers code 25), the timestamp (10 minutes of skew: code 31
    against ``clock``), the system parameters and the business JSON
    (fields, types, date format; statuses and legal pairs against ``machine``
    when given), and answers exactly like the platform. A repeated
    ``request_id`` gets the first successful answer again and takes no effect.
    ``faults`` is a :class:`FaultPlan` (or a sequence of faults, a schedule);
    ``seed`` seeds its random draws; ``latency`` adds seconds to every answer.
    ``clock`` is the gateway's time (for the skew check); ``keep_requests``
    bounds :attr:`requests` to the latest ones (``None``: keep all), for long
    runs such as a demo; effects and deliveries are always kept in full.
    ``ssl_context`` (a server context) serves HTTPS, to test TLS settings such
    as a notifier's ``verify=`` CA bundle. Wrong-typed settings raise
    :class:`~loanstate.InvalidConfiguration`; the secret is held as a
    :class:`~loanstate.top.Secret`.
    """

    def __init__(
        self,
        *,
        app_key: str = "test-app-key",
        app_secret: str | Secret = "test-app-secret",
        machine: LoanMachine | None = None,
        faults: FaultPlan | tuple[Fault | None, ...] | list[Fault | None] | None = None,
        seed: int = 0,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
        keep_requests: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not isinstance(host, str) or host not in ("127.0.0.1", "::1", "localhost"):
            raise InvalidConfiguration("host", host, "the fake gateway listens on loopback only")
        if not isinstance(app_key, str) or not app_key.strip() or not app_key.isprintable():
            raise InvalidConfiguration("app_key", app_key, "must be a non-blank printable string")
        _check_settings(
            machine=machine,
            seed=seed,
            latency=latency,
            port=port,
            clock=clock,
            keep=keep_requests,
            context=ssl_context,
        )
        self.app_key = str.__str__(app_key)
        self._secret = Secret(app_secret)
        self._machine = machine
        self._rng = random.Random(seed)
        self._latency = latency
        self._host = host
        self._port = port
        self._clock = clock or _utc_now
        self._lock = threading.Lock()
        self._plan = self._as_plan(faults)
        self._plan_index = 0
        self._counter = itertools.count()
        self._requests: deque[GatewayRequest] = deque(maxlen=keep_requests)
        self._effects: Counter[str] = Counter()
        self._answers: dict[str, tuple[Answer, LoanChangeEvent]] = {}
        self._delivered: list[LoanChangeEvent] = []
        self._last_after: dict[str, str] = {}
        self._violations: list[str] = []
        self._conflicts: list[str] = []
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None
        self._ssl = ssl_context

    # -- configuration -----------------------------------------------------

    @staticmethod
    def _as_plan(faults: FaultPlan | tuple[Fault | None, ...] | list[Fault | None] | None) -> FaultPlan:
        if faults is None:
            return FaultPlan()
        if isinstance(faults, FaultPlan):
            return faults
        return FaultPlan(schedule=tuple(faults))

    def set_faults(self, faults: FaultPlan | tuple[Fault | None, ...] | list[Fault | None] | None) -> None:
        """Replace the fault plan; its schedule starts with the next request."""
        plan = self._as_plan(faults)
        with self._lock:
            self._plan = plan
            self._plan_index = 0

    # -- what happened -----------------------------------------------------

    @property
    def url(self) -> str:
        """The full endpoint, ``http://127.0.0.1:PORT/router/rest`` (``https`` with TLS; only while running)."""
        if self._bound_port is None:
            raise InvalidConfiguration("gateway", "not running", "start it with 'with' or 'async with' first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{self._bound_port}{_PATH}"

    @property
    def requests(self) -> list[GatewayRequest]:
        """Every request received (the latest ``keep_requests``), in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def effects(self) -> Counter[str]:
        """request_id -> how many times a request with it took effect (a copy); exactly once = all 1."""
        with self._lock:
            return Counter(self._effects)

    @property
    def order_violations(self) -> list[str]:
        """One line per applied event whose ``before_status`` was not its loan's last ``after_status``."""
        with self._lock:
            return list(self._violations)

    @property
    def conflicts(self) -> list[str]:
        """One line per replayed ``request_id`` that carried a *different* change (it took no effect)."""
        with self._lock:
            return list(self._conflicts)

    def delivered(self, loan_apply_no: str | None = None) -> list[LoanChangeEvent]:
        """The events that took effect, in order; only one loan's with ``loan_apply_no``."""
        with self._lock:
            if loan_apply_no is None:
                return list(self._delivered)
            return [e for e in self._delivered if e.loan_apply_no == loan_apply_no]

    def __repr__(self) -> str:
        where = self.url if self._bound_port is not None else "not running"
        return f"FakeTopGateway({where}, app_key={self.app_key!r}, requests={len(self._requests)})"

    # -- the request handler -----------------------------------------------

    def _apply(
        self, params: dict[str, str], fault: Fault | None, index: int, arrived: Mapping[str, str]
    ) -> tuple[Answer, GatewayRequest]:
        """Check, deduplicate and apply one request; called on the loop, under the lock."""
        rid = f"fake{index:x}{self._rng.getrandbits(32):08x}"
        checked = check_request(
            params,
            app_key=self.app_key,
            app_secret=self._secret,
            now=self._clock(),
            gateway_request_id=rid,
            machine=self._machine,
            sign_in_body="sign" in arrived and arrived["sign"] != "query",
        )
        event = checked if isinstance(checked, LoanChangeEvent) else None
        replay = took_effect = False
        if isinstance(checked, Answer):
            answer = checked
        elif fault is Fault.ISP_ERROR:
            answer = error_answer(rid, 15, "Remote service error", "isp.remote-service-timeout", "服务超时,请稍后重试")
        elif fault is Fault.RATE_LIMIT:
            answer = error_answer(
                rid,
                7,
                "App Call Limited",
                "accesscontrol.limited-by-app-access-count",
                f"This ban will last for {self._plan.retry_after} more seconds",
            )
        elif fault is Fault.ISV_ERROR:
            answer = error_answer(rid, 50, "Remote service error", "isv.invalid-parameter", "非法参数")
        elif fault is Fault.BUSINESS_FAILURE:
            answer = success_answer(rid, f"trace-{rid}", success=False, code="FAKE_BUSINESS_FAILURE")
        elif checked.request_id in self._answers:
            answer, first = self._answers[checked.request_id]
            replay = True
            if first.to_top_param() != checked.to_top_param():
                self._conflicts.append(
                    f"request_id {checked.request_id} reused: first {first.to_top_param()}, "
                    f"now {checked.to_top_param()}"
                )
        else:
            answer = success_answer(rid, f"trace-{rid}")
            self._answers[checked.request_id] = (answer, checked)
            self._take_effect(checked)
            took_effect = True
        lost = fault in (Fault.TIMEOUT, Fault.DROP)
        http_status = None if lost else 200
        record = GatewayRequest(
            index=index,
            params={k: v for k, v in params.items() if k != "sign"},
            event=event,
            fault=fault,
            http_status=http_status,
            code=answer.code,
            sub_code=answer.sub_code,
            replay=replay,
            took_effect=took_effect,
            arrived=arrived,
        )
        return answer, record

    def _take_effect(self, event: LoanChangeEvent) -> None:
        self._effects[event.request_id] += 1
        self._delivered.append(event)
        last = self._last_after.get(event.loan_apply_no)
        if last is not None and last != event.before_status:
            self._violations.append(
                f"loan {event.loan_apply_no!r}: {event.before_status} -> {event.after_status} "
                f"(request_id {event.request_id}) arrived while the loan was {last}"
            )
        self._last_after[event.loan_apply_no] = event.after_status

    def _next_fault(self) -> tuple[int, Fault | None]:
        with self._lock:
            index = next(self._counter)
            fault = self._plan.pick(self._plan_index, self._rng)
            self._plan_index += 1
            return index, fault

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query.items())
        form: dict[str, str] = {}
        if request.method == "POST" and request.can_read_body:
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        # The platform's clients put sign in the query string; one in the body is never taken for it.
        params = {**{k: v for k, v in form.items() if k != "sign"}, **query}
        index, fault = self._next_fault()
        arrived = _arrived(query, form)
        delay = self._latency + (self._plan.latency if fault is Fault.LATENCY else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault in (Fault.HTTP_500, Fault.HTTP_503):
            status = 500 if fault is Fault.HTTP_500 else 503
            shown = {k: v for k, v in params.items() if k != "sign"}
            record = GatewayRequest(index, shown, None, fault, status, None, None, False, False, arrived)
            with self._lock:
                self._requests.append(record)
            headers = {"Retry-After": "1"} if status == 503 else {}
            return web.Response(
                status=status, text="Service Unavailable" if status == 503 else "Internal Server Error", headers=headers
            )
        with self._lock:
            answer, record = self._apply(params, fault, index, arrived)
            self._requests.append(record)
        if fault is Fault.TIMEOUT:
            await asyncio.sleep(self._plan.hang)
            fault = Fault.DROP
        if fault is Fault.DROP:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing more to say on a connection that is gone
        if fault is Fault.MALFORMED:
            return web.Response(body=_MALFORMED, content_type="application/json", charset="utf-8")
        # The platform answers XML unless asked otherwise; an invalid format gets JSON.
        reply_format = params.get("format", "xml")
        body, content_type = render(
            answer,
            format=reply_format if reply_format in ("json", "xml") else "json",
            simplify=params.get("simplify", "").lower() == "true",
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    # -- running -----------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", _PATH, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, backlog=2048, reuse_address=True, ssl_context=self._ssl)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else self._port
        self._runner = runner

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._bound_port = None

    def __enter__(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to the caller's thread below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._stop())
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=main, name="FakeTopGateway", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop = None
        self._thread = None

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    def serve_forever(
        self,
        ready: Callable[[FakeTopGateway], None] | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        """Run in the foreground until ``stop`` is set or the process is interrupted (Ctrl-C).

        ``ready(self)`` is called once the server listens (``url`` is then known).
        """

        async def serve() -> None:
            await self._start()
            try:
                if ready is not None:
                    ready(self)
                while stop is None or not stop.is_set():
                    await asyncio.sleep(0.1)
            finally:
                await self._stop()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
