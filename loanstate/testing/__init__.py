"""Test support for code that uses loanstate: strategies, a stateful test base, fixtures."""

from __future__ import annotations

__all__: list[str] = []
