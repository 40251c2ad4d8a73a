"""The console's only writes: every one goes through SqlStore's public ``retry`` and ``skip``.

Kept in this one small module so that the store's operator methods can
change shape in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from loanstate.store import SqlStore

__all__ = ["retry_loans", "skip_events"]

# Names per call: a group of thousands of parked loans is many short transactions, not one long one.
_BATCH: Final = 500


def retry_loans(store: SqlStore, loan_apply_nos: Sequence[str]) -> int:
    """Return these loans' parked events to pending, due now; how many events moved."""
    moved = 0
    for start in range(0, len(loan_apply_nos), _BATCH):
        moved += store.retry(*loan_apply_nos[start : start + _BATCH])
    return moved


def skip_events(store: SqlStore, request_ids: Sequence[str]) -> int:
    """Set these events aside for good (their loans' later events go on); how many were skipped."""
    skipped = 0
    for start in range(0, len(request_ids), _BATCH):
        skipped += store.skip(*request_ids[start : start + _BATCH])
    return skipped
