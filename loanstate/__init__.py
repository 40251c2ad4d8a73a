"""loanstate: legal loan status changes, notified to Alibaba exactly once in effect.

Declare the lifecycle once (:class:`LoanMachine`), get validated change events
shaped like ``alibaba.finance.xfd.loan.change.notify`` (:class:`LoanChangeEvent`),
and deliver them through pluggable notifiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    SystemicDeliveryError,
    TransientDeliveryError,
    UnknownLoan,
    UnreadableInput,
)
from loanstate._events import LoanChangeEvent, Receipt, derive_request_id
from loanstate._machine import LoanMachine, default_machine
from loanstate.notifiers._base import AsyncNotifier, Notifier

if TYPE_CHECKING:
    from loanstate.audit import AuditFinding, AuditSummary, HistoryAudit
    from loanstate.dispatch import AsyncDispatcher, Dispatcher, DispatchReport, RetryPolicy
    from loanstate.notifiers import (
        AsyncCallbackNotifier,
        AsyncInMemoryNotifier,
        AsyncTopNotifier,
        CallbackNotifier,
        InMemoryNotifier,
        TopNotifier,
    )
    from loanstate.store import SqlStore

# The machine and events import in milliseconds; delivery and storage pull in
# HTTP and SQL libraries, so those names load on first use.
_LAZY = {
    "AsyncCallbackNotifier": "loanstate.notifiers",
    "AsyncDispatcher": "loanstate.dispatch",
    "AsyncInMemoryNotifier": "loanstate.notifiers",
    "AsyncTopNotifier": "loanstate.notifiers",
    "AuditFinding": "loanstate.audit",
    "AuditSummary": "loanstate.audit",
    "CallbackNotifier": "loanstate.notifiers",
    "DispatchReport": "loanstate.dispatch",
    "Dispatcher": "loanstate.dispatch",
    "HistoryAudit": "loanstate.audit",
    "InMemoryNotifier": "loanstate.notifiers",
    "RetryPolicy": "loanstate.dispatch",
    "SqlStore": "loanstate.store",
    "TopNotifier": "loanstate.notifiers",
}

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
    "SystemicDeliveryError",
    "TopNotifier",
    "TransientDeliveryError",
    "Transition",
    "UnknownLoan",
    "UnreadableInput",
    "default_machine",
    "derive_request_id",
]


def __getattr__(name: str) -> Any:
    # __version__ is read from the installed metadata only when asked for.
    if name == "__version__":
        from importlib.metadata import version

        return version("loanstate")
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'loanstate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
