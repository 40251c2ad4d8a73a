"""The durable path: SqlStore.transition against a raw driver doing the same reads and writes.

Durable ``transition`` (one change per transaction) and ``transition_many``
(1000 per transaction) on SQLite (WAL, ``synchronous=FULL``, as the store
sets it) and on PostgreSQL (the server's default durability,
``synchronous_commit=on``), against a floor: the raw driver (``sqlite3`` /
``psycopg``) doing the same work in the same tables with the same durability,
one transaction each as ours: read the loan's status, version and identity;
compare-and-set its status on the version (and check that it took); insert
the history row; insert the outbox row with the event's JSON payload; commit.
In a batch the floor reads all loans in one query and writes with
``executemany``. Target: at least 0.5x the floor's changes per second.

Only the changes are timed: each round opens its loans on a fresh database
(SQLite: a new file; PostgreSQL: new loans in the run's database) before the
clock starts, on both sides alike. After every round both sides' tables are
counted: as many history and outbox rows as changes, every loan at its last
version.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks._checks import check, passed
from benchmarks._harness import Row, interleave
from loanstate import SqlStore
from loanstate.store import Change, LoanRecord
from loanstate.testing._databases import Server, find_server

AT = datetime(2024, 1, 1, tzinfo=UTC)
WALK = ("OVERDUE", "NEW")  # each step moves every loan of the batch along this cycle

_SELECT = "SELECT status, version, customer_id, institution_loan_no FROM loanstate_loans WHERE loan_apply_no = ?"
_CAS = "UPDATE loanstate_loans SET status = ?, version = ?, updated_at = ? WHERE loan_apply_no = ? AND version = ?"
_HISTORY = (
    "INSERT INTO loanstate_history (loan_apply_no, sequence, before_status, after_status, change_time,"
    " utc_offset_seconds, request_id, customer_id, institution_loan_no, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_OUTBOX = (
    "INSERT INTO loanstate_outbox (request_id, loan_apply_no, sequence, payload, state, attempts,"
    " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def open_book(store: SqlStore, loan_apply_nos: Iterable[str], at: datetime) -> None:
    """Open every loan at the initial status in batches (benchmark set-up, outside any timing)."""
    report = store.open_loans(LoanRecord(name, store.machine.initial, at) for name in loan_apply_nos)
    if report.conflicts or report.invalid:
        raise RuntimeError(f"set-up failed: {report}")


# -- the floor: one code path, two drivers --------------------------------------


class _Raw:
    """The raw driver's statements in its own parameter style, and how it stores a time."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        mark = "?" if dialect == "sqlite" else "%s"
        self.select_one, self.cas, self.history, self.outbox = (
            s.replace("?", mark) for s in (_SELECT, _CAS, _HISTORY, _OUTBOX)
        )

    def read_many(self, cur: Any, loans: list[str]) -> dict[str, tuple[Any, ...]]:
        """Every loan's status, version and identity in one query."""
        columns = "SELECT loan_apply_no, status, version, customer_id, institution_loan_no FROM loanstate_loans"
        if self.dialect == "sqlite":
            cur.execute(f"{columns} WHERE loan_apply_no IN ({','.join('?' * len(loans))})", loans)
        else:
            cur.execute(f"{columns} WHERE loan_apply_no = ANY(%s)", (loans,))
        return {row[0]: row[1:] for row in cur.fetchall()}

    def when(self, at: datetime) -> object:
        """A UTC time as the column stores it (SQLite: the text SQLAlchemy writes; PostgreSQL: naive UTC)."""
        naive = at.astimezone(UTC).replace(tzinfo=None)
        return naive.isoformat(" ", "microseconds") if self.dialect == "sqlite" else naive

    def begin(self) -> None:
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")  # as the store: the write lock from the start

    def commit(self) -> None:
        if self.dialect == "sqlite":
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()


def _rows_for(
    raw: _Raw, loan: str, found: tuple[Any, ...], after: str, at: datetime, now: object
) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    """The compare-and-set, history and outbox parameters of one change (the floor's per-change work)."""
    before, version, customer_id, institution_loan_no = found
    sequence = version + 1
    request_id = f"{loan}-{sequence}"
    payload = json.dumps(
        {
            "loan_apply_no": loan,
            "before_status": before,
            "after_status": after,
            "change_time": at.isoformat(),
            "request_id": request_id,
            "customer_id": customer_id,
            "institution_loan_no": institution_loan_no,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    offset = int((at.utcoffset() or timedelta(0)).total_seconds())
    change_time = raw.when(at)
    return (
        (after, sequence, now, loan, version),
        (loan, sequence, before, after, change_time, offset, request_id, customer_id, institution_loan_no, now),
        (request_id, loan, sequence, payload, "pending", 0, now, now),
    )


def raw_singles(raw: _Raw, loans: list[str], at: datetime) -> None:
    """One transaction per change: read, compare-and-set (checked), history row, outbox row, commit."""
    cur = raw.conn.cursor()
    for loan in loans:
        raw.begin()
        cur.execute(raw.select_one, (loan,))
        found = cur.fetchone()
        cas, history, outbox = _rows_for(raw, loan, found, WALK[0], at, raw.when(datetime.now(UTC)))
        cur.execute(raw.cas, cas)
        if cur.rowcount != 1:
            raise RuntimeError(f"compare-and-set of {loan} lost")
        cur.execute(raw.history, history)
        cur.execute(raw.outbox, outbox)
        raw.commit()


def raw_batches(raw: _Raw, loans: list[str], steps: int, at: datetime) -> None:
    """One transaction per step, every loan once: one read, then executemany of each statement."""
    cur = raw.conn.cursor()
    for step in range(steps):
        raw.begin()
        current = raw.read_many(cur, loans)
        now = raw.when(datetime.now(UTC))
        changed = [_rows_for(raw, loan, current[loan], WALK[step % 2], at, now) for loan in sorted(loans)]
        cur.executemany(raw.cas, [c[0] for c in changed])
        if cur.rowcount != len(loans):
            raise RuntimeError(f"compare-and-set moved {cur.rowcount} of {len(loans)} loans")
        cur.executemany(raw.history, [c[1] for c in changed])
        cur.executemany(raw.outbox, [c[2] for c in changed])
        raw.commit()


# -- the databases ------------------------------------------------------------------


@contextmanager
def _raw_connection(url: sa.URL) -> Iterator[_Raw]:
    """The raw driver on the same database, with the store's durability settings."""
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database), isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
            conn.execute(f"PRAGMA {pragma}")
        try:
            yield _Raw(conn, "sqlite")
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False)) as pg:
            yield _Raw(pg, "postgresql")


def _counts(url: sa.URL, loans: list[str]) -> tuple[int, int, set[int]]:
    """History rows, outbox rows and the distinct versions of ``loans`` (one query each, after the timing)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    names: sa.BindParameter[Any] = sa.bindparam("names", expanding=True)
    try:
        with engine.connect() as conn:
            history, outbox = (
                conn.scalar(
                    sa.text(f"SELECT count(*) FROM loanstate_{table} WHERE loan_apply_no IN :names").bindparams(names),
                    {"names": loans},
                )
                for table in ("history", "outbox")
            )
            versions = conn.scalars(
                sa.text("SELECT DISTINCT version FROM loanstate_loans WHERE loan_apply_no IN :names").bindparams(names),
                {"names": loans},
            )
            return int(history or 0), int(outbox or 0), set(versions)
    finally:
        engine.dispose()


class Durable:
    """The four sides (ours and the floor, singles and batches) on one engine."""

    def __init__(self, engine: str, database: Callable[[], sa.URL], singles: int, batch: int, steps: int) -> None:
        self.engine, self._database = engine, database
        self.singles, self.batch, self.steps = singles, batch, steps
        self._tags = itertools.count()

    def _prepare(self, loans: int) -> tuple[sa.URL, list[str]]:
        """A database with the schema and ``loans`` fresh loans opened (untimed)."""
        url = self._database()
        names = [f"B{next(self._tags)}-{uuid.uuid4().hex[:6]}-{n:06d}" for n in range(loans)]
        store = SqlStore(url)
        try:
            store.create_schema()
            open_book(store, names, AT)
        finally:
            store.close()
        return url, names

    def _verify(self, url: sa.URL, names: list[str], steps: int, what: str) -> None:
        history, outbox, versions = _counts(url, names)
        changes = len(names) * steps
        check(history == changes, f"{what}: {history} history rows for {changes} changes")
        check(outbox == changes, f"{what}: {outbox} outbox rows for {changes} changes")
        check(versions == {steps}, f"{what}: loans at versions {sorted(versions)}, expected {steps}")
        passed(f"{what}: {changes:,} changes, as many history and outbox rows, every loan at version {steps}")

    def ours_singles(self) -> float:
        url, names = self._prepare(self.singles)
        store = SqlStore(url)
        try:
            store.transition(names[0], after=WALK[0], at=AT)  # opens the pooled connection, untimed
            start = time.perf_counter()
            for name in names[1:]:
                store.transition(name, after=WALK[0], at=AT)
            seconds = time.perf_counter() - start
        finally:
            store.close()
        self._verify(url, names, 1, f"{self.engine} SqlStore.transition")
        return (len(names) - 1) / seconds

    def raw_singles(self) -> float:
        url, names = self._prepare(self.singles)
        with _raw_connection(url) as raw:
            raw_singles(raw, names[:1], AT)  # the connection's first transaction, untimed as ours
            start = time.perf_counter()
            raw_singles(raw, names[1:], AT)
            seconds = time.perf_counter() - start
        self._verify(url, names, 1, f"{self.engine} raw driver, 1 per transaction")
        return (len(names) - 1) / seconds

    def ours_batches(self) -> float:
        url, names = self._prepare(self.batch)
        store = SqlStore(url)
        try:
            store.status(names[0])  # opens the pooled connection, untimed
            start = time.perf_counter()
            for step in range(self.steps):
                store.transition_many([Change(name, WALK[step % 2], AT) for name in names])
            seconds = time.perf_counter() - start
        finally:
            store.close()
        self._verify(url, names, self.steps, f"{self.engine} SqlStore.transition_many")
        return len(names) * self.steps / seconds

    def raw_batches(self) -> float:
        url, names = self._prepare(self.batch)
        with _raw_connection(url) as raw:
            start = time.perf_counter()
            raw_batches(raw, names, self.steps, AT)
            seconds = time.perf_counter() - start
        self._verify(url, names, self.steps, f"{self.engine} raw driver, {self.batch} per transaction")
        return len(names) * self.steps / seconds

    def rows(self, rounds: int) -> list[Row]:
        t = interleave(
            {
                "ours_1": self.ours_singles,
                "raw_1": self.raw_singles,
                "ours_k": self.ours_batches,
                "raw_k": self.raw_batches,
            },
            rounds,
        )
        driver = "sqlite3" if self.engine == "SQLite" else "psycopg"
        return [
            Row(
                f"{self.engine}: transition, 1 per transaction",
                t["ours_1"],
                f"raw {driver}, same reads and writes",
                t["raw_1"],
                "changes/s",
                rounds,
                0.5,
                True,
            ),
            Row(
                f"{self.engine}: transition_many, {self.batch} per transaction",
                t["ours_k"],
                f"raw {driver} executemany, same reads and writes",
                t["raw_k"],
                "changes/s",
                rounds,
                0.5,
                True,
            ),
        ]


def postgres_server() -> Server | None:
    """The PostgreSQL server the tests would use (``LOANSTATE_TEST_POSTGRES_URL`` or the local one), if any."""
    found = find_server("postgresql", start=False)
    if isinstance(found, Server):
        return found
    print(f"\n(PostgreSQL rows left out: {found.reason})")
    return None


@contextmanager
def postgres_database() -> Iterator[sa.URL | None]:
    """A fresh PostgreSQL database for the run (``None`` when no server answers), dropped afterwards."""
    server = postgres_server()
    if server is None:
        yield None
        return
    url = server.create_database("loanstate_bench")
    try:
        yield url
    finally:
        server.drop_database(url)


def main(quick: bool = False) -> list[Row]:
    """Run this module's benchmarks; return its rows."""
    singles, batch, steps, rounds = (20, 100, 2, 2) if quick else (300, 1000, 3, 5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="loanstate-bench-store-") as tmp:
        files = (sa.make_url(f"sqlite:///{Path(tmp) / f'{n}.db'}") for n in itertools.count())
        rows += Durable("SQLite", lambda: next(files), singles, batch, steps).rows(rounds)
    with postgres_database() as url:
        if url is not None:
            rows += Durable("PostgreSQL", lambda: url, singles, batch, steps).rows(rounds)
    return rows
