"""The notifier contract: one required method, ``send(event) -> Receipt``.

Modelled on httpx's transports: an adapter does one thing (get one change
event to the platform, or say why not) and everything else (retries,
ordering, persistence) lives around it. An adapter raises
:class:`~loanstate.TransientDeliveryError` when the same request may succeed
later (same ``request_id``), :class:`~loanstate.PermanentDeliveryError` when it
cannot; any other exception is a bug in the adapter.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import attrs

from loanstate._events import LoanChangeEvent

__all__ = ["AsyncNotifier", "BaseAsyncNotifier", "BaseNotifier", "Notifier", "Receipt"]


@attrs.frozen
class Receipt:
    """What the platform said when it accepted a change notification.

    ``request_id`` is the event's idempotency key; ``trace_id``,
    ``response_code`` and ``response_message`` are the gateway's words (any
    may be ``None`` when the platform did not send them); ``delivered_at`` is
    when the acceptance was observed (aware datetime, from the notifier's clock).
    """

    request_id: str
    trace_id: str | None
    response_code: str | None
    response_message: str | None
    delivered_at: datetime


@runtime_checkable
class Notifier(Protocol):
    """Sends one change event to the platform, synchronously."""

    def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError``."""
        ...

    def close(self) -> None:
        """Release connections; the notifier is not used after this."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class AsyncNotifier(Protocol):
    """Sends one change event to the platform, for asyncio code."""

    async def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError``."""
        ...

    async def aclose(self) -> None:
        """Release connections; the notifier is not used after this."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BaseNotifier:
    """Convenience base for a sync adapter: ``close()`` does nothing, and context management."""

    def send(self, event: LoanChangeEvent) -> Receipt:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BaseAsyncNotifier:
    """Convenience base for an async adapter: ``aclose()`` does nothing, and context management."""

    async def send(self, event: LoanChangeEvent) -> Receipt:  # pragma: no cover - abstract
        raise NotImplementedError

    async def aclose(self) -> None:
        """Nothing to release by default."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
