"""The two faces of the one loop: :class:`Dispatcher` (sync notifiers, threads) and :class:`AsyncDispatcher`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import signal
import threading
from collections.abc import Callable, Iterator

import attrs

from loanstate._errors import InvalidConfiguration
from loanstate._events import LoanChangeEvent, Receipt
from loanstate.dispatch._base import Base
from loanstate.dispatch._loop import Run, inline
from loanstate.dispatch._report import DispatchReport
from loanstate.notifiers._base import AsyncNotifier, Notifier

__all__ = ["AsyncDispatcher", "Dispatcher"]


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` while the run lasts (from the main thread only); then the old handlers return."""
    loop = asyncio.get_running_loop()
    installed = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, stop.set)
            installed[sig] = previous
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - not the main thread / platform
            pass
    try:
        yield
    finally:
        for sig, previous in installed.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)


@contextlib.contextmanager
def _bridged(stop: threading.Event, halt: asyncio.Event) -> Iterator[None]:
    """Set ``halt`` on the running loop when another thread sets ``stop``."""
    loop = asyncio.get_running_loop()
    over = threading.Event()

    def watch() -> None:
        while not over.is_set():
            if stop.wait(0.25):
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(halt.set)
                return

    watcher = threading.Thread(target=watch, name="loanstate-dispatch-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        over.set()


def _settle_future(future: asyncio.Future[Receipt], receipt: Receipt | None, error: BaseException | None) -> None:
    if future.done():  # its waiter was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(receipt)  # type: ignore[arg-type]


class _Senders:
    """``size`` threads sending events for the loop: a queue in, one loop wake-up per result out.

    Lighter than ``run_in_executor`` (no concurrent future to wrap per event),
    which matters at a few hundred events a second.
    """

    def __init__(self, notify: Callable[[LoanChangeEvent], Receipt], size: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._notify = notify
        self._queue: queue.SimpleQueue[tuple[LoanChangeEvent, asyncio.Future[Receipt]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name="loanstate-dispatch-send") for _ in range(size)]
        for thread in self._threads:
            thread.start()

    def send(self, event: LoanChangeEvent) -> asyncio.Future[Receipt]:
        future: asyncio.Future[Receipt] = self._loop.create_future()
        self._queue.put((event, future))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            event, future = item
            try:
                receipt = self._notify(event)
            except BaseException as exc:  # handed to the loop, which decides (a bug is retried, not lost)
                self._loop.call_soon_threadsafe(_settle_future, future, None, exc)
            else:
                self._loop.call_soon_threadsafe(_settle_future, future, receipt, None)

    def close(self) -> None:
        """Let the threads finish what they send, then end them."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


def _in_a_thread_if_a_loop_runs(main: Callable[[], DispatchReport]) -> DispatchReport:
    """Run ``main`` here, or, called from a thread already running an event loop, in a fresh thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return main()
    box: list[DispatchReport | BaseException] = []

    def target() -> None:
        try:
            box.append(main())
        except BaseException as exc:  # handed back to the caller's thread below
            box.append(exc)

    thread = threading.Thread(target=target, name="loanstate-dispatch")
    thread.start()
    thread.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


@attrs.define
class Dispatcher(Base[Notifier]):
    """Delivers the outbox of ``store`` through a synchronous ``notifier``, ``concurrency`` sends at a time.

    Each ``send`` runs in a worker thread (at most ``concurrency``); the one
    dispatch loop coordinates them on an event loop of its own, in the calling
    thread, where database work and the hooks run too. A delivery starts only
    while at least half its claim's lease is left, so ``lease`` must be at
    least twice the longest one delivery can take: with a notifier that
    declares a ``deadline`` (seconds bounding one ``send``), the default lease
    is computed from it and the retry policy
    (:meth:`RetryPolicy.longest_delivery`), and a shorter one is refused.
    ``worker_id`` names this worker in the outbox; keep it unique per running
    process (the default is) or give a restarted process its predecessor's
    id to take its leases over at once.

    Hooks run in the calling thread after each commit: ``on_delivered(event,
    receipt)``, ``on_retry(event, error)``, ``on_parked(event, error)``,
    ``on_attempt(Attempt)`` (every attempt, paused ones included); and
    ``on_paused(Pause)`` / ``on_resumed()`` when a systemic failure pauses
    delivery and when a probe goes through.
    """

    def _check_notifier(self) -> None:
        send = getattr(self.notifier, "send", None)
        if not callable(send) or inspect.iscoroutinefunction(send):
            raise InvalidConfiguration(
                "notifier", self.notifier, "must have a synchronous send(event) (use AsyncDispatcher for async ones)"
            )

    def run_once(self) -> DispatchReport:
        """Deliver everything due now, then return (events rescheduled for later stay pending).

        On a systemic failure it returns at once, with ``report.paused`` saying
        why; the next call starts with a single probe event.
        """
        return _in_a_thread_if_a_loop_runs(lambda: asyncio.run(self._main(None, forever=False)))

    def run_forever(self, stop: threading.Event | None = None) -> DispatchReport:
        """Deliver until ``stop`` is set, polling every ``poll_interval`` seconds when idle.

        Without ``stop``, SIGTERM and SIGINT stop it gracefully (when called
        from the main thread): no new claims, in-flight deliveries finish and
        are recorded, every lease still held is released. A systemic failure
        pauses it (see :class:`Pause`) until a probe goes through.
        """
        if stop is not None and not isinstance(stop, threading.Event):
            raise InvalidConfiguration("stop", stop, "must be a threading.Event")
        return _in_a_thread_if_a_loop_runs(lambda: asyncio.run(self._main(stop, forever=True)))

    async def _main(self, stop: threading.Event | None, *, forever: bool) -> DispatchReport:
        halt = asyncio.Event()
        senders = _Senders(self.notifier.send, self.concurrency)
        try:
            run = Run(self, senders.send, inline, halt if forever else None, forever)
            with _bridged(stop, halt) if stop is not None else _stop_on_signals(halt):
                return await run()
        finally:
            senders.close()


@attrs.define
class AsyncDispatcher(Base[AsyncNotifier]):
    """The asyncio face of the same loop: an :class:`~loanstate.notifiers.AsyncNotifier`, same guarantees.

    Deliveries are tasks on the running loop; database work runs in a thread
    (``asyncio.to_thread``) so the loop never blocks on it. The settings,
    the lease rule and the hooks are :class:`Dispatcher`'s.
    """

    def _check_notifier(self) -> None:
        if not inspect.iscoroutinefunction(getattr(self.notifier, "send", None)):
            raise InvalidConfiguration(
                "notifier", self.notifier, "must have an async send(event) (use Dispatcher for synchronous ones)"
            )

    async def run_once(self) -> DispatchReport:
        """Deliver everything due now, then return (at once, with ``report.paused``, on a systemic failure)."""
        return await Run(self, self.notifier.send, asyncio.to_thread, None, forever=False)()

    async def run_forever(self, stop: asyncio.Event | None = None) -> DispatchReport:
        """Deliver until ``stop`` is set; without it, SIGTERM and SIGINT stop it gracefully."""
        if stop is not None:
            if not isinstance(stop, asyncio.Event):
                raise InvalidConfiguration("stop", stop, "must be an asyncio.Event")
            return await Run(self, self.notifier.send, asyncio.to_thread, stop, forever=True)()
        stop = asyncio.Event()
        with _stop_on_signals(stop):
            return await Run(self, self.notifier.send, asyncio.to_thread, stop, forever=True)()
