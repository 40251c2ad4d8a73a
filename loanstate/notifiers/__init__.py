"""Notifier adapters: how a change event reaches the platform (or a test double)."""

from __future__ import annotations

from loanstate.notifiers._base import AsyncNotifier, BaseAsyncNotifier, BaseNotifier, Notifier, Receipt

__all__ = ["AsyncNotifier", "BaseAsyncNotifier", "BaseNotifier", "Notifier", "Receipt"]
