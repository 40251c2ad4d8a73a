"""The worked example's planted bug: the platform hears of a change before it is checked and committed.

Everything else is :class:`~tests.example_servicing.loan_book.LoanBook`. When the
lifecycle refuses a change, the refusal comes too late: the notification is out.
"""

from __future__ import annotations

from datetime import datetime

from loanstate import LoanChangeEvent, derive_request_id

from .loan_book import LoanBook


class EagerLoanBook(LoanBook):
    """Sends the notification first, "so the platform is never late" (the bug)."""

    def change(self, loan_apply_no: str, *, after: str, at: datetime) -> LoanChangeEvent:
        """Notify, then check and commit (wrong order)."""
        before = self.status(loan_apply_no)
        sequence = self.sequence(loan_apply_no)
        request_id = derive_request_id(loan_apply_no, before, after, at, sequence=sequence)
        self.notifier.send(LoanChangeEvent(loan_apply_no, before, after, at, request_id))  # BUG: too early
        with self.db:
            event = self.machine.change(
                loan_apply_no=loan_apply_no, before=before, after=after, at=at, sequence=sequence
            )
            self._record(event)
        return event
