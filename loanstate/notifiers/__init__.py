"""Notifier adapters: how a change event reaches the platform (or a test double).

:class:`TopNotifier` / :class:`AsyncTopNotifier` sign and post to the open
platform; :class:`InMemoryNotifier` / :class:`AsyncInMemoryNotifier` record
and can be scripted to fail; :class:`CallbackNotifier` /
:class:`AsyncCallbackNotifier` call your function.
"""

from __future__ import annotations

from loanstate.notifiers._base import AsyncNotifier, BaseAsyncNotifier, BaseNotifier, Notifier, Receipt
from loanstate.notifiers.callback import AsyncCallbackNotifier, CallbackNotifier
from loanstate.notifiers.memory import AsyncInMemoryNotifier, InMemoryNotifier
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
