"""Callback notifiers: deliver a change event by calling your function.

The function gets the event; it returns a :class:`~loanstate.notifiers.Receipt`
or ``None`` (then a receipt is made from the event and the clock), and raises
:class:`~loanstate.TransientDeliveryError` or
:class:`~loanstate.PermanentDeliveryError` to signal failure. Anything else it
raises propagates unchanged (it is a bug, as for every notifier).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from loanstate._events import LoanChangeEvent
from loanstate.notifiers._base import BaseAsyncNotifier, BaseNotifier, Receipt

__all__ = ["AsyncCallbackNotifier", "CallbackNotifier"]

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _receipt(event: LoanChangeEvent, answer: Receipt | None, clock: Clock) -> Receipt:
    if answer is not None:
        return answer
    return Receipt(
        request_id=event.request_id,
        trace_id=None,
        response_code=None,
        response_message=None,
        delivered_at=clock(),
    )


class CallbackNotifier(BaseNotifier):
    """Delivers each event by calling ``fn(event)``."""

    def __init__(self, fn: Callable[[LoanChangeEvent], Receipt | None], *, clock: Clock | None = None) -> None:
        self._fn = fn
        self._clock: Clock = clock or _utc_now

    def send(self, event: LoanChangeEvent) -> Receipt:
        """Call the function; return its receipt, or one made here when it returned ``None``."""
        return _receipt(event, self._fn(event), self._clock)

    def __repr__(self) -> str:
        return f"CallbackNotifier({getattr(self._fn, '__qualname__', self._fn)!s})"


class AsyncCallbackNotifier(BaseAsyncNotifier):
    """Delivers each event by awaiting ``fn(event)`` (a coroutine function)."""

    def __init__(
        self,
        fn: Callable[[LoanChangeEvent], Awaitable[Receipt | None]],
        *,
        clock: Clock | None = None,
    ) -> None:
        self._fn = fn
        self._clock: Clock = clock or _utc_now

    async def send(self, event: LoanChangeEvent) -> Receipt:
        """Await the function; return its receipt, or one made here when it returned ``None``."""
        return _receipt(event, await self._fn(event), self._clock)

    def __repr__(self) -> str:
        return f"AsyncCallbackNotifier({getattr(self._fn, '__qualname__', self._fn)!s})"
