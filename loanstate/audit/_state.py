"""The state of one audit run, shared by the fast path, the slow path and the confirming pass."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs

from loanstate._machine import LoanMachine
from loanstate.audit._bloom import RequestIdFilter
from loanstate.audit._report import FINDING_KINDS, AuditFinding
from loanstate.audit._times import API_FORM, API_OFFSET

__all__ = ["Loan", "Run"]

# Per loan: its last after_status, the instant (naive UTC, so comparing is cheap), the line, the time
# as written, and the optional fields (already checked, so a repeat needs no check).
Loan = tuple[str, datetime, int, str, str | None, str | None]


@attrs.define
class Run:
    """What one audit has seen so far: loans, learnt offsets, counts, request_ids waiting for the filter."""

    machine: LoanMachine
    filter: RequestIdFilter
    assume: timezone | None
    canonical: dict[str, str] = attrs.field(init=False)
    table: dict[str, frozenset[str]] = attrs.field(init=False)
    loans: dict[str, Loan] = attrs.Factory(dict)
    # "+08:00" -> timedelta(hours=8), learnt as met; and the 19-character offset-less forms read
    # (keyed by their separators, raw[4:17:3]): the API's own, and "T" when an offset is assumed.
    offsets: dict[str, timedelta] = attrs.Factory(dict)
    naive: dict[str, timedelta] = attrs.Factory(dict)
    counts: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(FINDING_KINDS, 0))
    records: int = 0
    rids: list[str] = attrs.Factory(list)
    candidates: dict[str, None] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.canonical = {s: s for s in self.machine.statuses}
        self.table = {s: frozenset(self.machine.allowed(s)) for s in self.machine.statuses}
        self.naive[API_FORM] = API_OFFSET
        if self.assume is not None:
            offset = self.assume.utcoffset(None)
            assert offset is not None  # a fixed-offset timezone
            self.naive["--T::"] = offset

    def finding(self, kind: str, line: int, message: str, loan: object = None, rid: object = None) -> AuditFinding:
        """Count and make one finding (loan and request_id kept only when they are strings)."""
        self.counts[kind] += 1
        return AuditFinding(
            kind, line, message, loan if loan.__class__ is str else None, rid if rid.__class__ is str else None
        )

    def filter_batch(self) -> None:
        """Pass the batch's request_ids through the filter; remember the candidates."""
        if self.rids:
            for rid in self.filter.add(self.rids):
                self.candidates[rid] = None
            self.rids.clear()
