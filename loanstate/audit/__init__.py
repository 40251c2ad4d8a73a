"""Auditing an existing history of status changes, streamed in bounded memory.

A history is a file of change records, one per line (JSON Lines) or one per
row (CSV with a header), carrying the fields of :class:`~loanstate.LoanChangeEvent`
(``loan_apply_no``, ``before_status``, ``after_status``, ``change_time``,
``request_id``, optional ``customer_id`` and ``institution_loan_no``); other
fields and columns are ignored, so a database export can be audited as it is.
``change_time`` is ISO 8601 with a UTC offset (``2024-01-01T08:00:00+08:00``)
or the API's own ``2024-01-01 08:00:00`` (GMT+8, as ``to_top_param()`` writes
it); other offset-less forms need ``assume_offset``. Loans may be interleaved
in any order.

:class:`HistoryAudit` reads the records once, in file order, and reports an
:class:`AuditFinding` for each of:

``malformed``
    not JSON (or nested too deeply) / not a CSV row of the header's width / not
    an object, or a field missing or invalid (every bad field is named);
``unknown-status``
    a status the lifecycle does not declare;
``illegal-pair``
    two known statuses whose ``before -> after`` the lifecycle does not allow;
``chain-break``
    a change whose ``before_status`` is not what the same loan's previous change
    left it in;
``time-backwards``
    a change earlier than the same loan's previous change;
``duplicate-request-id``
    a ``request_id`` an earlier record already carries.

Memory does not grow with the number of records: it holds one small entry per
distinct loan (its last status and time) and a fixed-size Bloom filter of the
request_ids. A Bloom hit is only a *candidate* duplicate; when there are any,
a second pass over the file confirms them exactly, so false positives never
reach the report and duplicate findings follow all the others.

The package: ``_read`` (files to records), ``_times`` (change_time forms),
``_bloom`` (the request_id filter), ``_engine`` (the checks), ``_report``
(findings and the summary).
"""

from __future__ import annotations

from loanstate.audit._bloom import DEFAULT_BLOOM_BITS
from loanstate.audit._engine import HistoryAudit
from loanstate.audit._read import MAX_RECORD_BYTES, SNIFF_BYTES, InputFormat, ProgressCallback, check_encoding
from loanstate.audit._report import FINDING_KINDS, AuditFinding, AuditSummary
from loanstate.audit._times import parse_offset

__all__ = [
    "DEFAULT_BLOOM_BITS",
    "FINDING_KINDS",
    "MAX_RECORD_BYTES",
    "SNIFF_BYTES",
    "AuditFinding",
    "AuditSummary",
    "HistoryAudit",
    "InputFormat",
    "ProgressCallback",
    "check_encoding",
    "parse_offset",
]
