"""The durable write path: a batch of changes as one read, one compare-and-set, one history and one outbox insert.

This runs for every change a lender makes, so it does the least work the job
needs. The statements are compiled once per engine to the driver's own SQL and
executed through :meth:`~sqlalchemy.engine.Connection.exec_driver_sql` with
plain tuples (SQLAlchemy's per-row, per-column parameter processing was most of
a batch's cost); the one conversion those columns need, an aware datetime to
the engine's stored form, is SQLAlchemy's own processor for
:class:`~loanstate.store._dialects.UtcDateTime`, called once per batch for the
clock and once per row for the change time. The outbox payload is written
directly with the JSON string encoder, the same text as ``json.dumps`` of
:meth:`~loanstate.LoanChangeEvent.to_dict`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from json.encoder import encode_basestring
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.compiler import SQLCompiler

from loanstate._errors import ConcurrentChange, UnknownLoan
from loanstate._events import LoanChangeEvent, derive_request_id
from loanstate._machine import LoanMachine
from loanstate.store._dialects import UtcDateTime
from loanstate.store._records import Change
from loanstate.store._schema import history, loans, outbox

__all__ = ["ChangeWriter", "payload_of"]

# Keys per IN (...) list: bound parameters stay well under every engine's limit (SQLite: 32766).
_CHUNK: Final = 500
_ZERO: Final = timedelta(0)

_READ_COLUMNS: Final = sa.select(
    loans.c.loan_apply_no, loans.c.status, loans.c.version, loans.c.customer_id, loans.c.institution_loan_no
)
_READ: Final = _READ_COLUMNS.where(loans.c.loan_apply_no.in_(sa.bindparam("b_names", expanding=True)))

# Column orders of the rows _rows() builds; the compiled SQL follows them.
_CAS_KEYS: Final = ("b_status", "b_new", "b_now", "b_loan", "b_old")
_HISTORY_KEYS: Final = (
    "loan_apply_no",
    "sequence",
    "before_status",
    "after_status",
    "change_time",
    "utc_offset_seconds",
    "request_id",
    "customer_id",
    "institution_loan_no",
    "recorded_at",
)
_OUTBOX_KEYS: Final = (
    "request_id",
    "loan_apply_no",
    "sequence",
    "payload",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
)
# An imported event's outbox row: already delivered (before loanstate), never sent.
_DELIVERED_KEYS: Final = (*_OUTBOX_KEYS, "delivered_at")


def payload_of(event: LoanChangeEvent) -> str:
    """The outbox payload: ``json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))``, faster."""
    text = (
        f'{{"loan_apply_no":{encode_basestring(event.loan_apply_no)},'
        f'"before_status":{encode_basestring(event.before_status)},'
        f'"after_status":{encode_basestring(event.after_status)},'
        f'"change_time":"{event.change_time.isoformat()}","request_id":"{event.request_id}"'
    )
    if event.customer_id is not None:
        text += f',"customer_id":{encode_basestring(event.customer_id)}'
    if event.institution_loan_no is not None:
        text += f',"institution_loan_no":{encode_basestring(event.institution_loan_no)}'
    return text + "}"


def _positional(dialect: Dialect) -> Dialect:
    # The same dialect with positional parameters (qmark for sqlite3, %s for psycopg and
    # PyMySQL, which both take it), so rows are plain tuples in the compiled order.
    style = "qmark" if dialect.name == "sqlite" else "format"
    made: Dialect = type(dialect)(paramstyle=style)  # type: ignore[call-arg]
    return made


def _driver_sql(statement: sa.ClauseElement, keys: Sequence[str], dialect: Dialect) -> str:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    if tuple(compiled.positiontup or ()) != tuple(keys):
        raise AssertionError(f"compiled parameters {compiled.positiontup} are not in the order {keys}")  # a bug
    return str(compiled.string)


@attrs.define
class ChangeWriter:
    """Applies batches of changes on one engine (see the module docstring); built once per store."""

    machine: LoanMachine
    _read_one: str
    _cas: str
    _insert_history: str
    _insert_outbox: str
    _insert_delivered: str
    _time: Callable[[datetime], Any]
    _sane_rowcount: bool

    @classmethod
    def for_engine(cls, engine: Engine, machine: LoanMachine) -> ChangeWriter:
        """Compile the statements for ``engine``'s dialect."""
        dialect = _positional(engine.dialect)
        cas = (
            sa.update(loans)
            .where(loans.c.loan_apply_no == sa.bindparam("b_loan"), loans.c.version == sa.bindparam("b_old"))
            .values(status=sa.bindparam("b_status"), version=sa.bindparam("b_new"), updated_at=sa.bindparam("b_now"))
        )
        insert_history = history.insert().values({k: sa.bindparam(k) for k in _HISTORY_KEYS})
        insert_outbox = outbox.insert().values({k: sa.bindparam(k) for k in _OUTBOX_KEYS})
        insert_delivered = outbox.insert().values({k: sa.bindparam(k) for k in _DELIVERED_KEYS})
        process = UtcDateTime().bind_processor(engine.dialect)
        read_one = _READ_COLUMNS.where(loans.c.loan_apply_no == sa.bindparam("b_name"))
        return cls(
            machine,
            _driver_sql(read_one, ("b_name",), dialect),
            _driver_sql(cas, _CAS_KEYS, dialect),
            _driver_sql(insert_history, _HISTORY_KEYS, dialect),
            _driver_sql(insert_outbox, _OUTBOX_KEYS, dialect),
            _driver_sql(insert_delivered, _DELIVERED_KEYS, dialect),
            process or (lambda moment: moment),
            engine.dialect.supports_sane_multi_rowcount,
        )

    def apply(self, conn: Connection, batch: Sequence[Change], now: datetime) -> list[LoanChangeEvent]:
        """Write ``batch`` in order on ``conn`` (in a transaction); return the events, or raise (roll back then)."""
        names = sorted({c.loan_apply_no for c in batch})
        read: dict[str, Any] = {}
        if len(names) == 1:  # the common one-change transaction: no IN list to expand
            read.update({row[0]: row for row in conn.exec_driver_sql(self._read_one, (names[0],))})
        for start in range(0, len(names) if len(names) > 1 else 0, _CHUNK):
            read.update({row[0]: row for row in conn.execute(_READ, {"b_names": names[start : start + _CHUNK]})})
        status = {name: row[1] for name, row in read.items()}
        version = {name: row[2] for name, row in read.items()}
        stamp = self._time(now)
        events: list[LoanChangeEvent] = []
        history_rows: list[tuple[Any, ...]] = []
        outbox_rows: list[tuple[Any, ...]] = []
        change = self.machine.change
        for item in batch:
            loan = item.loan_apply_no
            row = read.get(loan)
            if row is None:
                raise UnknownLoan(loan)
            before = status[loan]
            if item.expected_before is not None and item.expected_before != before:
                raise ConcurrentChange(loan, expected=item.expected_before, actual=before)
            sequence = version[loan] + 1
            at = item.at
            request_id = derive_request_id(loan, before, item.after, at, sequence=sequence)
            event = change(
                loan_apply_no=loan,
                before=before,
                after=item.after,
                at=at,
                customer_id=row[3],
                institution_loan_no=row[4],
                request_id=request_id,
            )
            status[loan] = item.after
            version[loan] = sequence
            events.append(event)
            offset = int((at.utcoffset() or _ZERO).total_seconds())
            history_rows.append(
                (loan, sequence, before, item.after, self._time(at), offset, request_id, row[3], row[4], stamp)
            )
            outbox_rows.append((request_id, loan, sequence, payload_of(event), "pending", 0, stamp, stamp))
        self._compare_and_set(conn, read, status, version, stamp)
        conn.exec_driver_sql(self._insert_history, history_rows)
        conn.exec_driver_sql(self._insert_outbox, outbox_rows)
        return events

    def write_delivered(self, conn: Connection, numbered: Sequence[tuple[LoanChangeEvent, int]], now: datetime) -> None:
        """Write the history and outbox rows of events already delivered before loanstate (``(event, sequence)``).

        The rows are those :meth:`apply` writes, with the events' own request_ids
        and the outbox row ``delivered`` at ``now``; the loans' rows are the caller's.
        """
        stamp = self._time(now)
        history_rows: list[tuple[Any, ...]] = []
        outbox_rows: list[tuple[Any, ...]] = []
        for event, sequence in numbered:
            at = event.change_time
            offset = int((at.utcoffset() or _ZERO).total_seconds())
            loan, rid = event.loan_apply_no, event.request_id
            statuses = (event.before_status, event.after_status)
            identity = (event.customer_id, event.institution_loan_no)
            history_rows.append((loan, sequence, *statuses, self._time(at), offset, rid, *identity, stamp))
            outbox_rows.append((rid, loan, sequence, payload_of(event), "delivered", 0, stamp, stamp, stamp))
        if history_rows:
            conn.exec_driver_sql(self._insert_history, history_rows)
            conn.exec_driver_sql(self._insert_delivered, outbox_rows)

    def move(self, conn: Connection, loan_apply_no: str, *, status: str, old: int, new: int, now: datetime) -> bool:
        """Compare-and-set one loan from version ``old`` to ``new`` at ``status``; whether it was still at ``old``."""
        moved = conn.exec_driver_sql(self._cas, (status, new, self._time(now), loan_apply_no, old)).rowcount
        return bool(moved == 1)

    def _compare_and_set(
        self, conn: Connection, read: dict[str, Any], status: dict[str, str], version: dict[str, int], stamp: Any
    ) -> None:
        """Move every loan of the batch from the version we read to its new one, or raise ConcurrentChange."""
        # In key order, so two batches touching the same loans lock them in the same order (no deadlock).
        rows = [(status[n], version[n], stamp, n, read[n][2]) for n in sorted(status)]
        if self._sane_rowcount or len(rows) == 1:
            if conn.exec_driver_sql(self._cas, rows).rowcount == len(rows):
                return
        elif all(conn.exec_driver_sql(self._cas, r).rowcount == 1 for r in rows):
            return
        # Somebody changed a loan between our read and our write: name it. The
        # caller's transaction (or our savepoint) rolls back whatever we wrote.
        found = {}
        for name in read:
            found[name] = conn.execute(
                sa.select(loans.c.status, loans.c.version).where(loans.c.loan_apply_no == name)
            ).first()
        # A loan we did not move to the state we meant is the one another writer took.
        lost = next(
            (n for n, r in found.items() if r is None or (r.version, r.status) != (version[n], status[n])),
            next(iter(read)),
        )
        current = found[lost]
        raise ConcurrentChange(lost, expected=read[lost][1], actual=None if current is None else current.status)
