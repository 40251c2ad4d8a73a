"""A small loan book: loans in SQLite, each change checked, committed, then notified.

This is the *fixed* module of the worked example in ``docs/testing.md``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from loanstate import LoanChangeEvent, LoanMachine, UnknownLoan, default_machine
from loanstate.notifiers import Notifier

SCHEMA = """
CREATE TABLE IF NOT EXISTS loans (loan_apply_no TEXT PRIMARY KEY, status TEXT NOT NULL, opened_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    request_id TEXT PRIMARY KEY, loan_apply_no TEXT NOT NULL, before_status TEXT NOT NULL,
    after_status TEXT NOT NULL, change_time TEXT NOT NULL
);
"""


class LoanBook:
    """The servicing code under test: open loans, change their status, tell the platform."""

    def __init__(self, db: sqlite3.Connection, notifier: Notifier, machine: LoanMachine | None = None) -> None:
        self.db = db
        self.notifier = notifier
        self.machine = machine or default_machine()
        self.db.executescript(SCHEMA)

    def open(self, loan_apply_no: str, *, at: datetime) -> None:
        """Register a drawn-down loan at the initial status (not a change: nothing is notified)."""
        with self.db:
            self.db.execute("INSERT INTO loans VALUES (?, ?, ?)", (loan_apply_no, self.machine.initial, at.isoformat()))

    def status(self, loan_apply_no: str) -> str:
        """The loan's current status."""
        row = self.db.execute("SELECT status FROM loans WHERE loan_apply_no = ?", (loan_apply_no,)).fetchone()
        if row is None:
            raise UnknownLoan(loan_apply_no)
        return str(row[0])

    def sequence(self, loan_apply_no: str) -> int:
        """The number the loan's next change gets in its history (1 for its first): it keys the request_id."""
        row = self.db.execute("SELECT COUNT(*) FROM history WHERE loan_apply_no = ?", (loan_apply_no,)).fetchone()
        return int(row[0]) + 1

    def change(self, loan_apply_no: str, *, after: str, at: datetime) -> LoanChangeEvent:
        """Check the change against the lifecycle, commit it, and only then notify it."""
        with self.db:  # one transaction: the status row and the history row
            before = self.status(loan_apply_no)
            event = self.machine.change(
                loan_apply_no=loan_apply_no, before=before, after=after, at=at, sequence=self.sequence(loan_apply_no)
            )
            self._record(event)
        self.notifier.send(event)
        return event

    def _record(self, event: LoanChangeEvent) -> None:
        self.db.execute(
            "UPDATE loans SET status = ? WHERE loan_apply_no = ?", (event.after_status, event.loan_apply_no)
        )
        self.db.execute(
            "INSERT INTO history VALUES (?, ?, ?, ?, ?)",
            (
                event.request_id,
                event.loan_apply_no,
                event.before_status,
                event.after_status,
                event.change_time.isoformat(),
            ),
        )
