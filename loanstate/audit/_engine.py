"""The audit's checking engine: one pass over the records (fast path, slow path), then confirming duplicates.

Every record first meets :func:`_fast_path`, which accepts in a few C-level
operations the common record: well formed, legal, continuing its loan's chain
forward in time. Anything it doubts goes to :func:`_slow_path`, which judges
the record in full and says what is wrong. request_ids go to the
:class:`~loanstate.audit._bloom.RequestIdFilter` a batch at a time; candidate
duplicates are confirmed exactly by a second, narrower pass (:func:`_confirm`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timezone
from typing import Any, Final

import attrs

from loanstate._errors import InvalidConfiguration
from loanstate._events import _REQUEST_ID, _is_text, _text_problem
from loanstate._machine import LoanMachine, default_machine
from loanstate.audit._bloom import DEFAULT_BLOOM_BITS, RequestIdFilter
from loanstate.audit._fast import fast_path
from loanstate.audit._read import Bad, Batch, InputFormat, ProgressCallback, Source, records_of, source_of
from loanstate.audit._report import AuditFinding, AuditSummary, short
from loanstate.audit._state import Loan, Run
from loanstate.audit._times import OUT_OF_RANGE, parse_offset, read_time

__all__ = ["HistoryAudit"]

_OPTIONAL: Final = ("customer_id", "institution_loan_no")


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
        run = Run(self.machine, RequestIdFilter(self.bloom_bits), self.assume_offset)
        for first, batch in self._source(self.on_progress, None):
            done = 0
            while done < len(batch):
                done = fast_path(run, batch, done, first)
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


def _slow_path(run: Run, line: int, record: object) -> Iterator[AuditFinding]:
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


def _status_findings(run: Run, line: int, record: Mapping[str, Any]) -> Iterator[AuditFinding]:
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
    run: Run, line: int, record: Mapping[str, Any], moment: datetime, *, utc: datetime, previous: Loan
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


def _confirm(run: Run, batches: Iterator[Batch]) -> Iterator[AuditFinding]:
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
