"""In-memory notifiers: the notifier twin of httpx's ``MockTransport``.

:class:`InMemoryNotifier` accepts every change event and records it, unless it
has been told to fail: :meth:`~InMemoryNotifier.fail_next` scripts the next
few calls, :meth:`~InMemoryNotifier.fail_when` fails every event a predicate
picks until :meth:`~InMemoryNotifier.clear_failures`. ``attempts`` records
every call, ``sent`` only the accepted ones, both in call order. Both classes
are safe to share between threads (one lock guards the records and the script).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias

from loanstate._errors import DeliveryError, InvalidConfiguration, TransientDeliveryError
from loanstate._events import LoanChangeEvent
from loanstate.notifiers._base import BaseAsyncNotifier, BaseNotifier, Receipt

__all__ = ["AsyncInMemoryNotifier", "FailureSpec", "InMemoryNotifier"]

#: What a scripted failure raises: a ``DeliveryError`` class (instantiated per
#: call, carrying the event's ``request_id``) or a ready-made instance.
FailureSpec: TypeAlias = type[DeliveryError] | DeliveryError

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_spec(spec: object) -> None:
    # Checked when scripted: a wrong spec would otherwise surface only at a later send, as a TypeError.
    if not (isinstance(spec, DeliveryError) or (isinstance(spec, type) and issubclass(spec, DeliveryError))):
        raise InvalidConfiguration("error", spec, "expected a DeliveryError subclass or instance")


def _make_error(spec: FailureSpec, event: LoanChangeEvent) -> DeliveryError:
    if isinstance(spec, DeliveryError):
        return spec
    return spec(
        f"scripted failure for loan {event.loan_apply_no!r}",
        request_id=event.request_id,
        code="in-memory",
    )


class _Recorder:
    """The state and the decision shared by the sync and async twins."""

    def __init__(self, clock: Clock | None) -> None:
        self._clock: Clock = clock or _utc_now
        self._lock = threading.Lock()
        self._next: deque[FailureSpec] = deque()
        self._when: list[tuple[Callable[[LoanChangeEvent], bool], FailureSpec]] = []
        self.sent: list[LoanChangeEvent] = []
        self.attempts: list[LoanChangeEvent] = []

    def fail_next(self, count: int = 1, error: FailureSpec = TransientDeliveryError) -> None:
        """Make the next ``count`` calls raise ``error`` (queued after any already scripted)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidConfiguration("count", count, "must be a whole number, 0 or more")
        _check_spec(error)
        with self._lock:
            self._next.extend([error] * count)

    def fail_when(
        self,
        predicate: Callable[[LoanChangeEvent], bool],
        error: FailureSpec = TransientDeliveryError,
    ) -> None:
        """Fail every event ``predicate`` picks, until :meth:`clear_failures`."""
        if not callable(predicate):
            raise InvalidConfiguration("predicate", predicate, "must be callable with the event")
        _check_spec(error)
        with self._lock:
            self._when.append((predicate, error))

    def clear_failures(self) -> None:
        """Forget every scripted failure: from now on every event is accepted."""
        with self._lock:
            self._next.clear()
            self._when.clear()

    def _record(self, event: LoanChangeEvent) -> Receipt:
        with self._lock:
            self.attempts.append(event)
            spec: FailureSpec | None = self._next.popleft() if self._next else None
            if spec is None:
                for predicate, candidate in self._when:
                    if predicate(event):
                        spec = candidate
                        break
            if spec is not None:
                raise _make_error(spec, event)
            self.sent.append(event)
            number = len(self.sent)
        return Receipt(
            request_id=event.request_id,
            trace_id=f"in-memory-{number}",
            response_code="SUCCESS",
            response_message=None,
            delivered_at=self._clock(),
        )


class InMemoryNotifier(_Recorder, BaseNotifier):
    """Accepts and records change events; can be scripted to fail.

    ``sent`` lists the accepted events in order, ``attempts`` every call.
    ``clock`` (default: now, in UTC) stamps each receipt's ``delivered_at``.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock)

    def send(self, event: LoanChangeEvent) -> Receipt:
        """Record ``event``; raise the scripted failure, if any, else return a receipt."""
        return self._record(event)

    def __repr__(self) -> str:
        return f"InMemoryNotifier(sent={len(self.sent)}, attempts={len(self.attempts)})"


class AsyncInMemoryNotifier(_Recorder, BaseAsyncNotifier):
    """The asyncio twin of :class:`InMemoryNotifier`: same surface, ``await send(event)``."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock)

    async def send(self, event: LoanChangeEvent) -> Receipt:
        """Record ``event``; raise the scripted failure, if any, else return a receipt."""
        return self._record(event)

    def __repr__(self) -> str:
        return f"AsyncInMemoryNotifier(sent={len(self.sent)}, attempts={len(self.attempts)})"
