"""Registering an existing loan book in bulk: :meth:`SqlStore.open_loans <loanstate.SqlStore.open_loans>`.

Loans are validated one by one and written a batch at a time, each batch its
own short transaction: one ``SELECT`` of the batch's loans that already exist,
then one ``executemany`` ``INSERT`` of the rest. A loan already open with the
same status and identity (``customer_id``, ``institution_loan_no``) is
*unchanged*, so an interrupted import can simply be run again; one open with a
different status or identity is a *conflict*, reported with the reason and
never overwritten. Opening is not a change: no history row, nothing sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from itertools import islice
from typing import Any, Final, Literal, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loanstate import _validate as v
from loanstate._machine import LoanMachine
from loanstate.audit._read import Bad
from loanstate.audit._times import OUT_OF_RANGE, read_time
from loanstate.store import _schema as schema
from loanstate.store._dialects import retrying


class _Store(Protocol):
    """What the import needs of a :class:`~loanstate.SqlStore` (named so, this module imports no store)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def machine(self) -> LoanMachine: ...

    def now(self) -> datetime: ...


__all__ = ["ImportProblem", "ImportReport", "LoanRecord", "import_loans"]

#: Loans written per transaction unless told otherwise.
DEFAULT_BATCH: Final = 1000
# Bound parameters per SELECT stay well under every engine's limit (SQLite: 32766).
_SELECT_CHUNK: Final = 500
_FIELDS: Final = ("loan_apply_no", "status", "opened_at", "customer_id", "institution_loan_no")


@attrs.frozen
class LoanRecord:
    """One loan of an existing book: its number, its current status, when it opened, its identity."""

    loan_apply_no: str
    status: str
    opened_at: datetime
    customer_id: str | None = None
    institution_loan_no: str | None = None


@attrs.frozen
class ImportProblem:
    """A record not imported: ``invalid`` (a bad field, or not a record) or ``conflict`` (open differently).

    ``line`` is the record's line in the file, or its 1-based position in the iterable.
    """

    kind: Literal["invalid", "conflict"]
    line: int
    reason: str
    loan_apply_no: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.reason}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (``loan_apply_no`` omitted when unknown)."""
        out: dict[str, object] = {"kind": self.kind, "line": self.line, "reason": self.reason}
        if self.loan_apply_no is not None:
            out["loan_apply_no"] = self.loan_apply_no
        return out


@attrs.frozen
class ImportReport:
    """What an import did: loans opened, loans already open the same way, and every record not imported."""

    opened: int
    unchanged: int
    conflicts: tuple[ImportProblem, ...]
    invalid: tuple[ImportProblem, ...]

    @property
    def clean(self) -> bool:
        """Whether every record was imported or already there (no conflict, no invalid record)."""
        return not (self.conflicts or self.invalid)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "opened": self.opened,
            "unchanged": self.unchanged,
            "conflicts": [p.to_dict() for p in self.conflicts],
            "invalid": [p.to_dict() for p in self.invalid],
        }


# A valid record, as the loans table's row (opened_at aware).
_Row = dict[str, Any]


@attrs.define
class _Tally:
    opened: int = 0
    unchanged: int = 0
    conflicts: list[ImportProblem] = attrs.Factory(list)
    invalid: list[ImportProblem] = attrs.Factory(list)

    def report(self) -> ImportReport:
        return ImportReport(self.opened, self.unchanged, tuple(self.conflicts), tuple(self.invalid))


def import_loans(
    store: _Store,
    numbered: Iterable[tuple[int, object]],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Open the loans of ``(line, record)`` pairs in batches; the report of what happened.

    A record is a :class:`LoanRecord`, a mapping with its fields
    (``opened_at`` an aware datetime, an ISO 8601 string with an offset, or the
    API's ``yyyy-MM-dd HH:mm:ss`` in GMT+8), or a reader's ``Bad``. After each
    committed batch ``on_batch`` gets the report so far.
    """
    if batch_size.__class__ is not int or batch_size < 1:
        from loanstate._errors import InvalidConfiguration

        raise InvalidConfiguration("batch_size", batch_size, "must be a positive int")
    tally = _Tally()
    rows = _valid_rows(store, numbered, tally)
    next_analyze = _FIRST_ANALYZE
    while batch := list(islice(rows, batch_size)):
        _write_with_retries(store, batch, tally)
        if tally.opened >= next_analyze and store.engine.dialect.name == "postgresql":
            _analyze(store.engine)
            next_analyze = 2 * tally.opened
        if on_batch is not None:
            on_batch(tally.report())
    return tally.report()


# PostgreSQL plans the check for loans already open from the table's statistics, and
# a table filled within minutes has none yet (autovacuum comes later): the planner
# takes it for tiny and scans it whole, so an import fell from 10,000 to under 500
# loans/s as the table grew. Statistics are refreshed each time the loans opened by
# this import double: a handful of ANALYZEs for a million loans.
_FIRST_ANALYZE: Final = 2000


def _analyze(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE {schema.loans.name}")


def _valid_rows(store: _Store, numbered: Iterable[tuple[int, object]], tally: _Tally) -> Iterator[tuple[int, _Row]]:
    statuses = store.machine.statuses
    for line, record in numbered:
        if record is None:
            continue
        row = _row_of(record, statuses)
        if isinstance(row, ImportProblem):
            tally.invalid.append(attrs.evolve(row, line=line))
        else:
            yield line, row


def _row_of(record: object, statuses: frozenset[str]) -> _Row | ImportProblem:
    """The loans-table row of a record, or an ``invalid`` problem (line 0, set by the caller) naming every bad field."""
    if isinstance(record, Bad):
        return ImportProblem("invalid", 0, record.reason)
    if isinstance(record, LoanRecord):
        values = {
            "loan_apply_no": record.loan_apply_no,
            "status": record.status,
            "opened_at": record.opened_at,
            "customer_id": record.customer_id,
            "institution_loan_no": record.institution_loan_no,
        }
    elif isinstance(record, Mapping):
        values = {name: record.get(name) for name in _FIELDS}
    else:
        return ImportProblem("invalid", 0, f"not an object: {type(record).__name__}")
    bad: dict[str, str] = {}
    for name in ("loan_apply_no", "status"):
        if values[name] is None:
            bad[name] = "is required"
        elif not v.is_text(values[name]):
            bad[name] = v.problem(v.check_text, values[name]) or "is invalid"
    if "status" not in bad and values["status"] not in statuses:
        bad["status"] = f"unknown status {values['status']!r} (known: {', '.join(sorted(statuses))})"
    for name in ("customer_id", "institution_loan_no"):
        if values[name] == "":
            values[name] = None  # an empty CSV cell is an absent field
        elif values[name] is not None and not v.is_text(values[name]):
            bad[name] = v.problem(v.check_text, values[name]) or "is invalid"
    moment = read_time(values["opened_at"], None) if values["opened_at"] is not None else "is required"
    if moment is OUT_OF_RANGE:
        bad["opened_at"] = "is out of range once converted to UTC"
    elif isinstance(moment, str):
        bad["opened_at"] = moment.replace("--assume-offset", "an offset")
    loan = values["loan_apply_no"] if "loan_apply_no" not in bad else None
    assert loan is None or isinstance(loan, str)
    if bad:
        return ImportProblem("invalid", 0, "; ".join(f"{k}: {v}" for k, v in bad.items()), loan)
    values["opened_at"] = moment
    return values


_READ_COLUMNS: Final = (
    schema.loans.c.loan_apply_no,
    schema.loans.c.status,
    schema.loans.c.customer_id,
    schema.loans.c.institution_loan_no,
)
_READ: Final = sa.select(*_READ_COLUMNS).where(
    schema.loans.c.loan_apply_no.in_(sa.bindparam("b_names", expanding=True))
)
_INSERT: Final = schema.loans.insert()


def _write_with_retries(store: _Store, batch: list[tuple[int, _Row]], tally: _Tally) -> None:
    # Another writer may open one of the loans between our SELECT and our INSERT: the
    # batch rolls back whole, and the next try finds that loan and compares it.
    for tries_left in reversed(range(3)):
        try:
            retrying(lambda: _write_batch(store, batch, tally))
            return
        except sa.exc.IntegrityError:
            if tries_left == 0:
                raise


def _write_batch(store: _Store, batch: list[tuple[int, _Row]], tally: _Tally) -> None:
    """One transaction: read which of the batch's loans exist, insert the others; then count (only once committed)."""
    names = list(dict.fromkeys(row["loan_apply_no"] for _, row in batch))
    with store.engine.begin() as conn:
        existing = _existing(conn, names)
        fresh: dict[str, tuple[int, _Row]] = {}
        problems: list[ImportProblem] = []
        unchanged = 0
        for line, row in batch:
            loan = row["loan_apply_no"]
            before = existing.get(loan) or fresh.get(loan, (0, None))[1]
            if before is None:
                fresh[loan] = (line, row)
                continue
            reason = _difference(before, row, earlier=fresh.get(loan, (None,))[0])
            if reason is None:
                unchanged += 1
            else:
                problems.append(ImportProblem("conflict", line, reason, loan))
        if fresh:
            now = store.now()
            conn.execute(_INSERT, [{**row, "version": 0, "updated_at": now} for _, row in fresh.values()])
    tally.opened += len(fresh)
    tally.unchanged += unchanged
    tally.conflicts.extend(problems)


def _existing(conn: Connection, names: list[str]) -> dict[str, _Row]:
    found: dict[str, _Row] = {}
    for start in range(0, len(names), _SELECT_CHUNK):
        for row in conn.execute(_READ, {"b_names": names[start : start + _SELECT_CHUNK]}):
            found[row.loan_apply_no] = row._asdict()
    return found


def _difference(before: Mapping[str, Any], row: Mapping[str, Any], *, earlier: int | None) -> str | None:
    """Why ``row`` conflicts with the loan as already open (``None`` when it is the same)."""
    where = f"line {earlier} of this import" if earlier is not None else "the database"
    for name in ("status", "customer_id", "institution_loan_no"):
        if before[name] != row[name]:
            return f"already open in {where} with {name} {before[name]!r}, this record says {row[name]!r}"
    return None
