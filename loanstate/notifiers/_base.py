"""The notifier contract: one required method, ``send(event) -> Receipt``.

Modelled on httpx's transports: an adapter does one thing (get one change
event to the platform, or say why not) and everything else (retries,
ordering, persistence) lives around it. An adapter raises
:class:`~loanstate.TransientDeliveryError` when the same request may succeed
later (same ``request_id``), :class:`~loanstate.PermanentDeliveryError` when it
cannot; any other exception is a bug in the adapter.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from loanstate._events import LoanChangeEvent, Receipt

__all__ = ["AsyncNotifier", "BaseAsyncNotifier", "BaseNotifier", "Notifier", "Receipt"]


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
