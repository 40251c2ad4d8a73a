"""What an audit reports: one :class:`AuditFinding` per problem, then an :class:`AuditSummary`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

__all__ = ["FINDING_KINDS", "AuditFinding", "AuditSummary"]

#: Every kind of finding, in the order reports list them.
FINDING_KINDS: Final = (
    "malformed",
    "unknown-status",
    "illegal-pair",
    "chain-break",
    "time-backwards",
    "duplicate-request-id",
)


@attrs.frozen
class AuditFinding:
    """One thing wrong in a history: which kind, at which line, and why.

    ``line`` is the 1-based line of the record in the file (for CSV, the line
    the row starts on; for in-memory records, the record's 1-based position).
    ``loan_apply_no`` and ``request_id`` are set when the record has them.
    """

    kind: str
    line: int
    message: str
    loan_apply_no: str | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (``None`` fields omitted)."""
        out: dict[str, object] = {"kind": self.kind, "line": self.line, "message": self.message}
        if self.loan_apply_no is not None:
            out["loan_apply_no"] = self.loan_apply_no
        if self.request_id is not None:
            out["request_id"] = self.request_id
        return out


@attrs.frozen
class AuditSummary:
    """What an audit saw: records read, distinct loans, findings per kind (every kind present)."""

    source: str | None
    records: int
    loans: int
    counts: Mapping[str, int]

    @property
    def findings(self) -> int:
        """How many findings in all."""
        return sum(self.counts.values())

    @property
    def clean(self) -> bool:
        """Whether the history has no finding at all."""
        return self.findings == 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "source": self.source,
            "records": self.records,
            "loans": self.loans,
            "findings": self.findings,
            "counts": dict(self.counts),
        }


def short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters so a huge bad value never makes a huge message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
