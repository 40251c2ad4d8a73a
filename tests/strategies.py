"""Hypothesis strategies for loanstate's own tests: the kit's, re-exported, plus test-only ones."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from loanstate import LoanMachine
from loanstate.testing import (
    broken_definitions,
    change_events,
    change_times,
    definitions,
    histories,
    illegal_pairs,
    legal_pairs,
    lifecycles,
    loan_numbers,
    statuses,
    texts,
    timezones,
)

__all__ = [
    "broken_definitions",
    "change_events",
    "change_times",
    "definitions",
    "histories",
    "illegal_pairs",
    "legal_pairs",
    "lifecycles",
    "loan_numbers",
    "machines",
    "statuses",
    "texts",
    "timezones",
]


def _build(data: dict[str, Any]) -> LoanMachine:
    return LoanMachine.from_dict(data)


def machines(*, max_statuses: int = 6) -> st.SearchStrategy[LoanMachine]:
    """Random sound lifecycles, built (not only the shipped one)."""
    return definitions(max_statuses=max_statuses).map(_build)
