"""The audit's checking engine: one pass over the records (fast path, slow path), then confirming duplicates.

Every record first meets :func:`_fast_path`, which accepts in a few C-level
operations the common record: well formed, legal, continuing its loan's chain
forward in time. Anything it doubts goes to :func:`_slow_path`, which judges
the record in full and says what is wrong. request_ids go to the
:class:`~loanstate.audit._bloom.RequestIdFilter` a batch at a time; candidate
duplicates are confirmed exactly by a second, narrower pass (:func:`_confirm`).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import attrs

from loanstate._errors import InvalidConfiguration
from loanstate._events import _REQUEST_ID, _is_text, _text_problem
from loanstate._machine import LoanMachine, default_machine
from loanstate.audit._bloom import DEFAULT_BLOOM_BITS, RequestIdFilter
from loanstate.audit._read import REQUIRED, Bad, Batch, InputFormat, ProgressCallback, Source, records_of, source_of
from loanstate.audit._report import FINDING_KINDS, AuditFinding, AuditSummary, short
from loanstate.audit._times import API_FORM, API_OFFSET, OUT_OF_RANGE, parse_offset, read_time

__all__ = ["HistoryAudit"]

_NOTHING: Final[frozenset[str]] = frozenset()
_OPTIONAL: Final = ("customer_id", "institution_loan_no")
_required: Final = operator.itemgetter(*REQUIRED)
# What a record that is not well formed can raise on the fast path; the slow path then explains.
# OverflowError: an instant near year 1 or 9999 that leaves the range once in UTC.
_DOUBT: Final = (LookupError, TypeError, ValueError, AttributeError, OverflowError)

# Per loan: its last after_status, the instant (naive UTC, so comparing is cheap), the line, the time
# as written, and the optional fields (already checked, so a repeat needs no check).
_Loan = tuple[str, datetime, int, str, str | None, str | None]


@attrs.define
class _Run:
    """The state of one audit run: what the fast and slow paths read and update."""

    machine: LoanMachine
    filter: RequestIdFilter
    assume: timezone | None
    canonical: dict[str, str] = attrs.field(init=False)
    table: dict[str, frozenset[str]] = attrs.field(init=False)
    loans: dict[str, _Loan] = attrs.Factory(dict)
    # "+08:00" -> timedelta(hours=8), learnt as met; and the 19-character offset-less forms read.
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
            self.naive["--T::"] = self.assume.utcoffset(None)

    def finding(self, kind: str, line: int, message: str, loan: object = None, rid: object = None) -> AuditFinding:
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


@attrs.define
class HistoryAudit:
    """An audit of one history against one lifecycle.

    Build it with :meth:`of_file` (refuses a missing, unreadable, binary,
    non-regular or mis-encoded file at once with
    :class:`~loanstate.UnreadableInput`) or :meth:`of_records`; iterate
    :meth:`findings`; then read :attr:`summary`.
    """

    _source: Source = attrs.field(alias="source")
    machine: LoanMachine = attrs.field(factory=default_machine)
    name: str | None = None
    bloom_bits: int = DEFAULT_BLOOM_BITS
    on_progress: ProgressCallback | None = None
    assume_offset: timezone | None = None
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
        assume_offset: str | timezone | None = None,
    ) -> HistoryAudit:
        """Prepare an audit of a JSONL or CSV file (format from the suffix, else sniffed).

        The file is opened and its first chunk examined now, so a bad file fails
        here, before any work: :class:`~loanstate.UnreadableInput` says why.
        ``assume_offset`` (``"+08:00"``) is the offset of change_times written
        without one (the API's own ``yyyy-MM-dd HH:mm:ss`` is GMT+8 anyway).
        """
        assume = _assumed(assume_offset)
        name = os.fspath(path)
        source = source_of(name, encoding, input_format)
        return cls(source, machine or default_machine(), name, bloom_bits, on_progress, assume)

    @classmethod
    def of_records(
        cls,
        records: Sequence[object],
        *,
        machine: LoanMachine | None = None,
        bloom_bits: int = DEFAULT_BLOOM_BITS,
        assume_offset: str | timezone | None = None,
    ) -> HistoryAudit:
        """Prepare an audit of records already in memory (mappings shaped like ``LoanChangeEvent.to_dict()``).

        A record's ``line`` in findings is its 1-based position.
        """

        def source(on_progress: ProgressCallback | None, wanted: Collection[str] | None) -> Iterator[Batch]:
            return iter([(1, records)])

        return cls(source, machine or default_machine(), None, bloom_bits, assume_offset=_assumed(assume_offset))

    def findings(self) -> Iterator[AuditFinding]:
        """Run the audit, yielding findings in file order (confirmed duplicates last).

        :attr:`summary` is set once the iterator is exhausted.
        """
        run = _Run(self.machine, RequestIdFilter(self.bloom_bits), self.assume_offset)
        for first, batch in self._source(self.on_progress, None):
            done = 0
            while done < len(batch):
                done = _fast_path(run, batch, done, first)
                if done < len(batch):
                    yield from _slow_path(run, first + done, batch[done])
                    done += 1
            run.filter_batch()
        if run.candidates:
            yield from _confirm(run, self._source(self.on_progress, run.candidates))
        self.summary = AuditSummary(self.name, run.records, len(run.loans), run.counts)


def _assumed(offset: str | timezone | None) -> timezone | None:
    if offset is None or isinstance(offset, timezone):
        return offset
    if isinstance(offset, str):
        try:
            return timezone(parse_offset(offset))
        except ValueError as exc:
            raise InvalidConfiguration("assume_offset", short(offset), str(exc)) from None
    raise InvalidConfiguration("assume_offset", short(offset), "must be a str like '+08:00' or a timezone")


def _fast_path(run: _Run, batch: Sequence[Any], start: int, first_line: int) -> int:
    """Accept records from ``batch[start]`` on; return the index of the first it doubts (or the batch's length).

    A record is accepted when it is well formed, legal and continues its loan's
    chain forward in time. Any doubt (a missing field, a wrong type, an unknown
    status...) raises or fails a test, and the slow path decides. Nothing is
    written for a record until every test has passed.
    """
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


def _slow_path(run: _Run, line: int, record: object) -> Iterator[AuditFinding]:
    """Judge one record the fast path doubted, in full: every finding it deserves, then the loan's new state."""
    if record is None:
        return  # a blank line
    run.records += 1
    if isinstance(record, Bad):
        yield run.finding("malformed", line, record.reason)
        return
    if not isinstance(record, Mapping):
        yield run.finding("malformed", line, f"not an object: {short(record)}")
        return
    rid = record.get("request_id")
    # request_ids go into the filter even on a malformed record, so the
    # confirming pass (which reads only request_ids) agrees with this one.
    if rid.__class__ is str and _REQUEST_ID.fullmatch(rid) is not None:
        run.rids.append(rid)
    moment = read_time(record.get("change_time"), run.assume)
    bad = _field_problems(record, run.canonical, moment)
    if bad or not isinstance(moment, datetime):
        message = "; ".join(f"{k}: {v}" for k, v in bad.items())
        yield run.finding("malformed", line, message, record.get("loan_apply_no"), None if "request_id" in bad else rid)
        return
    loan: str = record["loan_apply_no"]
    yield from _status_findings(run, line, record)
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    previous = run.loans.get(loan)
    if previous is not None:
        yield from _chain_findings(run, line, record, moment, utc=utc, previous=previous)
    after: str = record["after_status"]
    customer_id, institution_loan_no = record.get("customer_id"), record.get("institution_loan_no")
    run.loans[loan] = (run.canonical.get(after, after), utc, line, moment.isoformat(), customer_id, institution_loan_no)


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
    elif moment is OUT_OF_RANGE:
        bad["change_time"] = f"is out of range once converted to UTC: {short(raw_time)}"
    elif isinstance(moment, str):
        bad["change_time"] = moment
    rid = record.get("request_id")
    if rid is None:
        bad["request_id"] = "is required"
    elif rid.__class__ is not str or _REQUEST_ID.fullmatch(rid) is None:
        bad["request_id"] = f"must be 1-64 characters of [A-Za-z0-9_-], got {short(rid)}"
    for name in _OPTIONAL:
        value = record.get(name)
        if value is not None and (not _is_text(value)):
            bad[name] = _text_problem(value) or "is invalid"
    return bad


def _status_findings(run: _Run, line: int, record: Mapping[str, Any]) -> Iterator[AuditFinding]:
    """unknown-status or illegal-pair, if the record's ``before -> after`` deserves one."""
    loan, before, after, rid = (
        record["loan_apply_no"],
        record["before_status"],
        record["after_status"],
        record["request_id"],
    )
    known_before, known_after = before in run.canonical, after in run.canonical
    if not (known_before and known_after):
        unknown = [
            f"{name} {value!r}"
            for name, value, known in (("before_status", before, known_before), ("after_status", after, known_after))
            if not known
        ]
        known = ", ".join(sorted(run.canonical))
        yield run.finding("unknown-status", line, f"unknown status: {', '.join(unknown)} (known: {known})", loan, rid)
    elif after not in run.table[before]:
        why = "not a change (same status)" if before == after else "not a legal transition"
        options = ", ".join(sorted(run.table[before])) or "none (terminal)"
        message = f"{before!r} -> {after!r}: {why}; allowed after {before!r}: {options}"
        yield run.finding("illegal-pair", line, message, loan, rid)


def _chain_findings(
    run: _Run, line: int, record: Mapping[str, Any], moment: datetime, *, utc: datetime, previous: _Loan
) -> Iterator[AuditFinding]:
    """chain-break and time-backwards against the loan's previous change."""
    loan, before, rid = record["loan_apply_no"], record["before_status"], record["request_id"]
    prev_after, prev_utc, prev_line, prev_text, _, _ = previous
    if before in run.canonical and before != prev_after:
        message = (
            f"loan {loan!r} changes from {before!r}, but its previous change (line {prev_line}) left it {prev_after!r}"
        )
        yield run.finding("chain-break", line, message, loan, rid)
    if utc < prev_utc:
        message = (
            f"loan {loan!r} changes at {moment.isoformat()}, before its previous change "
            f"(line {prev_line}) at {prev_text}"
        )
        yield run.finding("time-backwards", line, message, loan, rid)


def _confirm(run: _Run, batches: Iterator[Batch]) -> Iterator[AuditFinding]:
    """The second pass: each candidate request_id's first line, then a finding for every later one."""
    first_line: dict[str, tuple[int, str | None]] = {}
    for line, record in records_of(batches):
        if not isinstance(record, Mapping):
            continue
        rid = record.get("request_id")
        if rid.__class__ is not str or rid not in run.candidates:
            continue
        loan = record.get("loan_apply_no")
        loan = loan if loan.__class__ is str else None
        seen = first_line.get(rid)
        if seen is None:
            first_line[rid] = (line, loan)
            continue
        other = f" (loan {seen[1]!r})" if seen[1] is not None and seen[1] != loan else ""
        message = f"request_id {rid!r} was already used at line {seen[0]}{other}"
        yield run.finding("duplicate-request-id", line, message, loan, rid)
