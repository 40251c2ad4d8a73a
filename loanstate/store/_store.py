"""SqlStore: a loan's status, its history and its notification, written together."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loanstate._errors import ConcurrentChange, InvalidConfiguration, InvalidEvent, UnknownLoan
from loanstate._events import LoanChangeEvent, _check_text, derive_request_id
from loanstate._machine import LoanMachine, default_machine
from loanstate.store import _schema as schema
from loanstate.store._dialects import READ_ONLY, UtcDateTime, insert_if_absent, make_engine, retrying
from loanstate.store._import import DEFAULT_BATCH, ImportReport, LoanRecord, import_loans
from loanstate.store._migrate import SchemaStatus, schema_status, upgrade
from loanstate.store._outbox import Outbox
from loanstate.store._prune import prune_batches
from loanstate.store._records import Change, OutboxEntry, OutboxStatus

__all__ = ["SqlStore"]

T = TypeVar("T")

# Bound parameters per statement stay well under every engine's limit (SQLite: 32766).
_CHUNK: Final = 500

# Statements built once: a change then only binds values (construction and cache
# lookups are a large share of a one-change transaction's cost).
_READ_LOANS: Final = sa.select(
    schema.loans.c.loan_apply_no,
    schema.loans.c.status,
    schema.loans.c.version,
    schema.loans.c.customer_id,
    schema.loans.c.institution_loan_no,
).where(schema.loans.c.loan_apply_no.in_(sa.bindparam("b_names", expanding=True)))
_COMPARE_AND_SET: Final = (
    sa.update(schema.loans)
    .where(schema.loans.c.loan_apply_no == sa.bindparam("b_loan"), schema.loans.c.version == sa.bindparam("b_old"))
    .values(
        status=sa.bindparam("b_status", type_=sa.String()),
        version=sa.bindparam("b_new", type_=sa.Integer()),
        updated_at=sa.bindparam("b_now", type_=UtcDateTime()),
    )
)
_INSERT_HISTORY: Final = schema.history.insert()
_INSERT_OUTBOX: Final = schema.outbox.insert()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_text_value(field: str, value: object) -> None:
    # The event's own validator, so a loan that opens is one whose events can exist.
    _check_text(None, getattr(attrs.fields(LoanChangeEvent), field), value)


def _check_at(at: object) -> datetime:
    if not isinstance(at, datetime):
        raise InvalidEvent({"change_time": f"must be a datetime, got {type(at).__name__} {at!r}"})
    if at.utcoffset() is None:
        raise InvalidEvent({"change_time": f"must be timezone-aware, got naive {at.isoformat()!r} (attach a tzinfo)"})
    return at


class SqlStore:
    """Loans, their history and the outbox, in SQLite, PostgreSQL or MySQL/MariaDB.

    ``url_or_engine`` is a SQLAlchemy URL (``sqlite:///loans.db``,
    ``postgresql+psycopg://...``, ``mysql+pymysql://...``) or an
    :class:`~sqlalchemy.engine.Engine`. ``machine`` decides which changes are
    legal (default: :func:`~loanstate.default_machine`); ``clock`` returns the
    current aware time and stamps ``recorded_at`` and the outbox.

    Every change is one database transaction that writes the loan's status
    (a compare-and-set on its version), one history row and one outbox row;
    any error leaves no trace. The store is safe to share between threads;
    several processes (and machines, on the two servers) may share a database.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | Engine,
        *,
        machine: LoanMachine | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine: Final[Engine] = make_engine(url_or_engine)
        self.machine: Final[LoanMachine] = machine or default_machine()
        self._clock = clock or _utc_now
        self._owns_engine = not isinstance(url_or_engine, Engine)
        #: The outbox's lower-level operations (claiming, settling), used by the dispatcher.
        self.outbox: Final[Outbox] = Outbox(self.engine, clock=self._clock)

    def __repr__(self) -> str:
        # Never the URL's password.
        return f"<SqlStore {self.engine.url.render_as_string(hide_password=True)!r}>"

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB included)."""
        return self.engine.dialect.name

    def now(self) -> datetime:
        """The store's clock: the current aware time."""
        return self._clock()

    def close(self) -> None:
        """Close pooled connections (of an engine the store created; a passed-in engine is the caller's)."""
        if self._owns_engine:
            self.engine.dispose()

    # -- schema ---------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the tables if they are missing and record :data:`SCHEMA_VERSION`; safe to call every start.

        A database created by an older loanstate is refused (``InvalidConfiguration``
        naming ``loanstate db upgrade``): nothing is migrated behind the operator's back.
        """

        def create(conn: Connection) -> None:
            schema.metadata.create_all(conn, checkfirst=True)
            values = {"key": "schema_version", "value": str(schema.SCHEMA_VERSION)}
            conn.execute(insert_if_absent(schema.meta, values, self.dialect))

        # Workers starting together on a fresh database race to create the same tables;
        # the losers fail ("already exists", or a duplicate type on PostgreSQL). Running
        # again finds what the winners made (a table per try at worst; MySQL's DDL
        # commits as it goes). A real failure (no permission) fails every try.
        for tries_left in reversed(range(len(schema.metadata.tables) + 1)):
            try:
                retrying(lambda: self._in_transaction(create))
                break
            except sa.exc.DBAPIError:
                if tries_left == 0:
                    raise
        found = self.schema_version()
        if found != schema.SCHEMA_VERSION:
            fix = "run `loanstate db upgrade`" if (found or 0) < schema.SCHEMA_VERSION else "upgrade loanstate"
            raise InvalidConfiguration(
                "database",
                self.engine.url.render_as_string(hide_password=True),
                f"holds loanstate schema version {found}, this loanstate uses {schema.SCHEMA_VERSION}: {fix}",
            )

    def schema_version(self) -> int | None:
        """The schema version recorded in the database, or ``None`` before :meth:`create_schema`."""
        if not sa.inspect(self.engine).has_table(schema.meta.name):
            return None
        with self._reading() as conn:
            value = conn.scalar(sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version"))
        return None if value is None else int(value)

    # -- loans ----------------------------------------------------------------

    def open_loan(
        self,
        loan_apply_no: str,
        *,
        status: str | None = None,
        at: datetime,
        customer_id: str | None = None,
        institution_loan_no: str | None = None,
        connection: Connection | None = None,
    ) -> None:
        """Register a loan at the machine's initial status, or at ``status``.

        Opening is not a change: it writes no history row and sends nothing.
        ``customer_id`` and ``institution_loan_no`` are carried on every later
        event of the loan. Raises :class:`~loanstate.InvalidEvent` for a bad
        field, an unknown status, or a loan that is already open.
        """
        _check_text_value("loan_apply_no", loan_apply_no)
        for name, optional in (("customer_id", customer_id), ("institution_loan_no", institution_loan_no)):
            if optional is not None:
                _check_text_value(name, optional)
        _check_at(at)
        start = self.machine.initial if status is None else status
        if start not in self.machine.statuses:
            known = ", ".join(sorted(self.machine.statuses))
            raise InvalidEvent({"status": f"unknown status {start!r} (known: {known})"})

        def insert(conn: Connection) -> None:
            exists = conn.scalar(sa.select(schema.loans.c.status).where(schema.loans.c.loan_apply_no == loan_apply_no))
            if exists is not None:
                raise InvalidEvent({"loan_apply_no": f"loan {loan_apply_no!r} is already open (status {exists!r})"})
            conn.execute(
                schema.loans.insert().values(
                    loan_apply_no=loan_apply_no,
                    status=start,
                    version=0,
                    customer_id=customer_id,
                    institution_loan_no=institution_loan_no,
                    opened_at=at,
                    updated_at=self._clock(),
                )
            )

        try:
            self._write(insert, connection)
        except sa.exc.IntegrityError:
            # Another writer opened it between our check and our insert (the primary key is the only constraint).
            raise InvalidEvent({"loan_apply_no": f"loan {loan_apply_no!r} is already open"}) from None

    def transition(
        self,
        loan_apply_no: str,
        *,
        after: str,
        at: datetime,
        expected_before: str | None = None,
        connection: Connection | None = None,
    ) -> LoanChangeEvent:
        """Change the loan's status to ``after`` at ``at``; return the event, now safely in the outbox.

        One transaction writes the status (compare-and-set on the loan's
        version, and on ``expected_before`` when given), the history row and
        the outbox row. ``connection`` joins the caller's open transaction
        instead (inside a savepoint), so the caller's own writes and ours
        commit or roll back together.

        Raises :class:`~loanstate.UnknownLoan`, :class:`~loanstate.IllegalTransition`,
        :class:`~loanstate.InvalidEvent`, or :class:`~loanstate.ConcurrentChange`
        (another writer won, or ``expected_before`` is stale); nothing is
        written in any of these cases.
        """
        change = Change(loan_apply_no, after, at, expected_before)
        return self.transition_many([change], connection=connection)[0]

    def transition_many(
        self, changes: Iterable[Change], *, connection: Connection | None = None
    ) -> list[LoanChangeEvent]:
        """Apply many changes in one transaction, in order; all of them or none.

        Changes of the same loan chain (each starts where the previous one
        left it). Returns the events in the order of ``changes``. Errors are
        those of :meth:`transition`, raised for the first bad change, with
        nothing written.
        """
        batch = list(changes)
        for change in batch:
            _check_at(change.at)
        if not batch:
            return []
        return self._write(lambda conn: self._apply(conn, batch), connection)

    def _apply(self, conn: Connection, batch: Sequence[Change]) -> list[LoanChangeEvent]:
        names = sorted({c.loan_apply_no for c in batch})
        current: dict[str, Any] = {}
        for start in range(0, len(names), _CHUNK):
            rows = conn.execute(_READ_LOANS, {"b_names": names[start : start + _CHUNK]})
            current.update({row.loan_apply_no: row for row in rows})
        status = {name: row.status for name, row in current.items()}
        version = {name: row.version for name, row in current.items()}
        events: list[LoanChangeEvent] = []
        history_rows: list[dict[str, Any]] = []
        outbox_rows: list[dict[str, Any]] = []
        now = self._clock()
        for change in batch:
            loan = change.loan_apply_no
            row = current.get(loan)
            if row is None:
                raise UnknownLoan(loan)
            before = status[loan]
            if change.expected_before is not None and change.expected_before != before:
                raise ConcurrentChange(loan, expected=change.expected_before, actual=before)
            sequence = version[loan] + 1
            request_id = derive_request_id(loan, before, change.after, change.at, sequence=sequence)
            event = self.machine.change(
                loan_apply_no=loan,
                before=before,
                after=change.after,
                at=change.at,
                customer_id=row.customer_id,
                institution_loan_no=row.institution_loan_no,
                request_id=request_id,
            )
            status[loan] = change.after
            version[loan] = sequence
            events.append(event)
            offset = change.at.utcoffset() or timedelta(0)
            history_rows.append(
                {
                    "loan_apply_no": loan,
                    "sequence": sequence,
                    "before_status": before,
                    "after_status": change.after,
                    "change_time": change.at,
                    "utc_offset_seconds": int(offset.total_seconds()),
                    "request_id": request_id,
                    "customer_id": row.customer_id,
                    "institution_loan_no": row.institution_loan_no,
                    "recorded_at": now,
                }
            )
            outbox_rows.append(
                {
                    "request_id": request_id,
                    "loan_apply_no": loan,
                    "sequence": sequence,
                    "payload": json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":")),
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
        self._compare_and_set(conn, current, status, version, now)
        conn.execute(_INSERT_HISTORY, history_rows)
        conn.execute(_INSERT_OUTBOX, outbox_rows)
        return events

    def _compare_and_set(
        self,
        conn: Connection,
        read: dict[str, Any],
        status: dict[str, str],
        version: dict[str, int],
        now: datetime,
    ) -> None:
        """Move every loan of the batch from the version we read to its new one, or raise."""
        loans = schema.loans
        stmt = _COMPARE_AND_SET
        params = [
            {"b_loan": n, "b_old": read[n].version, "b_status": status[n], "b_new": version[n], "b_now": now}
            # In key order, so two batches touching the same loans lock them in the same order (no deadlock).
            for n in sorted(status)
        ]
        if self.engine.dialect.supports_sane_multi_rowcount or len(params) == 1:
            if conn.execute(stmt, params).rowcount == len(params):
                return
        elif all(conn.execute(stmt, p).rowcount == 1 for p in params):
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
        raise ConcurrentChange(lost, expected=read[lost].status, actual=None if current is None else current.status)

    def status(self, loan_apply_no: str) -> str:
        """The loan's current status; :class:`~loanstate.UnknownLoan` if it was never opened."""
        with self._reading() as conn:
            found = conn.scalar(sa.select(schema.loans.c.status).where(schema.loans.c.loan_apply_no == loan_apply_no))
        if found is None:
            raise UnknownLoan(loan_apply_no)
        return str(found)

    def history(self, loan_apply_no: str) -> list[LoanChangeEvent]:
        """Every change of the loan, oldest first, exactly as it was made (offsets included)."""
        h = schema.history
        with self._reading() as conn:
            rows = conn.execute(sa.select(h).where(h.c.loan_apply_no == loan_apply_no).order_by(h.c.sequence)).all()
            if not rows:
                known = conn.scalar(
                    sa.select(schema.loans.c.version).where(schema.loans.c.loan_apply_no == loan_apply_no)
                )
                if known is None:
                    raise UnknownLoan(loan_apply_no)
        return [
            LoanChangeEvent(
                loan_apply_no=row.loan_apply_no,
                before_status=row.before_status,
                after_status=row.after_status,
                change_time=row.change_time.astimezone(timezone(timedelta(seconds=row.utc_offset_seconds))),
                request_id=row.request_id,
                customer_id=row.customer_id,
                institution_loan_no=row.institution_loan_no,
            )
            for row in rows
        ]

    # -- the outbox, for operators ---------------------------------------------

    def retry(self, loan_apply_no: str) -> int:
        """Un-park the loan: its parked event is tried again at once. Returns how many were un-parked (0 or 1)."""
        return self.outbox.retry_loan(loan_apply_no)

    def skip(self, request_id: str) -> LoanChangeEvent:
        """Set a parked (or pending) event aside for good, so the loan's later events go on. Returns the event."""
        return self.outbox.skip(request_id)

    def outbox_status(self) -> OutboxStatus:
        """Counts per state, the lag of the oldest pending event, and the parked loans."""
        return self.outbox.status()

    def outbox_entries(self, loan_apply_no: str | None = None) -> list[OutboxEntry]:
        """The outbox rows of one loan (by sequence), or of every loan (oldest first)."""
        return self.outbox.entries(loan_apply_no)

    # -- schema versions and retention ---------------------------------------------

    def schema_status(self) -> SchemaStatus:
        """The schema version the database records, this loanstate's, and the rows of each table."""
        return schema_status(self.engine)

    def upgrade_schema(self) -> list[str]:
        """Migrate the database to this loanstate's schema version; returns the steps run.

        Stop every worker first: an older loanstate may not write the newer tables.
        Safe to run again after an interruption (each step checks before it changes).
        """
        return upgrade(self.engine)

    def prune(
        self,
        *,
        delivered_before: datetime,
        batch_size: int = 1000,
        archive: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
    ) -> int:
        """Delete delivered and skipped outbox rows settled before ``delivered_before``; return how many.

        Never a pending, parked or leased row; history is kept. Each batch of at
        most ``batch_size`` rows is its own short transaction; ``archive``, when
        given, receives each batch's rows (all columns) before its delete commits.
        """
        return sum(
            prune_batches(
                lambda fn: retrying(lambda: self._in_transaction(fn)),
                delivered_before=delivered_before,
                batch_size=batch_size,
                archive=archive,
            )
        )

    # -- transactions -----------------------------------------------------------

    def _in_transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    def _write(self, fn: Callable[[Connection], T], connection: Connection | None) -> T:
        if connection is not None:
            # A savepoint keeps the caller's transaction usable if we raise halfway.
            with connection.begin_nested():
                return fn(connection)
        return retrying(lambda: self._in_transaction(fn))

    def _reading(self) -> Any:
        return self.engine.execution_options(**READ_ONLY).begin()

    # -- bulk import (loanstate/store/_import.py) --------------------------------

    def open_loans(
        self, records: Iterable[LoanRecord | Mapping[str, object]], *, batch_size: int = DEFAULT_BATCH
    ) -> ImportReport:
        """Register many loans at their current status, ``batch_size`` per transaction; say what happened.

        Each record is a :class:`~loanstate.store.LoanRecord` or a mapping of its
        fields. A loan already open with the same status and identity counts as
        *unchanged* (so an interrupted import can be run again); one open
        differently is a *conflict*, never overwritten; a bad record is
        *invalid*. Problems carry the record's 1-based position as ``line``.
        """
        return import_loans(self, enumerate(records, start=1), batch_size=batch_size)
