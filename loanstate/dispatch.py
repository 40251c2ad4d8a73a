"""The dispatcher: drains a :class:`~loanstate.store.SqlStore` outbox through a notifier.

Guarantees, whatever crashes in between (the docs' "Durable delivery" page
says more):

* **at least once**: an event leaves the outbox only when the notifier
  returned a receipt for it (or an operator skipped it); a worker that dies
  holding events leaves leases that expire, and another worker (or the same
  one restarted under the same ``worker_id``, at once) takes them over;
* **exactly once in effect**: every retry carries the event's ``request_id``,
  which the platform uses to recognise a replay;
* **order per loan**: a loan's next event is claimed only after the previous
  one was acknowledged or resolved by an operator; many loans are in flight
  at once (``concurrency``).

Transient failures are retried with jittered exponential backoff: first a few
quick tries in process (through stamina), then durably, by rescheduling the
event in the outbox. A permanent failure, or a transient one that has lasted
``RetryPolicy.max_age``, *parks* the loan: its later events wait, other loans
go on, and an operator decides (:meth:`SqlStore.retry` / :meth:`SqlStore.skip`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, Final, Generic, TypeVar

import attrs
import stamina

from loanstate._errors import DeliveryError, InvalidConfiguration, PermanentDeliveryError, TransientDeliveryError
from loanstate._events import LoanChangeEvent, Receipt
from loanstate.notifiers._base import AsyncNotifier, Notifier
from loanstate.store import Claim, Outcome, SqlStore

__all__ = ["AsyncDispatcher", "Attempt", "DispatchReport", "Dispatcher", "Pause", "RetryPolicy"]

log: Final = logging.getLogger("loanstate.dispatch")

#: Called after a delivery is committed: ``(event, receipt)``.
OnDelivered = Callable[[LoanChangeEvent, Receipt], None]
#: Called after a failure is committed (rescheduled or parked): ``(event, error)``.
OnFailed = Callable[[LoanChangeEvent, Exception], None]


@attrs.frozen
class RetryPolicy:
    """How transient failures are retried. All waits in seconds.

    Defaults, and why: the first retry comes within about a second
    (``wait_initial=1.0`` plus up to ``wait_jitter=1.0``), because most
    failures (a dropped connection, a 503) are gone by then; waits double
    (``2**n``) so an outage is not hammered, up to ``wait_max=600`` (ten
    minutes: a recovered platform hears from us soon, yet a day-long outage
    costs ~150 calls per loan); jitter spreads retries of many loans so they
    do not arrive in lockstep. After ``max_age`` (3 days) of failing, the
    loan is parked: by then a person should look. ``attempts`` quick tries
    happen in process (within ``in_process_timeout`` seconds) before the
    event is rescheduled in the outbox, where its wait survives restarts.
    """

    attempts: int = attrs.field(default=3)
    wait_initial: float = attrs.field(default=1.0)
    wait_max: float = attrs.field(default=600.0)
    wait_jitter: float = attrs.field(default=1.0)
    max_age: timedelta = attrs.field(default=timedelta(days=3))
    in_process_timeout: float = attrs.field(default=10.0)

    @attempts.validator
    def _check_attempts(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidConfiguration("retry.attempts", value, "must be a whole number of at least 1")

    @wait_initial.validator
    @wait_jitter.validator
    @in_process_timeout.validator
    def _check_seconds(self, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise InvalidConfiguration(f"retry.{attribute.name}", value, "must be a finite number of seconds >= 0")

    @wait_max.validator
    def _check_wait_max(self, attribute: attrs.Attribute[float], value: float) -> None:
        self._check_seconds(attribute, value)
        if value < self.wait_initial:
            raise InvalidConfiguration("retry.wait_max", value, f"must be at least wait_initial ({self.wait_initial})")

    @max_age.validator
    def _check_max_age(self, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise InvalidConfiguration("retry.max_age", value, "must be a positive timedelta")

    def backoff(self, failures: int) -> float:
        """The jittered wait after ``failures`` consecutive failures (1-based)."""
        # The exponent is capped: 2.0 ** 1024 overflows a float, and a loan failing for
        # days (several tries per claim) gets there; wait_max is reached long before.
        base = self.wait_initial * 2.0 ** min(max(failures - 1, 0), 1000)
        return min(self.wait_max, base + random.uniform(0, self.wait_jitter))


@attrs.frozen
class Pause:
    """Why delivery is paused: a failure that would hit every event alike.

    ``cause`` is the :class:`~loanstate.SystemicDeliveryError`'s short name
    (``"signature"``, ``"timestamp"``, ``"unreachable"``, ...), ``remedy`` what a
    person should fix, ``message`` the error's text, ``since`` when the pause began.
    """

    cause: str
    remedy: str
    message: str
    since: datetime


@attrs.frozen
class Attempt:
    """One delivery attempt, as the ``on_attempt`` hook sees it.

    ``outcome`` is ``"delivered"``, ``"retry"`` (rescheduled), ``"parked"`` or
    ``"paused"`` (a systemic failure: nothing charged); ``error`` is the failure's
    text (``None`` when delivered); ``seconds`` is the attempt's wall time.
    """

    request_id: str
    loan_apply_no: str
    outcome: str
    seconds: float
    error: str | None = None


@attrs.frozen
class DispatchReport:
    """What a dispatcher run did, and what is left.

    ``delivered``, ``retried`` (failures rescheduled) and ``parked`` count
    this run's outcomes; ``pending`` and ``lag`` (age of the oldest pending
    event, ``None`` when none is pending) describe the outbox when the run
    ended; ``elapsed`` is the run's wall time in seconds; ``paused`` says why
    delivery is paused when the run ended paused (``None`` otherwise).
    """

    delivered: int
    retried: int
    parked: int
    pending: int
    lag: timedelta | None
    elapsed: float
    paused: Pause | None = None


def _default_worker_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _describe(exc: BaseException) -> str:
    # DeliveryError messages never hold secrets (notifiers strip them); keep the class for operators.
    return f"{type(exc).__name__}: {exc}"[:2000]


N = TypeVar("N")


@attrs.define
class _Core(Generic[N]):
    """What the sync and async dispatchers share: configuration, outcome rules, counters."""

    store: SqlStore
    notifier: N
    concurrency: int = attrs.field(default=32, kw_only=True)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, kw_only=True)
    # Twice the longest default TopNotifier delivery (3 tries of up to 15 s plus
    # backoff, about 50 s): a claim starts only with half its lease left.
    lease: timedelta = attrs.field(default=timedelta(seconds=120), kw_only=True)
    worker_id: str = attrs.field(factory=_default_worker_id, kw_only=True)
    poll_interval: float = attrs.field(default=0.5, kw_only=True)
    on_delivered: OnDelivered | None = attrs.field(default=None, kw_only=True)
    on_retry: OnFailed | None = attrs.field(default=None, kw_only=True)
    on_parked: OnFailed | None = attrs.field(default=None, kw_only=True)
    _counts: dict[str, int] = attrs.field(factory=lambda: {"delivered": 0, "retried": 0, "parked": 0}, init=False)

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidConfiguration("concurrency", self.concurrency, "must be at least 1")
        if not 0 < len(self.worker_id) <= 128:
            raise InvalidConfiguration("worker_id", self.worker_id, "must be 1-128 characters")
        if self.lease <= timedelta(0):
            raise InvalidConfiguration("lease", self.lease, "must be positive")

    @property
    def _prefetch(self) -> int:
        """How many events to hold claimed: the slots, and as many again ready to start."""
        return 2 * self.concurrency

    def _quick_retry(self, exc: Exception) -> bool | float:
        """stamina's hook: retry transient errors in process, honouring a short ``retry_after``."""
        if not isinstance(exc, TransientDeliveryError):
            return False
        if exc.retry_after is None:
            return True
        # A long rate-limit window is waited out durably, not by holding a lease.
        return max(exc.retry_after, 0.001) if exc.retry_after <= self.retry.in_process_timeout / 2 else False

    def _first_wait(self, first: Exception) -> float:
        """The wait before the second try: the platform's window, or the policy's first backoff."""
        hint = self._quick_retry(first)
        return float(hint) if not isinstance(hint, bool) else min(self.retry.backoff(1), self.retry.in_process_timeout)

    def _context(self) -> Any:
        """The in-process retries after a first failed try (so one attempt fewer)."""
        return stamina.retry_context(
            on=self._quick_retry,
            attempts=max(self.retry.attempts - 1, 1),
            timeout=self.retry.in_process_timeout,
            wait_initial=self.retry.wait_initial,
            wait_max=min(self.retry.wait_max, self.retry.in_process_timeout),
            wait_jitter=self.retry.wait_jitter,
        )

    def _fresh(self, claim: Claim) -> bool:
        """Whether a claim that waited for a slot still has at least half its lease to be delivered in.

        A claim left waiting longer (every slot busy with slow deliveries) is
        let go instead: its lease could run out mid-send, another worker take
        the event over, deliver it and the loan's next one, and this send then
        arrive after them.
        """
        return self.store.now() < claim.lease_expires_at - self.lease / 2

    def _startable(self, ready: deque[Claim], stale: list[Claim], inflight: Sized) -> Iterator[Claim]:
        """The ready claims to start now, one per free slot; those left waiting too long go to ``stale``.

        The caller starts each claim before asking for the next, so ``inflight`` counts it.
        """
        while ready and len(inflight) < self.concurrency:
            claim = ready.popleft()
            if not self._fresh(claim):
                stale.append(claim)
                continue
            yield claim

    def _gives_up(self, first: Exception, stop: threading.Event | asyncio.Event | None) -> bool:
        """Whether a first failed try is final: no retries allowed, not worth one in process, or stopping."""
        return self.retry.attempts < 2 or not self._quick_retry(first) or (stop is not None and stop.is_set())

    @staticmethod
    def _postponed(claim: Claim) -> TransientDeliveryError:
        """The error a delivery cut short by a stop ends with (the event stays pending)."""
        return TransientDeliveryError("stopping: delivery postponed", request_id=claim.event.request_id)

    def _success(self, claim: Claim, receipt: Receipt, tries: int) -> Outcome:
        return Outcome(claim, "delivered", at=receipt.delivered_at, trace_id=receipt.trace_id, tries=tries)

    def _failure(self, claim: Claim, exc: Exception, tries: int) -> Outcome:
        now = self.store.now()
        trace_id = exc.trace_id if isinstance(exc, DeliveryError) else None
        if isinstance(exc, PermanentDeliveryError):
            return Outcome(claim, "parked", at=now, error=_describe(exc), trace_id=trace_id, tries=tries)
        if not isinstance(exc, TransientDeliveryError):
            log.error("notifier raised %s for %s: a bug in the notifier; retrying", type(exc).__name__, claim.event)
        first = claim.first_failed_at or now
        if now - first >= self.retry.max_age:
            error = f"failing for {now - first} (max_age {self.retry.max_age}): {_describe(exc)}"
            return Outcome(claim, "parked", at=now, error=error, trace_id=trace_id, tries=tries)
        after = getattr(exc, "retry_after", None)
        if isinstance(after, int | float) and after > 0:
            # The platform's window is honoured, but never past max_age (the loan would be
            # parked by then anyway), which also keeps an absurd Retry-After inside datetime's range.
            wait_s = min(float(after), self.retry.max_age.total_seconds())
        else:
            wait_s = self.retry.backoff(claim.attempts + tries)
        return Outcome(
            claim,
            "retry",
            at=now,
            error=_describe(exc),
            trace_id=trace_id,
            next_attempt_at=now + timedelta(seconds=wait_s),
            tries=tries,
        )

    def _after_commit(self, results: Sequence[tuple[Outcome, Receipt | Exception]]) -> None:
        for outcome, detail in results:
            event = outcome.claim.event
            if outcome.kind == "delivered":
                self._counts["delivered"] += 1
                if self.on_delivered is not None and isinstance(detail, Receipt):
                    self.on_delivered(event, detail)
            elif isinstance(detail, Exception):
                key, hook = ("parked", self.on_parked) if outcome.kind == "parked" else ("retried", self.on_retry)
                self._counts[key] += 1
                if hook is not None:
                    hook(event, detail)

    def _report(self, start: dict[str, int], started: float) -> DispatchReport:
        status = self.store.outbox_status()
        return DispatchReport(
            delivered=self._counts["delivered"] - start["delivered"],
            retried=self._counts["retried"] - start["retried"],
            parked=self._counts["parked"] - start["parked"],
            pending=status.pending,
            lag=status.lag,
            elapsed=time.monotonic() - started,
        )


@attrs.define
class Dispatcher(_Core[Notifier]):
    """Delivers the outbox of ``store`` through a synchronous ``notifier``, in threads.

    ``concurrency`` loans are in flight at once. A delivery starts only while
    at least half its claim's lease is left, so ``lease`` should be twice the
    longest a delivery can take (the notifier's timeout times
    ``retry.attempts``, plus waits): past its lease, another worker may take
    the event over. ``worker_id`` names this worker in the
    outbox; keep it unique per running process (the default is) or give a
    restarted process its predecessor's id to take its leases over at once.
    Hooks run in the calling thread after each commit: ``on_delivered(event,
    receipt)``, ``on_retry(event, error)``, ``on_parked(event, error)``.
    """

    def run_once(self) -> DispatchReport:
        """Deliver everything due now, then return (events rescheduled for later stay pending)."""
        return self._run(None, forever=False)

    def run_forever(self, stop: threading.Event | None = None) -> DispatchReport:
        """Deliver until ``stop`` is set, polling every ``poll_interval`` seconds when idle.

        Without ``stop``, SIGTERM and SIGINT stop it gracefully (when called
        from the main thread): no new claims, in-flight deliveries finish and
        are recorded, every lease still held is released.
        """
        if stop is not None:
            return self._run(stop, forever=True)
        stop = threading.Event()
        if threading.current_thread() is not threading.main_thread():
            return self._run(stop, forever=True)

        def handler(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._run(stop, forever=True)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _deliver(self, claim: Claim, stop: threading.Event | None) -> tuple[Outcome, Receipt | Exception]:
        tries = 1
        try:
            # The common case costs one call; stamina only steps in after a transient failure.
            receipt = self.notifier.send(claim.event)
            return self._success(claim, receipt, tries), receipt
        except Exception as exc:
            first: Exception = exc
            if self._gives_up(first, stop):
                return self._failure(claim, first, tries), first
            wait_s = self._first_wait(first)
        if stop is not None and stop.wait(wait_s):
            return self._failure(claim, first, tries), first
        if stop is None:
            time.sleep(wait_s)
        try:
            for attempt in self._context():
                with attempt:
                    if stop is not None and stop.is_set():
                        break
                    tries += 1
                    receipt = self.notifier.send(claim.event)
                    return self._success(claim, receipt, tries), receipt
            error: Exception = self._postponed(claim)
        except Exception as exc:
            error = exc
        return self._failure(claim, error, tries), error

    def _run(self, stop: threading.Event | None, *, forever: bool) -> DispatchReport:
        started, start = time.monotonic(), dict(self._counts)
        outbox = self.store.outbox
        outbox.release(self.worker_id)  # leases a crashed predecessor left under this id
        inflight: dict[Future[tuple[Outcome, Receipt | Exception]], Claim] = {}
        # Claimed, not yet started: a slot that frees starts its next event without
        # waiting for a database round trip (each is the head of a different loan).
        ready: deque[Claim] = deque()
        stale: list[Claim] = []  # claims that waited too long: released in the next transaction
        done_results: list[tuple[Outcome, Receipt | Exception]] = []
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="loanstate-dispatch")

        def start_ready() -> None:
            for claim in self._startable(ready, stale, inflight):
                inflight[pool.submit(self._deliver, claim, stop)] = claim

        try:
            while True:
                stopping = stop is not None and stop.is_set()
                if stopping:
                    ready.clear()  # released with every other lease on the way out
                start_ready()
                want = 0 if stopping else self._prefetch - len(inflight) - len(ready)
                if done_results or want > 0 or stale:
                    claims = outbox.settle_and_claim(
                        [r[0] for r in done_results], self.worker_id, limit=want, lease=self.lease, let_go=stale
                    )
                    committed, done_results, stale = done_results, [], []
                    self._after_commit(committed)
                    ready.extend(claims)
                    start_ready()
                if not inflight:
                    if stopping or not forever:
                        break
                    assert stop is not None
                    stop.wait(self.poll_interval)
                    continue
                finished, _ = wait(inflight, timeout=self.poll_interval, return_when=FIRST_COMPLETED)
                for future in finished:
                    del inflight[future]
                    done_results.append(future.result())
        finally:
            # On the way out (a stop, or an error such as the database going away)
            # record what finished, then let go of whatever we still hold.
            pool.shutdown(wait=True)
            # A delivery that raised (a bug) is left to its lease; the others are recorded.
            done_results.extend(f.result() for f in inflight if f.exception() is None)
            try:
                outbox.settle([r[0] for r in done_results])
                self._after_commit(done_results)
            finally:
                outbox.release(self.worker_id)
        return self._report(start, started)


@attrs.define
class AsyncDispatcher(_Core[AsyncNotifier]):
    """The asyncio twin of :class:`Dispatcher`: same guarantees, an :class:`~loanstate.notifiers.AsyncNotifier`.

    Deliveries are tasks on the running loop; database work runs in a thread
    (``asyncio.to_thread``) so the loop never blocks on it.
    """

    async def run_once(self) -> DispatchReport:
        """Deliver everything due now, then return (events rescheduled for later stay pending)."""
        return await self._run(None, forever=False)

    async def run_forever(self, stop: asyncio.Event | None = None) -> DispatchReport:
        """Deliver until ``stop`` is set; without it, SIGTERM and SIGINT stop it gracefully."""
        if stop is not None:
            return await self._run(stop, forever=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread / platform
                pass
        try:
            return await self._run(stop, forever=True)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def _deliver(self, claim: Claim, stop: asyncio.Event | None) -> tuple[Outcome, Receipt | Exception]:
        tries = 1
        try:
            receipt = await self.notifier.send(claim.event)
            return self._success(claim, receipt, tries), receipt
        except Exception as exc:
            first: Exception = exc
            if self._gives_up(first, stop):
                return self._failure(claim, first, tries), first
            wait_s = self._first_wait(first)
        if stop is None:
            await asyncio.sleep(wait_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
            if stop.is_set():
                return self._failure(claim, first, tries), first
        try:
            async for attempt in self._context():
                with attempt:
                    if stop is not None and stop.is_set():
                        break
                    tries += 1
                    receipt = await self.notifier.send(claim.event)
                    return self._success(claim, receipt, tries), receipt
            error: Exception = self._postponed(claim)
        except Exception as exc:
            error = exc
        return self._failure(claim, error, tries), error

    async def _run(self, stop: asyncio.Event | None, *, forever: bool) -> DispatchReport:
        started, start = time.monotonic(), dict(self._counts)
        outbox = self.store.outbox
        await asyncio.to_thread(outbox.release, self.worker_id)
        inflight: set[asyncio.Task[tuple[Outcome, Receipt | Exception]]] = set()
        ready: deque[Claim] = deque()  # claimed, not yet started (see Dispatcher)
        stale: list[Claim] = []
        done_results: list[tuple[Outcome, Receipt | Exception]] = []

        def start_ready() -> None:
            for claim in self._startable(ready, stale, inflight):
                inflight.add(asyncio.create_task(self._deliver(claim, stop)))

        try:
            while True:
                stopping = stop is not None and stop.is_set()
                if stopping:
                    ready.clear()
                start_ready()
                want = 0 if stopping else self._prefetch - len(inflight) - len(ready)
                if done_results or want > 0 or stale:
                    claims = await asyncio.to_thread(
                        outbox.settle_and_claim,
                        [r[0] for r in done_results],
                        self.worker_id,
                        limit=want,
                        lease=self.lease,
                        let_go=stale,
                    )
                    committed, done_results, stale = done_results, [], []
                    self._after_commit(committed)
                    ready.extend(claims)
                    start_ready()
                if not inflight:
                    if stopping or not forever:
                        break
                    assert stop is not None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_interval)
                    continue
                finished, _ = await asyncio.wait(inflight, timeout=self.poll_interval, return_when=FIRST_COMPLETED)
                for task in finished:
                    inflight.discard(task)
                    done_results.append(task.result())
        finally:
            if inflight:
                # Cancelled from outside (or an error): let in-flight sends finish, then record them.
                finished, _ = await asyncio.wait(inflight)
                done_results.extend(t.result() for t in finished if not t.cancelled() and t.exception() is None)
            try:
                await asyncio.to_thread(outbox.settle, [r[0] for r in done_results])
                self._after_commit(done_results)
            finally:
                await asyncio.to_thread(outbox.release, self.worker_id)
        return await asyncio.to_thread(self._report, start, started)
