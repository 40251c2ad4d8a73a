"""The audit's fast path: accepting plain records without a word, in a few C-level operations each.

A *plain* record is well formed, legal, and continues its loan's chain
forward in time. Any doubt at all (a missing field, a wrong type, an unknown
status...) raises or fails a test and stops the fast path; the slow path then
judges that record and says what is wrong. Nothing is written for a record
until every test has passed.

(Checking whole batches column-wise with ``map`` and set operations was
measured too: the extra tuples and the splitting needed when a loan repeats
in a batch made it slower than this loop.)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from loanstate._events import _REQUEST_ID, _is_text
from loanstate.audit._read import REQUIRED
from loanstate.audit._state import Run
from loanstate.audit._times import parse_offset

__all__ = ["fast_path"]

_NOTHING: Final[frozenset[str]] = frozenset()
_required: Final = operator.itemgetter(*REQUIRED)
# What a record that is not plain can raise; the slow path then explains.
# OverflowError: an instant near year 1 or 9999 that leaves the range once in UTC.
_DOUBT: Final = (LookupError, TypeError, ValueError, AttributeError, OverflowError)


def fast_path(run: Run, batch: Sequence[Any], start: int, first_line: int) -> int:
    """Accept plain records from ``batch[start]`` on; the index of the first it doubts (or the batch's length)."""
    loans = run.loans
    loans_get = loans.get
    table_get = run.table.get
    canonical = run.canonical
    offsets_get = run.offsets.get
    naive = run.naive
    rids_append = run.rids.append
    text_ok = _is_text
    parse_time = datetime.fromisoformat
    required = _required
    index = start
    try:
        for index in range(start, len(batch)):
            fields = batch[index]
            loan, before, after, raw_time, rid = required(fields)
            if len(raw_time) == 19:  # the API's own "2024-01-01 08:00:00" (GMT+8), or an assumed offset
                utc = parse_time(raw_time) - naive[raw_time[4:17:3]]
            else:
                # "...+08:00": the naive part parses fast and compares fast once
                # shifted to UTC (aware datetimes of distinct tzinfos compare slowly).
                offset = offsets_get(raw_time[-6:])
                if offset is None:
                    offset = _learn_offset(run.offsets, raw_time[-6:])
                utc = parse_time(raw_time[:-6]) - offset
            previous = loans_get(loan)
            customer_id = fields.get("customer_id")
            institution_loan_no = fields.get("institution_loan_no")
            if not (
                after in table_get(before, _NOTHING)
                and (rid.isalnum() or _REQUEST_ID.fullmatch(rid) is not None)
                and rid.isascii()
                and len(rid) <= 64
                and raw_time[10] in "T "  # a date alone ("2024-01-04+08:00") is not a date-time
                and utc.tzinfo is None
                and (
                    (previous is not None and previous[0] == before and utc >= previous[1])
                    or (previous is None and text_ok(loan))
                )
                # The optional fields usually repeat the loan's previous values, already checked.
                and (
                    customer_id is None or (previous is not None and customer_id == previous[4]) or text_ok(customer_id)
                )
                and (
                    institution_loan_no is None
                    or (previous is not None and institution_loan_no == previous[5])
                    or text_ok(institution_loan_no)
                )
            ):
                break
            rids_append(rid)
            loans[loan] = (canonical[after], utc, first_line + index, raw_time, customer_id, institution_loan_no)
        else:
            index = len(batch)
    except _DOUBT:
        pass
    run.records += index - start
    return index


def _learn_offset(offsets: dict[str, timedelta], suffix: str) -> timedelta:
    """The UTC offset an ISO 8601 suffix like ``+08:00`` names (remembered); ValueError if it is not one."""
    offsets[suffix] = parse_offset(suffix)
    return offsets[suffix]
