"""Notifier adapters: how a change event reaches the platform (or a test double).

:class:`TopNotifier` / :class:`AsyncTopNotifier` sign and post to the open
platform; :class:`InMemoryNotifier` / :class:`AsyncInMemoryNotifier` record
and can be scripted to fail; :class:`CallbackNotifier` /
:class:`AsyncCallbackNotifier` call your function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loanstate.notifiers._base import AsyncNotifier, BaseAsyncNotifier, BaseNotifier, Notifier, Receipt
from loanstate.notifiers.callback import AsyncCallbackNotifier, CallbackNotifier
from loanstate.notifiers.memory import AsyncInMemoryNotifier, InMemoryNotifier

if TYPE_CHECKING:
    from loanstate.notifiers.top import AsyncTopNotifier, TopNotifier

__all__ = [
    "AsyncCallbackNotifier",
    "AsyncInMemoryNotifier",
    "AsyncNotifier",
    "AsyncTopNotifier",
    "BaseAsyncNotifier",
    "BaseNotifier",
    "CallbackNotifier",
    "InMemoryNotifier",
    "Notifier",
    "Receipt",
    "TopNotifier",
]


def __getattr__(name: str) -> Any:
    # The HTTP adapters import httpx2 only when first asked for.
    if name in ("AsyncTopNotifier", "TopNotifier"):
        from loanstate.notifiers import top

        value = getattr(top, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'loanstate.notifiers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
