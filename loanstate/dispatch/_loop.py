"""The one dispatch loop: claim, start while the lease is fresh, deliver, settle and release.

It is written once, for asyncio. :class:`~loanstate.AsyncDispatcher` runs it on
the caller's event loop with the notifier's coroutine ``send`` and database work
in threads; :class:`~loanstate.Dispatcher` runs it with ``asyncio.run``, each
synchronous ``send`` in a worker thread (at most ``concurrency`` of them), and
database work inline, since its event loop only coordinates (procrastinate's
``run_worker`` drives ``run_worker_async`` the same way). So every safety rule
(the lease rule, what a stop or a pause does, what is settled on the way out)
exists in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import attrs

from loanstate._errors import SystemicDeliveryError
from loanstate._events import LoanChangeEvent, Receipt
from loanstate.dispatch._base import Base, Result
from loanstate.dispatch._report import DispatchReport
from loanstate.store import Claim

__all__ = ["Db", "Run", "Send", "inline"]

T = TypeVar("T")

#: Sends one event: the notifier's coroutine, or a sync send run in a worker thread.
Send = Callable[[LoanChangeEvent], Awaitable[Receipt]]


class Db(Protocol):
    """Runs one store call: ``asyncio.to_thread``, or :func:`inline`."""

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]: ...


async def inline(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a store call in the loop's own thread (the sync Dispatcher's loop only coordinates)."""
    return fn(*args, **kwargs)


class _StillPaused(Exception):
    """A probe met the systemic failure again, or found nothing to probe with."""


@attrs.define(eq=False)
class _Work:
    """A delivery or probe under way; ``busy`` while it sends or commits, when it must not be cancelled.

    A stop or a pause cancels work that is only waiting (between tries, or
    between probes): nothing is lost, as the event waits in the outbox.
    """

    claim: Claim | None
    busy: bool = False
    cancelled: bool = False

    def cancel_wait(self, task: asyncio.Task[Any]) -> None:
        if not self.busy and not self.cancelled:
            self.cancelled = True
            task.cancel()


@attrs.define
class Run:
    """One ``run_once`` or ``run_forever``: what it holds, and the loop over it."""

    base: Base[Any]
    send: Send
    db: Db
    stop: asyncio.Event | None
    forever: bool
    inflight: dict[asyncio.Task[Result], _Work] = attrs.field(factory=dict)
    # Claimed, not yet started: a slot that frees starts its next event without
    # waiting for a database round trip (each is the head of a different loan).
    ready: deque[Claim] = attrs.field(factory=deque)
    stale: list[Claim] = attrs.field(factory=list)  # let go in the next transaction
    done: list[Result] = attrs.field(factory=list)  # finished, not yet committed
    # Deliveries report themselves here when they end: waking on one costs the
    # same whatever the concurrency (asyncio.wait would hook every task each time).
    landed: deque[asyncio.Task[Result]] = attrs.field(factory=deque)
    wake: asyncio.Event = attrs.field(factory=asyncio.Event)

    async def __call__(self) -> DispatchReport:
        base = self.base
        started, start = time.monotonic(), base.counts()
        await self.db(base.store.outbox.release, base.worker_id)  # leases a crashed predecessor left
        try:
            if base.paused is None or await self._probe_first():
                await self._loop()
        finally:
            await self._wind_down()
        return await self.db(base.report, start, started)

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _halted(self) -> bool:
        return self._stopping() or self.base.paused is not None

    async def _loop(self) -> None:
        base = self.base
        while True:
            halted = self._halted()
            if halted:
                self._halt()
            self._start_ready()
            want = 0 if halted else base.prefetch - len(self.inflight) - len(self.ready)
            if self._worth_a_commit(want, halted):
                await self._commit(want)
                self._start_ready()
            if self.inflight:
                await self._collect()
            elif self._stopping():
                return
            elif base.paused is not None:
                if not self.forever or not await self._probe_until_through():
                    return
            elif not self.forever:
                return
            else:
                await self._idle()

    def _worth_a_commit(self, want: int, halted: bool) -> bool:
        """Whether to run a transaction now, or let a few more results gather first.

        One transaction settles many results and claims many events; waiting
        never leaves a slot idle (the ready claims feed it) nor holds a result
        back longer than ``poll_interval``, and a stop or a pause commits at once.
        """
        if not self.done and not self.stale and want <= 0:
            return False
        batch = max(1, self.base.concurrency // 4)
        return (
            halted
            or bool(self.stale)
            or not self.ready
            or not self.inflight
            or len(self.done) >= batch
            or want >= batch
            or (bool(self.done) and time.monotonic() - self.done[0].ended >= self.base.poll_interval)
        )

    def _halt(self) -> None:
        """No new deliveries: the ready claims are let go, deliveries waiting between tries end now."""
        self.stale.extend(self.ready)
        self.ready.clear()
        for task, work in self.inflight.items():
            work.cancel_wait(task)

    def _start_ready(self) -> None:
        base = self.base
        while self.ready and len(self.inflight) < base.concurrency:
            claim = self.ready.popleft()
            if not base.fresh(claim):
                self.stale.append(claim)
                continue
            work = _Work(claim)
            task = asyncio.create_task(self._deliver(claim, work))
            task.add_done_callback(self._landed)
            self.inflight[task] = work

    def _landed(self, task: asyncio.Task[Result]) -> None:
        self.landed.append(task)
        self.wake.set()

    async def _commit(self, want: int) -> None:
        """One transaction: settle what finished, let go of what will not be sent, claim up to ``want``."""
        base = self.base
        let_go = self.stale + [r.claim for r in self.done if r.outcome is None]
        outcomes = [r.outcome for r in self.done if r.outcome is not None]
        claims = await self.db(
            base.store.outbox.settle_and_claim, outcomes, base.worker_id, limit=want, lease=base.lease, let_go=let_go
        )
        committed, self.done, self.stale = self.done, [], []
        base.after_commit(committed)
        self.ready.extend(claims)

    async def _collect(self) -> None:
        if not self.landed:
            # The timeout lets a stop be noticed while every slot is busy.
            timer = asyncio.get_running_loop().call_later(self.base.poll_interval, self.wake.set)
            try:
                await self.wake.wait()
            finally:
                timer.cancel()
        self.wake.clear()
        while self.landed:
            task = self.landed.popleft()
            work = self.inflight.pop(task)
            if task.cancelled():  # cancelled before it began: nothing was sent
                assert work.claim is not None
                self.stale.append(work.claim)
                continue
            self._finished(task.result())

    def _finished(self, result: Result) -> None:
        self.done.append(result)
        if isinstance(result.detail, SystemicDeliveryError):
            self.base.pause(result.detail)

    async def _idle(self) -> None:
        if self.stop is None:
            await asyncio.sleep(self.base.poll_interval)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.base.poll_interval)

    def _quick_retry(self, exc: Exception) -> bool | float:
        # No new try once the run stops or pauses: the event waits in the outbox instead.
        return False if self._halted() else self.base.retry.quick_retry(exc)

    async def _deliver(self, claim: Claim, work: _Work) -> Result:
        base, started, tries = self.base, time.monotonic(), 1
        work.busy = True
        try:
            # The common case costs one call; stamina steps in only after a failure.
            receipt = await self.send(claim.event)
            return base.success(claim, receipt, tries, started)
        except Exception as exc:
            error: Exception = exc
        finally:
            work.busy = False
        if not self._quick_retry(error):
            return base.failure(claim, error, tries, started)
        first: Exception | None = error
        try:
            async for attempt in base.retry.in_process(self._quick_retry):
                with attempt:
                    if first is not None:
                        # Raised again so that stamina owns the wait before the next try.
                        pending, first = first, None
                        raise pending
                    work.busy, tries = True, tries + 1
                    try:
                        receipt = await self.send(claim.event)
                    finally:
                        work.busy = False
                    return base.success(claim, receipt, tries, started)
        except asyncio.CancelledError:
            pass  # a stop or a pause cut the wait short: the event waits out its backoff in the outbox
        except Exception as exc:
            error = exc
        return base.failure(claim, error, tries, started)

    # -- the pause -----------------------------------------------------------------

    async def _probe_first(self) -> bool:
        """Left paused by an earlier run: probe at once; True when delivery may go on."""
        if await self._probe_once():
            return True
        return self.forever and await self._probe_until_through()

    async def _probe_once(self) -> bool:
        """Send one due event, once: True when it got past the systemic failure, whatever its outcome."""
        base = self.base
        outbox = base.store.outbox
        claims = await self.db(outbox.claim, base.worker_id, limit=1, lease=base.lease)
        if not claims:
            return False
        [claim] = claims
        started = time.monotonic()
        try:
            result = base.success(claim, await self.send(claim.event), 1, started)
        except Exception as exc:
            result = base.failure(claim, exc, 1, started)
        if result.outcome is None:
            await self.db(outbox.settle_and_claim, (), base.worker_id, limit=0, lease=base.lease, let_go=[claim])
        else:
            await self.db(outbox.settle, [result.outcome])
        base.after_commit([result])
        if result.outcome is None:
            return False
        base.resume()
        return True

    async def _probe_until_through(self) -> bool:
        """Probe at growing intervals until a probe goes through (True) or the run stops (False)."""
        work = _Work(None)
        task = asyncio.create_task(self._probing(work))
        while not task.done():
            await asyncio.wait({task}, timeout=self.base.poll_interval)
            if self._stopping():
                work.cancel_wait(task)
        return not task.cancelled() and task.result()

    async def _probing(self, work: _Work) -> bool:
        waited = False
        while True:  # a second stamina context only in stamina's testing mode, which caps attempts
            try:
                async for attempt in self.base.retry.probes(_StillPaused):
                    with attempt:
                        if not waited:
                            waited = True
                            raise _StillPaused  # the failure that paused us: wait before the first probe
                        work.busy = True
                        try:
                            through = await self._probe_once()
                        finally:
                            work.busy = False
                        if not through:
                            raise _StillPaused
                return True
            except _StillPaused:
                await asyncio.sleep(0)

    # -- on the way out ------------------------------------------------------------------

    async def _wind_down(self) -> None:
        """Record what finished (at the end, on a stop, or on an error such as a lost database); release the rest."""
        base = self.base
        if self.inflight:
            # Waits are cut short; sends under way finish and are recorded.
            for task, work in self.inflight.items():
                work.cancel_wait(task)
            await asyncio.wait(self.inflight)
            for task in self.inflight:
                if not task.cancelled() and task.exception() is None:  # one that raised is left to its lease
                    self._finished(task.result())
            self.inflight.clear()
        try:
            await self.db(base.store.outbox.settle, [r.outcome for r in self.done if r.outcome is not None])
            base.after_commit(self.done)
        finally:
            await self.db(base.store.outbox.release, base.worker_id)
