"""The few places the benchmarks touch APIs that other branches are changing (adapt them after merging).

- ``LoanMachine.change`` gains ``sequence`` (branch wt-core) and requires it
  when no ``request_id`` is given: :data:`CHANGE_SEQUENCE` passes it when the
  signature has it. COORDINATOR: after the merge, pass ``sequence=1`` directly.
- ``SqlStore.open_loans`` (issue 13) will register a book in batches:
  :func:`open_loans` stands in for it with ``open_loan`` calls in one
  transaction (set-up only, never timed). COORDINATOR: switch to it once it exists.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from loanstate import LoanMachine, SqlStore

__all__ = ["CHANGE_SEQUENCE", "open_loans"]

#: Extra keyword arguments for ``change()`` without a ``request_id``: the change sequence, where it exists.
CHANGE_SEQUENCE: dict[str, Any] = (
    {"sequence": 1} if "sequence" in inspect.signature(LoanMachine.change).parameters else {}
)


def open_loans(store: SqlStore, loan_apply_nos: Iterable[str], at: datetime) -> None:
    """Open every loan at the initial status, in one transaction (benchmark set-up, outside any timing)."""
    with store.engine.begin() as conn:
        for name in loan_apply_nos:
            store.open_loan(name, at=at, connection=conn)
