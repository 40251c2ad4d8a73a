"""SqlStore: a loan's status, its history and its notification, written together."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loanstate._errors import InvalidConfiguration, InvalidEvent, UnknownLoan
from loanstate._events import LoanChangeEvent
from loanstate._machine import LoanMachine, default_machine
from loanstate.store import _schema as schema
from loanstate.store._changes import ChangeWriter
from loanstate.store._checks import check_at, check_instances, check_text, configuration_error, shorten
from loanstate.store._dialects import (
    READ_ONLY,
    autocommit_problem,
    insert_if_absent,
    make_engine,
    retrying,
)
from loanstate.store._history_import import DEFAULT_HISTORY_BATCH, HistoryImportReport, import_history
from loanstate.store._import import DEFAULT_BATCH, ImportReport, LoanRecord, import_loans
from loanstate.store._migrate import SchemaStatus, schema_status, upgrade
from loanstate.store._outbox import Outbox
from loanstate.store._prune import prune_batches
from loanstate.store._records import Change, OutboxEntry, OutboxStatus

__all__ = ["SqlStore"]

T = TypeVar("T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _checked_change(change: object) -> Change:
    """``change`` with its fields checked (plain str values), else InvalidEvent naming the field."""
    if not isinstance(change, Change):
        raise InvalidEvent({"changes": f"must hold Change objects, got {type(change).__name__} {shorten(change)}"})
    loan = check_text("loan_apply_no", change.loan_apply_no)
    after = check_text("after_status", change.after)
    check_at(change.at)
    expected = change.expected_before
    if expected is not None:
        expected = check_text("expected_before", expected)
    if loan is change.loan_apply_no and after is change.after and expected is change.expected_before:
        return change  # already plain: no copy
    return Change(loan, after, change.at, expected)


def _changes_error(problem: str) -> InvalidEvent:
    return InvalidEvent({"changes": problem})


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
        if not isinstance(url_or_engine, str | sa.URL | Engine):
            raise configuration_error(
                "url_or_engine", url_or_engine, "must be a database URL (str or sqlalchemy.URL) or an Engine"
            )
        if machine is not None and not isinstance(machine, LoanMachine):
            raise configuration_error("machine", machine, "must be a LoanMachine")
        if clock is not None and not callable(clock):
            raise configuration_error("clock", clock, "must be a callable returning an aware datetime")
        problem = autocommit_problem(url_or_engine) if isinstance(url_or_engine, Engine) else None
        if problem is not None:
            raise configuration_error("url_or_engine", url_or_engine, problem)
        try:
            engine = make_engine(url_or_engine)
        except ValueError as exc:  # a refused in-memory engine
            raise configuration_error("url_or_engine", url_or_engine, str(exc)) from None
        except sa.exc.ArgumentError as exc:  # a malformed URL
            raise configuration_error("url_or_engine", url_or_engine, f"is not a database URL ({exc})") from None
        except sa.exc.NoSuchModuleError as exc:
            raise configuration_error("url_or_engine", url_or_engine, f"names no installed database ({exc})") from None
        self.engine: Final[Engine] = engine
        self.machine: Final[LoanMachine] = machine or default_machine()
        self._writer = ChangeWriter.for_engine(engine, self.machine)
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

        # An existing schema at another version is refused before anything is created in it.
        self._refuse_other_schema_version(self.schema_version())

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
        self._refuse_other_schema_version(self.schema_version())

    def _refuse_other_schema_version(self, found: int | None) -> None:
        if found is None or found == schema.SCHEMA_VERSION:
            return
        fix = "run `loanstate db upgrade`" if found < schema.SCHEMA_VERSION else "upgrade loanstate"
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
        loan_apply_no = check_text("loan_apply_no", loan_apply_no)
        if customer_id is not None:
            customer_id = check_text("customer_id", customer_id)
        if institution_loan_no is not None:
            institution_loan_no = check_text("institution_loan_no", institution_loan_no)
        check_at(at, "at")
        start = self.machine.initial if status is None else check_text("status", status)
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
        batch = [_checked_change(c) for c in check_instances("changes", changes, object, error=_changes_error)]
        if not batch:
            return []
        return self._write(lambda conn: self._writer.apply(conn, batch, self._clock()), connection)

    def status(self, loan_apply_no: str) -> str:
        """The loan's current status; :class:`~loanstate.UnknownLoan` if it was never opened."""
        loan_apply_no = check_text("loan_apply_no", loan_apply_no)
        with self._reading() as conn:
            found = conn.scalar(sa.select(schema.loans.c.status).where(schema.loans.c.loan_apply_no == loan_apply_no))
        if found is None:
            raise UnknownLoan(loan_apply_no)
        return str(found)

    def history(self, loan_apply_no: str) -> list[LoanChangeEvent]:
        """Every change of the loan, oldest first, exactly as it was made (offsets included)."""
        loan_apply_no = check_text("loan_apply_no", loan_apply_no)
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

    def retry(self, *loan_apply_nos: str, all_parked: bool = False, error_contains: str | None = None) -> int:
        """Try parked events again, at once; returns how many went from parked back to pending.

        Select the parked events of the named loans, or of every loan with
        ``all_parked=True``; ``error_contains`` narrows the selection to events
        whose last error contains that text (case-sensitive), or alone selects
        them across every loan. Selected events waiting out a backoff are made
        due now too. All in one transaction: an unknown loan raises
        :class:`~loanstate.UnknownLoan` and changes nothing; an empty selection
        or a non-str argument raises :class:`~loanstate.InvalidEvent`.
        """
        return self.outbox.retry(*loan_apply_nos, all_parked=all_parked, error_contains=error_contains)

    def skip(self, *request_ids: str) -> int:
        """Set parked (or pending) events aside for good, so their loans' later events go on.

        All or nothing, in one transaction: if any request_id is unknown,
        malformed, already delivered, or being sent right now (under a live
        lease), :class:`~loanstate.InvalidEvent` says which and nothing is
        skipped. Returns how many events this call skipped (an event skipped
        before is accepted and not counted again).
        """
        return len(self.outbox.skip(*request_ids))

    def outbox_status(self) -> OutboxStatus:
        """Counts per state, the lag of the oldest pending event, and the parked loans."""
        return self.outbox.status()

    def outbox_entries(self, loan_apply_no: str | None = None) -> list[OutboxEntry]:
        """The outbox rows of one loan (by sequence), or of every loan (oldest first)."""
        if loan_apply_no is not None:
            loan_apply_no = check_text("loan_apply_no", loan_apply_no)
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
            if not isinstance(connection, Connection):
                raise configuration_error("connection", connection, "must be a sqlalchemy Connection (or None)")
            problem = autocommit_problem(connection)
            if problem is not None:
                raise configuration_error("connection", connection, problem)
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

    def import_history(
        self, events: Iterable[LoanChangeEvent | Mapping[str, object]], *, batch_size: int = DEFAULT_HISTORY_BATCH
    ) -> HistoryImportReport:
        """Record changes already notified before loanstate: history rows, the loans' status, outbox ``delivered``.

        ``events`` are :class:`~loanstate.LoanChangeEvent` values or mappings of
        their fields, in the order they happened per loan (loans may be
        interleaved); their request_ids are kept as they are. Each loan is all
        or nothing; ``batch_size`` loans are written per transaction. Events
        already imported count as *unchanged* (the same file can be imported
        again); a request_id used for other content, or a loan whose history
        moved past or differs, is a *conflict*, never overwritten; a bad record
        or a break in a loan's chain is *invalid*. Nothing imported is ever
        sent; a later :meth:`transition` continues the loan's sequence.
        Problems carry the record's 1-based position as ``line``.
        """
        return import_history(self, enumerate(events, start=1), batch_size=batch_size)
