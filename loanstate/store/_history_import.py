"""Importing the changes loans went through before loanstate: :meth:`loanstate.SqlStore.import_history`.

The events were already notified to the platform, so they are written as
history rows and as outbox rows already ``delivered`` (never sent again), with
their own request_ids. Each loan's events are read whole first (a loan's
changes may be spread over the file), checked (fields, legal pairs, a chain
from one to the next, request_ids used once), then written in one
transaction per batch of loans: a loan is all or nothing. Memory grows with
the file: split a very large history by loan.

Against what the database already holds, a loan's events are:

* already there (same request_id, same content, in the same order at the end
  of the loan's history): *unchanged*, so the same file can be imported again;
* new: appended with the next sequences, the loan opened at the first event's
  ``before_status`` (at its ``change_time``) when it is not open yet, or its
  status checked against that ``before_status`` when it is;
* anything else (a request_id used for different content, a loan whose
  history moved past or differs): a *conflict*, with the line and the reason,
  and none of the loan's events are written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loanstate._errors import IllegalTransition, InvalidConfiguration, InvalidEvent
from loanstate._events import FIELDS, LoanChangeEvent
from loanstate._machine import LoanMachine
from loanstate.audit._read import Bad
from loanstate.audit._times import OUT_OF_RANGE, read_time
from loanstate.store import _schema as schema
from loanstate.store._changes import ChangeWriter
from loanstate.store._dialects import retrying
from loanstate.store._import import ImportProblem

__all__ = ["DEFAULT_HISTORY_BATCH", "HistoryImportReport", "import_history"]

#: Loans written per transaction unless told otherwise.
DEFAULT_HISTORY_BATCH: Final = 200
# Keys per IN (...) list: bound parameters stay well under every engine's limit.
_CHUNK: Final = 500
_H = schema.history
_L = schema.loans


class _Store(Protocol):
    """What the import needs of a :class:`~loanstate.SqlStore` (named so, this module imports no store)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def machine(self) -> LoanMachine: ...

    def now(self) -> datetime: ...


@attrs.frozen
class HistoryImportReport:
    """What a history import did: events written, events already there, loans opened, and every problem.

    A loan with any problem has none of its events written; ``line`` is the
    record's line in the file, or its 1-based position in the iterable.
    """

    imported: int
    unchanged: int
    opened: int
    conflicts: tuple[ImportProblem, ...]
    invalid: tuple[ImportProblem, ...]

    @property
    def clean(self) -> bool:
        """Whether every event was imported or already there (no conflict, no invalid record)."""
        return not (self.conflicts or self.invalid)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "imported": self.imported,
            "unchanged": self.unchanged,
            "opened": self.opened,
            "conflicts": [p.to_dict() for p in self.conflicts],
            "invalid": [p.to_dict() for p in self.invalid],
        }


# One loan's events in file order, each with its line.
_Loan = list[tuple[int, LoanChangeEvent]]


@attrs.define
class _Tally:
    imported: int = 0
    unchanged: int = 0
    opened: int = 0
    conflicts: list[ImportProblem] = attrs.Factory(list)
    invalid: list[ImportProblem] = attrs.Factory(list)

    def report(self) -> HistoryImportReport:
        by_line: Callable[[ImportProblem], int] = lambda p: p.line  # noqa: E731
        conflicts, invalid = sorted(self.conflicts, key=by_line), sorted(self.invalid, key=by_line)
        return HistoryImportReport(self.imported, self.unchanged, self.opened, tuple(conflicts), tuple(invalid))


def import_history(
    store: _Store,
    numbered: Iterable[tuple[int, object]],
    *,
    batch_size: int = DEFAULT_HISTORY_BATCH,
    on_batch: Callable[[HistoryImportReport], None] | None = None,
) -> HistoryImportReport:
    """Import ``(line, record)`` pairs of past changes, ``batch_size`` loans per transaction; what happened.

    A record is a :class:`~loanstate.LoanChangeEvent`, a mapping of its
    fields (``change_time`` an aware datetime, ISO 8601 with an offset, or the
    API's ``yyyy-MM-dd HH:mm:ss`` in GMT+8; other keys ignored), or a reader's
    ``Bad``. After each committed batch ``on_batch`` gets the report so far.
    """
    if batch_size.__class__ is not int or batch_size < 1:
        raise InvalidConfiguration("batch_size", batch_size, "must be a positive int")
    tally = _Tally()
    writer = ChangeWriter.for_engine(store.engine, store.machine)  # the statements a transition writes with
    loans = _read_loans(store.machine, numbered, tally)
    names = list(loans)
    for start in range(0, len(names), batch_size):
        batch = {name: loans[name] for name in names[start : start + batch_size]}
        _write_with_retries(store, writer, batch, tally)
        if on_batch is not None:
            on_batch(tally.report())
    return tally.report()


def _read_loans(machine: LoanMachine, numbered: Iterable[tuple[int, object]], tally: _Tally) -> dict[str, _Loan]:
    """Every valid loan's events; a loan with a bad record, a chain break or a reused request_id is left out whole."""
    loans: dict[str, _Loan] = {}
    spoiled: set[str] = set()
    used: dict[str, int] = {}
    for line, record in numbered:
        if record is None:
            continue
        event = _event_of(record, machine)
        if isinstance(event, ImportProblem):
            tally.invalid.append(attrs.evolve(event, line=line))
            if event.loan_apply_no is not None:
                spoiled.add(event.loan_apply_no)
            continue
        loan = event.loan_apply_no
        reason = _file_problem(event, loans.get(loan), used)
        if reason is not None:
            tally.invalid.append(ImportProblem("invalid", line, f"{reason}; loan {loan!r} not imported", loan))
            spoiled.add(loan)
            continue
        used[event.request_id] = line
        loans.setdefault(loan, []).append((line, event))
    return {name: events for name, events in loans.items() if name not in spoiled}


def _file_problem(event: LoanChangeEvent, earlier: _Loan | None, used: Mapping[str, int]) -> str | None:
    """Why ``event`` cannot follow the loan's earlier events of the file (``None`` when it can)."""
    if event.request_id in used:
        return f"request_id {event.request_id!r} was already used at line {used[event.request_id]}"
    if not earlier:
        return None
    line, last = earlier[-1]
    if event.before_status != last.after_status:
        left = last.after_status
        return f"changes from {event.before_status!r}, but its previous change (line {line}) left it {left!r}"
    for name in ("customer_id", "institution_loan_no"):
        if getattr(event, name) != getattr(last, name):
            return f"{name} {getattr(event, name)!r} differs from line {line}'s {getattr(last, name)!r}"
    return None


def _event_of(record: object, machine: LoanMachine) -> LoanChangeEvent | ImportProblem:
    """The event a record describes, or an ``invalid`` problem (line 0, set by the caller) naming every bad field."""
    if isinstance(record, LoanChangeEvent):
        record = record.to_dict() | {"change_time": record.change_time}  # checked against the machine below
    if isinstance(record, Bad):
        return ImportProblem("invalid", 0, record.reason)
    if not isinstance(record, Mapping):
        return ImportProblem("invalid", 0, f"not an object: {type(record).__name__}")
    values: dict[str, object] = {}
    for name in FIELDS:
        value = record.get(name)
        if value is not None and value != "":  # an empty CSV cell is an absent field
            values[name] = value
    loan = values.get("loan_apply_no")
    named = loan if isinstance(loan, str) else None
    if "change_time" in values:
        moment = read_time(values["change_time"], None)
        if moment is OUT_OF_RANGE:
            return ImportProblem("invalid", 0, "change_time: is out of range once converted to UTC", named)
        if isinstance(moment, str):
            return ImportProblem("invalid", 0, f"change_time: {moment.replace('--assume-offset', 'an offset')}", named)
        values["change_time"] = moment
    try:
        return LoanChangeEvent.from_dict(values, machine=machine)
    except (InvalidEvent, IllegalTransition) as exc:
        return ImportProblem("invalid", 0, str(exc), named)


def _write_with_retries(store: _Store, writer: ChangeWriter, batch: dict[str, _Loan], tally: _Tally) -> None:
    # Another writer may open or change one of the loans between our read and our write:
    # the batch rolls back whole, and the next try reads it again and judges it.
    for tries_left in reversed(range(3)):
        try:
            retrying(lambda: _write_batch(store, writer, batch, tally))
            return
        except sa.exc.IntegrityError:
            if tries_left == 0:
                raise


@attrs.define
class _Plan:
    """What one transaction writes, counted only once it commits."""

    new_loans: list[dict[str, Any]] = attrs.Factory(list)
    moves: list[tuple[str, str, int, int]] = attrs.Factory(list)
    events: list[tuple[LoanChangeEvent, int]] = attrs.Factory(list)
    unchanged: int = 0
    conflicts: list[ImportProblem] = attrs.Factory(list)


def _write_batch(store: _Store, writer: ChangeWriter, batch: dict[str, _Loan], tally: _Tally) -> None:
    """One transaction: read the batch's loans and their history, judge each loan, write the new events."""
    now = store.now()
    plan = _Plan()
    with store.engine.begin() as conn:
        rows, known, by_rid = _read_state(conn, batch)
        for name, events in batch.items():
            _judge(plan, events, rows.get(name), known.get(name, []), by_rid, now)
        if plan.new_loans:
            conn.execute(_L.insert(), plan.new_loans)
        for loan, status, old, new in plan.moves:
            if not writer.move(conn, loan, status=status, old=old, new=new, now=now):
                raise sa.exc.IntegrityError("moved by another writer", None, Exception(loan))  # try again
        writer.write_delivered(conn, plan.events, now)
    tally.imported += len(plan.events)
    tally.unchanged += plan.unchanged
    tally.opened += len(plan.new_loans)
    tally.conflicts.extend(plan.conflicts)


def _read_state(
    conn: Connection, batch: Mapping[str, _Loan]
) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any]]:
    """The batch's loan rows, their history rows (by sequence), and history rows carrying the file's request_ids."""
    names = list(batch)
    rids = [event.request_id for events in batch.values() for _, event in events]
    rows: dict[str, Any] = {}
    known: dict[str, list[Any]] = {}
    by_rid: dict[str, Any] = {}
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        for row in conn.execute(sa.select(_L).where(_L.c.loan_apply_no.in_(chunk))):
            rows[row.loan_apply_no] = row
        query = sa.select(_H).where(_H.c.loan_apply_no.in_(chunk)).order_by(_H.c.loan_apply_no, _H.c.sequence)
        for row in conn.execute(query):
            known.setdefault(row.loan_apply_no, []).append(row)
    for start in range(0, len(rids), _CHUNK):
        query = sa.select(_H).where(_H.c.request_id.in_(rids[start : start + _CHUNK]))
        by_rid.update({row.request_id: row for row in conn.execute(query)})
    return rows, known, by_rid


def _same(row: Any, event: LoanChangeEvent) -> bool:
    """Whether a history row holds exactly ``event`` (the instant and the offset it was given in)."""
    offset = event.change_time.utcoffset()
    return bool(
        (row.loan_apply_no, row.before_status, row.after_status, row.customer_id, row.institution_loan_no)
        == (event.loan_apply_no, event.before_status, event.after_status, event.customer_id, event.institution_loan_no)
        and row.change_time == event.change_time
        and offset is not None
        and row.utc_offset_seconds == int(offset.total_seconds())
    )


def _judge(  # noqa: PLR0917 - one loan's whole situation
    plan: _Plan, events: _Loan, loan: Any, known: Sequence[Any], by_rid: Mapping[str, Any], now: datetime
) -> None:
    """Add the loan's new events to ``plan``, or count them unchanged, or record the conflict that stops them."""
    name = events[0][1].loan_apply_no

    def conflict(line: int, reason: str) -> None:
        plan.conflicts.append(ImportProblem("conflict", line, f"{reason}; loan {name!r} not imported", name))

    done = _already_there(events, by_rid)
    if isinstance(done, tuple):
        return conflict(*done)
    last_sequence = known[-1].sequence if known else 0
    fresh = events[done:]
    if not fresh:
        plan.unchanged += done
        return None
    if done and by_rid[events[done - 1][1].request_id].sequence != last_sequence:
        line = fresh[0][0]
        return conflict(line, f"the loan's history moved past the previous line (now at sequence {last_sequence})")
    first_line, first = fresh[0]
    if loan is None:
        plan.new_loans.append(
            {
                "loan_apply_no": name,
                "status": fresh[-1][1].after_status,
                "version": len(fresh),
                "customer_id": first.customer_id,
                "institution_loan_no": first.institution_loan_no,
                "opened_at": first.change_time,
                "updated_at": now,
            }
        )
    else:
        if loan.status != first.before_status:
            start = first.before_status
            return conflict(first_line, f"the loan is {loan.status!r} now, this change starts from {start!r}")
        if (loan.customer_id, loan.institution_loan_no) != (first.customer_id, first.institution_loan_no):
            identity = f"customer_id {loan.customer_id!r}, institution_loan_no {loan.institution_loan_no!r}"
            return conflict(first_line, f"the loan is open with {identity}, which this change does not carry")
        if known and known[-1].change_time > first.change_time:
            moment = known[-1].change_time.isoformat()
            return conflict(first_line, f"the loan's history already has a later change (at {moment} UTC)")
        plan.moves.append((name, fresh[-1][1].after_status, loan.version, loan.version + len(fresh)))
        last_sequence = loan.version
    plan.unchanged += done
    plan.events.extend((event, last_sequence + i) for i, (_, event) in enumerate(fresh, start=1))
    return None


def _already_there(events: _Loan, by_rid: Mapping[str, Any]) -> int | tuple[int, str]:
    """How many of the loan's first events the history holds (same content, consecutive), or (line, conflict)."""
    done = 0
    for line, event in events:
        row = by_rid.get(event.request_id)
        if row is None:
            break
        if not _same(row, event):
            where = f"loan {row.loan_apply_no!r}, sequence {row.sequence}"
            return line, f"request_id {event.request_id!r} is already used for another change ({where})"
        if done and row.sequence != by_rid[events[0][1].request_id].sequence + done:
            return line, "the loan's history holds this change, but not right after the previous line's"
        done += 1
    for line, event in events[done:]:
        if event.request_id in by_rid:
            return line, f"request_id {event.request_id!r} is already in the history, but not after the line before"
    return done
