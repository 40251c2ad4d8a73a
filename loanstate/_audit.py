"""Auditing an existing history of status changes, streamed in bounded memory.

A history is a file of change records, one per line (JSON Lines) or one per
row (CSV with a header), carrying the fields of :class:`~loanstate.LoanChangeEvent`
(``loan_apply_no``, ``before_status``, ``after_status``, ``change_time``,
``request_id``, optional ``customer_id`` and ``institution_loan_no``); other
fields and columns are ignored, so a database export can be audited as it is.
``change_time`` is ISO 8601 with a UTC offset (``2024-01-01T08:00:00+08:00``).
Loans may be interleaved in any order.

:class:`HistoryAudit` reads the records once, in file order, and reports an
:class:`AuditFinding` for each of:

``malformed``
    not JSON / not a CSV row of the header's width / not an object, or a field
    missing or invalid (every bad field is named);
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
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from loanstate._audit_read import (
    _REQUIRED,
    InputFormat,
    ProgressCallback,
    _Bad,
    _Batch,
    _csv_header,
    _CsvSource,
    _guess_format,
    _JsonlSource,
    _records,
    _sniff,
)
from loanstate._audit_read import MAX_RECORD_BYTES as MAX_RECORD_BYTES  # noqa: PLC0414 - re-exported
from loanstate._audit_read import SNIFF_BYTES as SNIFF_BYTES  # noqa: PLC0414 - re-exported
from loanstate._events import _REQUEST_ID, _is_text, _text_problem
from loanstate._machine import LoanMachine, default_machine

__all__ = ["FINDING_KINDS", "AuditFinding", "AuditSummary", "HistoryAudit"]

#: Every kind of finding, in the order reports list them.
FINDING_KINDS: Final = (
    "malformed",
    "unknown-status",
    "illegal-pair",
    "chain-break",
    "time-backwards",
    "duplicate-request-id",
)
_NOTHING: Final[frozenset[str]] = frozenset()
# Stands for a change_time that parses but leaves the datetime range once in UTC.
_OUT_OF_RANGE: Final = object()
#: Default Bloom filter size in bits (32 MiB): about 5e-5 false candidates per record at 1M records.
DEFAULT_BLOOM_BITS: Final = 1 << 28

_OPTIONAL: Final = ("customer_id", "institution_loan_no")


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


# A source (such as the file readers in loanstate._audit_read) yields batches
# of records (see _Batch). It is called again for the confirming pass with the
# candidate request_ids: it may then yield only the records that can carry one
# of them (a superset is fine).
_Source = Callable[[ProgressCallback | None, Collection[str] | None], Iterator[_Batch]]


@attrs.define
class HistoryAudit:
    """An audit of one history against one lifecycle.

    Build it with :meth:`of_file` (refuses a missing, unreadable, binary or
    mis-encoded file at once with :class:`~loanstate.UnreadableInput`) or
    :meth:`of_records`; iterate :meth:`findings`; then read :attr:`summary`.
    """

    _source: _Source = attrs.field(alias="source")
    machine: LoanMachine = attrs.field(factory=default_machine)
    name: str | None = None
    bloom_bits: int = DEFAULT_BLOOM_BITS
    on_progress: ProgressCallback | None = None
    summary: AuditSummary | None = attrs.field(default=None, init=False)

    @classmethod
    def of_file(
        cls,
        path: str | os.PathLike[str],
        *,
        machine: LoanMachine | None = None,
        input_format: InputFormat | None = None,
        encoding: str = "utf-8",
        on_progress: ProgressCallback | None = None,
        bloom_bits: int = DEFAULT_BLOOM_BITS,
    ) -> HistoryAudit:
        """Prepare an audit of a JSONL or CSV file (format from the suffix, else sniffed).

        The file is opened and its first chunk examined now, so a bad file fails
        here, before any work: :class:`~loanstate.UnreadableInput` says why.
        """
        name = os.fspath(path)
        head = _sniff(name, encoding)
        fmt = input_format or _guess_format(name, head)
        if fmt == "csv":
            header = _csv_header(name, head, encoding)
            source: _Source = _CsvSource(name, encoding, header)
        else:
            source = _JsonlSource(name, encoding)
        return cls(source, machine or default_machine(), name, bloom_bits, on_progress)

    @classmethod
    def of_records(
        cls,
        records: Sequence[object],
        *,
        machine: LoanMachine | None = None,
        bloom_bits: int = DEFAULT_BLOOM_BITS,
    ) -> HistoryAudit:
        """Prepare an audit of records already in memory (mappings shaped like ``LoanChangeEvent.to_dict()``).

        A record's ``line`` in findings is its 1-based position.
        """

        def source(on_progress: ProgressCallback | None, wanted: Collection[str] | None) -> Iterator[_Batch]:
            return iter([(1, records)])

        return cls(source, machine or default_machine(), None, bloom_bits)

    def findings(self) -> Iterator[AuditFinding]:
        """Run the audit, yielding findings in file order (confirmed duplicates last).

        :attr:`summary` is set once the iterator is exhausted.
        """
        machine = self.machine
        canonical = {s: s for s in machine.statuses}
        table = {s: machine.allowed(s) for s in machine.statuses}
        # Per loan: its last after_status, the instant (naive UTC, so comparing is cheap), the line, the
        # time as written, and the optional fields (already checked, so a repeat needs no check).
        loans: dict[str, tuple[str, datetime, int, str, str | None, str | None]] = {}
        offsets: dict[str, timedelta] = {}
        offsets_get = offsets.get
        counts = dict.fromkeys(FINDING_KINDS, 0)
        # At most 2**19 blocks: the block index takes 19 of the hash's low 30 bits.
        blocks = min(1 << 19, max(1, 1 << (max(self.bloom_bits >> 9, 1) - 1).bit_length()))
        block_mask = blocks - 1
        bloom = bytearray(blocks << 6)
        loans_get = loans.get
        candidates: dict[str, None] = {}
        records = 0
        text_ok = _is_text
        rid_ok = _REQUEST_ID.fullmatch
        parse_time = datetime.fromisoformat

        table_get = table.get
        required = operator.itemgetter(*_REQUIRED)
        fast = 0

        for first, batch in self._source(self.on_progress, None):
            line = first - 1
            for record in batch:
                line += 1
                # The fast path: a well-formed, legal record that continues its loan's
                # chain forward in time. Any doubt (a missing field, a wrong type, an
                # unknown status...) raises or fails a test, and the full checks below
                # decide. Nothing is written until every test has passed.
                try:
                    fields: Any = record
                    loan, before, after, raw_time, rid = required(fields)
                    # "...+08:00": the naive part parses fast and compares fast once
                    # shifted to UTC (aware datetimes of distinct tzinfos compare slowly).
                    suffix = raw_time[-6:]
                    offset = offsets_get(suffix)
                    if offset is None:
                        offset = _learn_offset(offsets, suffix)
                    utc = parse_time(raw_time[:-6]) - offset
                    previous = loans_get(loan)
                    customer_id = fields.get("customer_id")
                    institution_loan_no = fields.get("institution_loan_no")
                    if (
                        after in table_get(before, _NOTHING)
                        and rid_ok(rid) is not None
                        and len(raw_time) > 16  # a date alone ("2024-01-04+08:00") is not a date-time
                        and utc.tzinfo is None
                        and (
                            (previous is not None and previous[0] == before and utc >= previous[1])
                            or (previous is None and text_ok(loan))
                        )
                        # The optional fields usually repeat the loan's previous values, already checked.
                        and (
                            customer_id is None
                            or (previous is not None and customer_id == previous[4])
                            or text_ok(customer_id)
                        )
                        and (
                            institution_loan_no is None
                            or (previous is not None and institution_loan_no == previous[5])
                            or text_ok(institution_loan_no)
                        )
                    ):
                        # The Bloom filter (see below), inlined: this is the hot path.
                        h = hash(rid)
                        lo = h & 0x3FFFFFFF
                        hi = (h >> 32) & 0x3FFFFFFF
                        o1 = ((lo & block_mask) << 6) | ((lo >> 19) & 63)
                        o2 = (o1 & ~63) | (hi & 63)
                        o3 = (o1 & ~63) | ((hi >> 9) & 63)
                        b1 = 1 << ((lo >> 25) & 7)
                        b2 = 1 << ((hi >> 6) & 7)
                        b3 = 1 << ((hi >> 15) & 7)
                        if bloom[o1] & b1 and bloom[o2] & b2 and bloom[o3] & b3:
                            candidates[rid] = None
                        else:
                            bloom[o1] |= b1
                            bloom[o2] |= b2
                            bloom[o3] |= b3
                        loans[loan] = (canonical[after], utc, line, raw_time, customer_id, institution_loan_no)
                        fast += 1
                        continue
                except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
                    pass  # OverflowError: an instant near year 1 or 9999 that leaves the range once in UTC
                if record.__class__ is not dict:
                    if record is None:
                        continue
                    if isinstance(record, _Bad):
                        records += 1
                        counts["malformed"] += 1
                        yield AuditFinding("malformed", line, record.reason)
                        continue
                    if not isinstance(record, Mapping):
                        records += 1
                        counts["malformed"] += 1
                        yield AuditFinding("malformed", line, f"not an object: {_short(record)}")
                        continue
                records += 1
                get: Callable[[str], Any] = record.get
                loan = get("loan_apply_no")
                before = get("before_status")
                after = get("after_status")
                moment = get("change_time")
                rid = get("request_id")

                # request_ids go into the filter even on a malformed record, so the
                # confirming pass (which reads only request_ids) agrees with this one.
                rid_valid = rid.__class__ is str and rid_ok(rid) is not None
                if rid_valid:
                    # A blocked Bloom filter: three bits in one 64-byte block (one cache
                    # miss), placed by two 30-bit slices of the hash so the arithmetic
                    # stays on small ints. About 1e-6 false candidates per record at a
                    # million request_ids; the confirming pass removes them anyway.
                    h = hash(rid)
                    lo = h & 0x3FFFFFFF
                    hi = (h >> 32) & 0x3FFFFFFF
                    o1 = ((lo & block_mask) << 6) | ((lo >> 19) & 63)
                    o2 = (o1 & ~63) | (hi & 63)
                    o3 = (o1 & ~63) | ((hi >> 9) & 63)
                    b1 = 1 << ((lo >> 25) & 7)
                    b2 = 1 << ((hi >> 6) & 7)
                    b3 = 1 << ((hi >> 15) & 7)
                    if bloom[o1] & b1 and bloom[o2] & b2 and bloom[o3] & b3:
                        candidates[rid] = None
                    else:
                        bloom[o1] |= b1
                        bloom[o2] |= b2
                        bloom[o3] |= b3

                known_before = before.__class__ is str and before in canonical
                known_after = after.__class__ is str and after in canonical
                if moment.__class__ is str:
                    try:
                        moment = parse_time(moment)
                    except ValueError:
                        moment = None  # reported below, from the raw value
                if isinstance(moment, datetime) and moment.utcoffset() is not None:
                    try:
                        utc = moment.astimezone(UTC).replace(tzinfo=None)
                    except OverflowError:
                        moment = _OUT_OF_RANGE  # reported below, from the raw value
                customer_id = get("customer_id")
                institution_loan_no = get("institution_loan_no")
                # A loan already on record has a valid loan_apply_no: skip checking it again.
                previous = loans_get(loan) if loan.__class__ is str else None
                if not (
                    known_before
                    and known_after
                    and rid_valid
                    and (previous is not None or (loan.__class__ is str and text_ok(loan)))
                    and moment.__class__ is datetime
                    and moment.utcoffset() is not None
                ) or not (
                    (customer_id is None or (customer_id.__class__ is str and text_ok(customer_id)))
                    and (
                        institution_loan_no is None
                        or (institution_loan_no.__class__ is str and text_ok(institution_loan_no))
                    )
                ):
                    bad = _field_problems(record, canonical, moment)
                    if bad:
                        counts["malformed"] += 1
                        yield AuditFinding(
                            "malformed",
                            line,
                            "; ".join(f"{k}: {v}" for k, v in bad.items()),
                            loan if loan.__class__ is str else None,
                            rid if rid_valid else None,
                        )
                        continue
                # From here every field is well formed (statuses may be unknown), and utc is set.
                if not (known_before and known_after):
                    unknown = [
                        f"{name} {value!r}"
                        for name, value, known in (
                            ("before_status", before, known_before),
                            ("after_status", after, known_after),
                        )
                        if not known
                    ]
                    counts["unknown-status"] += 1
                    yield AuditFinding(
                        "unknown-status",
                        line,
                        f"unknown status: {', '.join(unknown)} (known: {', '.join(sorted(canonical))})",
                        loan,
                        rid,
                    )
                elif after not in table[before]:
                    why = "not a change (same status)" if before == after else "not a legal transition"
                    options = ", ".join(sorted(table[before])) or "none (terminal)"
                    counts["illegal-pair"] += 1
                    yield AuditFinding(
                        "illegal-pair",
                        line,
                        f"{before!r} -> {after!r}: {why}; allowed after {before!r}: {options}",
                        loan,
                        rid,
                    )
                if previous is not None:
                    prev_after, prev_utc, prev_line, prev_text, _, _ = previous
                    if known_before and before != prev_after:
                        counts["chain-break"] += 1
                        yield AuditFinding(
                            "chain-break",
                            line,
                            f"loan {loan!r} changes from {before!r}, but its previous change "
                            f"(line {prev_line}) left it {prev_after!r}",
                            loan,
                            rid,
                        )
                    if utc < prev_utc:
                        counts["time-backwards"] += 1
                        yield AuditFinding(
                            "time-backwards",
                            line,
                            f"loan {loan!r} changes at {moment.isoformat()}, before its previous change "
                            f"(line {prev_line}) at {prev_text}",
                            loan,
                            rid,
                        )
                loans[loan] = (
                    canonical.get(after, after),
                    utc,
                    line,
                    moment.isoformat(),
                    get("customer_id"),
                    get("institution_loan_no"),
                )

        if candidates:
            first_line: dict[str, tuple[int, str | None]] = {}
            for line, record in _records(self._source(self.on_progress, candidates)):
                if not isinstance(record, Mapping):
                    continue
                rid = record.get("request_id")
                if rid.__class__ is not str or rid not in candidates:
                    continue
                loan = record.get("loan_apply_no")
                loan = loan if loan.__class__ is str else None
                seen = first_line.get(rid)
                if seen is None:
                    first_line[rid] = (line, loan)
                    continue
                counts["duplicate-request-id"] += 1
                other = f" (loan {seen[1]!r})" if seen[1] is not None and seen[1] != loan else ""
                yield AuditFinding(
                    "duplicate-request-id",
                    line,
                    f"request_id {rid!r} was already used at line {seen[0]}{other}",
                    loan,
                    rid,
                )
        self.summary = AuditSummary(self.name, records + fast, len(loans), counts)


def _learn_offset(offsets: dict[str, timedelta], suffix: str) -> timedelta:
    """The UTC offset an ISO 8601 suffix like ``+08:00`` names (remembered); ValueError if it is not one."""
    if len(suffix) != 6 or suffix[0] not in "+-" or suffix[3] != ":" or not (suffix[1:3] + suffix[4:]).isdigit():
        raise ValueError(suffix)
    offset = timedelta(hours=int(suffix[1:3]), minutes=int(suffix[4:]))
    if offset >= timedelta(hours=24):
        raise ValueError(suffix)
    offsets[suffix] = -offset if suffix[0] == "-" else offset
    return offsets[suffix]


def _field_problems(record: Mapping[str, Any], canonical: Mapping[str, str], moment: object) -> dict[str, str]:
    """Every malformed field of a record (unknown but well-formed statuses are not malformed)."""
    bad: dict[str, str] = {}
    for name in ("loan_apply_no", "before_status", "after_status"):
        value = record.get(name)
        if value is None:
            bad[name] = "is required"
        elif not (value.__class__ is str and value in canonical) and (not _is_text(value)):
            bad[name] = _text_problem(value) or "is invalid"
    raw_time = record.get("change_time")
    if raw_time is None:
        bad["change_time"] = "is required"
    elif moment is _OUT_OF_RANGE:
        bad["change_time"] = f"is out of range once converted to UTC: {_short(raw_time)}"
    elif not isinstance(moment, datetime):
        bad["change_time"] = f"must be an ISO 8601 date-time with a UTC offset, got {_short(raw_time)}"
    elif moment.utcoffset() is None:
        bad["change_time"] = f"has no UTC offset: {_short(raw_time)} (write it like 2024-01-01T08:00:00+08:00)"
    rid = record.get("request_id")
    if rid is None:
        bad["request_id"] = "is required"
    elif rid.__class__ is not str or _REQUEST_ID.fullmatch(rid) is None:
        bad["request_id"] = f"must be 1-64 characters of [A-Za-z0-9_-], got {_short(rid)}"
    for name in _OPTIONAL:
        value = record.get(name)
        if value is not None and (not _is_text(value)):
            bad[name] = _text_problem(value) or "is invalid"
    return bad


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
