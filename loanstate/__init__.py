"""loanstate: legal loan status changes, notified to Alibaba exactly once in effect.

Declare the lifecycle once (:class:`LoanMachine`), get validated change events
shaped like ``alibaba.finance.xfd.loan.change.notify`` (:class:`LoanChangeEvent`),
and deliver them through pluggable notifiers.
"""

from __future__ import annotations

from loanstate._audit import AuditFinding, AuditSummary, HistoryAudit
from loanstate._definition import Problem, Transition
from loanstate._errors import (
    ConcurrentChange,
    DeliveryError,
    IllegalTransition,
    InvalidConfiguration,
    InvalidDefinition,
    InvalidEvent,
    LoanStateError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownLoan,
    UnreadableInput,
)
from loanstate._events import LoanChangeEvent, derive_request_id
from loanstate._machine import LoanMachine, default_machine
from loanstate.dispatch import AsyncDispatcher, Dispatcher, DispatchReport, RetryPolicy
from loanstate.notifiers import (
    AsyncCallbackNotifier,
    AsyncInMemoryNotifier,
    AsyncNotifier,
    AsyncTopNotifier,
    CallbackNotifier,
    InMemoryNotifier,
    Notifier,
    Receipt,
    TopNotifier,
)
from loanstate.store import SqlStore

__all__ = [
    "AsyncCallbackNotifier",
    "AsyncDispatcher",
    "AsyncInMemoryNotifier",
    "AsyncNotifier",
    "AsyncTopNotifier",
    "AuditFinding",
    "AuditSummary",
    "CallbackNotifier",
    "ConcurrentChange",
    "DeliveryError",
    "DispatchReport",
    "Dispatcher",
    "HistoryAudit",
    "IllegalTransition",
    "InMemoryNotifier",
    "InvalidConfiguration",
    "InvalidDefinition",
    "InvalidEvent",
    "LoanChangeEvent",
    "LoanMachine",
    "LoanStateError",
    "Notifier",
    "PermanentDeliveryError",
    "Problem",
    "Receipt",
    "RetryPolicy",
    "SqlStore",
    "TopNotifier",
    "TransientDeliveryError",
    "Transition",
    "UnknownLoan",
    "UnreadableInput",
    "default_machine",
    "derive_request_id",
]


def __getattr__(name: str) -> str:
    # __version__ is read from the installed metadata only when asked for.
    if name == "__version__":
        from importlib.metadata import version

        return version("loanstate")
    raise AttributeError(f"module 'loanstate' has no attribute {name!r}")
