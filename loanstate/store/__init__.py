"""The durable path: loans, their history and an outbox, in one SQL database.

:class:`SqlStore` writes a status change, its history row and its outbox row
in one transaction; :class:`~loanstate.Dispatcher` drains the outbox.
"""

from __future__ import annotations

from loanstate.store._dialects import make_engine
from loanstate.store._history_import import HistoryImportReport
from loanstate.store._import import ImportProblem, ImportReport, LoanRecord
from loanstate.store._migrate import SchemaStatus
from loanstate.store._outbox import Outbox
from loanstate.store._records import Change, Claim, OutboxEntry, OutboxState, OutboxStatus, Outcome, ParkedLoan
from loanstate.store._schema import SCHEMA_VERSION, metadata
from loanstate.store._store import SqlStore

__all__ = [
    "SCHEMA_VERSION",
    "Change",
    "Claim",
    "HistoryImportReport",
    "ImportProblem",
    "ImportReport",
    "LoanRecord",
    "Outbox",
    "OutboxEntry",
    "OutboxState",
    "OutboxStatus",
    "Outcome",
    "ParkedLoan",
    "SchemaStatus",
    "SqlStore",
    "make_engine",
    "metadata",
]
