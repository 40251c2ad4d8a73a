"""Adopting an existing book: the bulk import, and the dispatcher's claim on a large outbox.

1. ``SqlStore.open_loans`` registering a book of loans (``LoanRecord`` with
   status, opened_at, customer_id and institution_loan_no) on a database with
   the schema and nothing else, against a floor: the raw driver (``sqlite3`` /
   ``psycopg``) inserting the same rows into the same table with
   ``executemany``, 1000 rows per transaction (the import's own batch size) in
   the same durability mode. Target: at least 0.5x the floor's loans per
   second. Both sides generate their input lazily inside the timing (ours
   builds a ``LoanRecord`` per loan, the floor a tuple). Afterwards both
   tables hold exactly the book, every loan at version 0. The import's memory
   is measured apart (tracemalloc makes it slower): its peak while importing a
   book four times larger must stay within 1.1x of the smaller book's.
2. ``store.outbox.claim(owner, limit=32, lease=...)`` (the dispatcher's claim
   statement) on an outbox holding many delivered rows, against the same claim
   on an outbox holding none. Target: within 1.5x. The delivered rows are
   written by the raw driver before any clock starts (SQLite ``executemany``;
   PostgreSQL ``COPY``, the driver's bulk path, which fills millions of rows in
   a fraction of executemany's time). Each round, each side gets 640 fresh
   pending events and both databases are analysed (``ANALYZE``, as autovacuum
   keeps the statistics of a live system), untimed; then it claims them, 32 at
   a time; every claim must return the next 32 pending rows, oldest
   first, and the pending rows are deleted afterwards so the two outboxes
   differ only by the delivered rows.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks._checks import check, passed
from benchmarks._harness import Row, interleave
from benchmarks.bench_store import _Raw, _raw_connection, open_book, postgres_server
from loanstate import SqlStore
from loanstate.store import Change, LoanRecord
from loanstate.testing._databases import Server

AT = datetime(2024, 1, 1, tzinfo=UTC)
BATCH = 1000  # the import's default batch size: one transaction per 1000 loans on both sides
CLAIM_LIMIT = 32
CLAIMS_PER_ROUND = 20
LEASE = timedelta(hours=1)

_INSERT_LOAN = (
    "INSERT INTO loanstate_loans (loan_apply_no, status, version, customer_id, institution_loan_no,"
    " opened_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_OUTBOX_COLUMNS = (
    "request_id",
    "loan_apply_no",
    "sequence",
    "payload",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
    "delivered_at",
)


def _book(tag: str, loans: int) -> Iterator[tuple[str, str, datetime, str, str]]:
    """The book's rows, generated lazily: loan, status, opened_at, customer_id, institution_loan_no."""
    for n in range(loans):
        yield f"{tag}{n:08d}", "NEW", AT, f"C{n:08d}", f"N{n:08d}"


def _count_book(url: sa.URL, loans: int, what: str) -> None:
    """The table holds exactly ``loans`` loans, every one NEW at version 0 (after the timing)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            total = conn.scalar(sa.text("SELECT count(*) FROM loanstate_loans"))
            fresh = conn.scalar(
                sa.text(
                    "SELECT count(*) FROM loanstate_loans WHERE version = 0 AND status = 'NEW'"
                    " AND customer_id IS NOT NULL AND institution_loan_no IS NOT NULL"
                )
            )
    finally:
        engine.dispose()
    check(total == loans, f"{what}: {total} loans in the table, expected exactly {loans}")
    check(fresh == loans, f"{what}: {fresh} of {loans} loans NEW at version 0 with their identity")
    passed(f"{what}: exactly {loans:,} loans in the table, every one NEW at version 0 with its identity")


class Import:
    """Ours (``open_loans``) and the floor (raw ``executemany``) on one engine, each on a fresh database."""

    def __init__(self, engine: str, database: Callable[[], Any], loans: int) -> None:
        self.engine, self._database, self.loans = engine, database, loans
        self._tags = itertools.count()

    def _fresh(self) -> Any:
        return self._database()

    def ours(self) -> float:
        with self._fresh() as url:
            store = SqlStore(url)
            try:
                store.create_schema()
                store.outbox_status()  # opens the pooled connection, untimed
                rows = _book(f"I{next(self._tags)}-", self.loans)
                start = time.perf_counter()
                report = store.open_loans(LoanRecord(*row) for row in rows)
                seconds = time.perf_counter() - start
            finally:
                store.close()
            what = f"{self.engine} SqlStore.open_loans"
            check(
                report.opened == self.loans and report.clean,
                f"{what}: {report.opened} opened of {self.loans}, report {report}",
            )
            _count_book(url, self.loans, what)
        return self.loans / seconds

    def raw(self) -> float:
        with self._fresh() as url:
            store = SqlStore(url)
            store.create_schema()
            store.close()
            with _raw_connection(url) as raw:
                seconds = _raw_import(raw, _book(f"R{next(self._tags)}-", self.loans))
            _count_book(url, self.loans, f"{self.engine} raw driver executemany")
        return self.loans / seconds

    def rows(self, rounds: int) -> list[Row]:
        t = interleave({"ours": self.ours, "raw": self.raw}, rounds, warm_up=False)
        driver = "sqlite3" if self.engine == "SQLite" else "psycopg"
        return [
            Row(
                f"{self.engine}: open_loans, {self.loans:,} loans",
                t["ours"],
                f"raw {driver} executemany, same rows, {BATCH} per transaction",
                t["raw"],
                "loans/s",
                rounds,
                0.5,
                True,
            )
        ]


def _raw_import(raw: _Raw, rows: Iterator[tuple[str, str, datetime, str, str]]) -> float:
    """Seconds the raw driver takes to insert ``rows``, ``BATCH`` per transaction."""
    insert = _INSERT_LOAN if raw.dialect == "sqlite" else _INSERT_LOAN.replace("?", "%s")
    cur = raw.conn.cursor()
    start = time.perf_counter()
    while True:
        now = raw.when(datetime.now(UTC))
        batch = [
            (loan, status, 0, customer, number, raw.when(opened), now)
            for loan, status, opened, customer, number in itertools.islice(rows, BATCH)
        ]
        if not batch:
            break
        raw.begin()
        cur.executemany(insert, batch)
        raw.commit()
    return time.perf_counter() - start


def import_memory(directory: Path, small: int) -> Row:
    """tracemalloc's peak while importing ``small`` and ``4 * small`` loans on SQLite (flat: the same)."""
    peaks = []
    for size in (small, 4 * small):
        store = SqlStore(f"sqlite:///{directory / f'memory-{size}.db'}")
        try:
            store.create_schema()
            store.outbox_status()
            rows = _book(f"M{size}-", size)
            tracemalloc.start()
            report = store.open_loans(LoanRecord(*row) for row in rows)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        finally:
            store.close()
        check(report.opened == size, f"open_loans memory run: {report.opened} opened of {size}")
    check(peaks[1] <= peaks[0] * 1.1, f"open_loans memory grows with the book: {peaks[0]:,} B -> {peaks[1]:,} B")
    passed(
        f"open_loans memory: peak {peaks[0]:,} B for {small:,} loans, {peaks[1]:,} B for {4 * small:,}"
        f" ({peaks[1] / (4 * small):.1f} B per loan at the larger size)"
    )
    return Row(
        f"tracemalloc peak, SQLite open_loans of {4 * small:,} loans",
        peaks[1],
        f"peak, open_loans of {small:,} loans",
        peaks[0],
        "B",
        1,
        0.9,
    )


# -- the claim on a large outbox ------------------------------------------------------


def _delivered_rows(count: int, when: object) -> Iterator[tuple[Any, ...]]:
    """``count`` delivered outbox rows of loans of their own, with an event's payload (never read)."""
    for n in range(count):
        loan = f"H{n:09d}"
        payload = json.dumps(
            {
                "loan_apply_no": loan,
                "before_status": "NEW",
                "after_status": "OVERDUE",
                "change_time": "2024-01-01T00:00:00+00:00",
                "request_id": f"{loan}-1",
                "customer_id": None,
                "institution_loan_no": None,
            },
            separators=(",", ":"),
        )
        yield f"{loan}-1", loan, 1, payload, "delivered", 1, when, when, when


def fill_delivered(url: sa.URL, count: int) -> float:
    """Write ``count`` delivered rows with the raw driver and analyse the tables; return the seconds it took."""
    start = time.perf_counter()
    with _raw_connection(url) as raw:
        when = raw.when(AT)
        columns = ", ".join(_OUTBOX_COLUMNS)
        rows = _delivered_rows(count, when)
        if raw.dialect == "sqlite":
            marks = ", ".join("?" * len(_OUTBOX_COLUMNS))
            while chunk := list(itertools.islice(rows, 100_000)):
                raw.begin()
                raw.conn.executemany(f"INSERT INTO loanstate_outbox ({columns}) VALUES ({marks})", chunk)
                raw.commit()
        else:
            with raw.conn.cursor() as cur, cur.copy(f"COPY loanstate_outbox ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            raw.conn.commit()
    _analyse(url)
    return time.perf_counter() - start


class Claim:
    """The same claims on two outboxes: one with ``delivered`` rows present, one with none."""

    def __init__(self, engine: str, big: sa.URL, empty: sa.URL, delivered: int) -> None:
        self.engine, self.urls, self.delivered = engine, {"big": big, "empty": empty}, delivered
        self._tags = itertools.count()

    def _side(self, which: str) -> float:
        url = self.urls[which]
        store = SqlStore(url)
        try:
            names = [f"P{next(self._tags)}-{n:05d}" for n in range(CLAIMS_PER_ROUND * CLAIM_LIMIT)]
            open_book(store, names, AT)
            events = store.transition_many(Change(name, "OVERDUE", AT) for name in names)
            expected = [e.request_id for e in events]
            _analyse(url)  # fresh statistics, as autovacuum keeps them on a live system
            store.outbox_status()  # opens the pooled connection, untimed
            got = []
            start = time.perf_counter()
            for _ in range(CLAIMS_PER_ROUND):
                got.append(store.outbox.claim(f"bench-{which}", limit=CLAIM_LIMIT, lease=LEASE))
            seconds = time.perf_counter() - start
            ids = [[c.outbox_id for c in claims] for claims in got]
            request_ids = [c.event.request_id for claims in got for c in claims]
            what = f"{self.engine} claim, {self.delivered if which == 'big' else 0:,} delivered rows present"
            check(all(len(c) == CLAIM_LIMIT for c in got), f"{what}: claims of {[len(c) for c in got]} rows")
            flat = [i for chunk in ids for i in chunk]
            check(flat == sorted(flat) and len(set(flat)) == len(flat), f"{what}: claims not oldest first, or repeated")
            check(request_ids == expected, f"{what}: claimed {request_ids[:3]}..., expected {expected[:3]}...")
            with store.engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM loanstate_outbox WHERE state = 'pending'"))
                delivered = conn.scalar(sa.text("SELECT count(*) FROM loanstate_outbox"))
            wanted = self.delivered if which == "big" else 0
            check(delivered == wanted, f"{what}: {delivered} delivered rows, expected {wanted}")
            passed(
                f"{what}: {CLAIMS_PER_ROUND} claims each returned the next {CLAIM_LIMIT} pending events,"
                " oldest first, every one once"
            )
        finally:
            store.close()
        return seconds / CLAIMS_PER_ROUND

    def rows(self, rounds: int) -> list[Row]:
        t = interleave({"big": lambda: self._side("big"), "empty": lambda: self._side("empty")}, rounds)
        return [
            Row(
                f"{self.engine}: outbox claim of {CLAIM_LIMIT}, {self.delivered:,} delivered rows present",
                t["big"],
                "the same claim, no delivered rows (target: within 1.5x)",
                t["empty"],
                "s/op",
                rounds,
                round(1 / 1.5, 2),
            )
        ]


def _analyse(url: sa.URL) -> None:
    """Update the planner's statistics of every table (``ANALYZE``), outside any timing."""
    with _raw_connection(url) as raw:
        if raw.dialect == "postgresql":
            raw.conn.autocommit = True
        raw.conn.execute("ANALYZE")


def _new_schema(url: sa.URL) -> sa.URL:
    store = SqlStore(url)
    store.create_schema()
    store.close()
    return url


def _pg_database(server: Server) -> Callable[[], Any]:
    @contextmanager
    def fresh() -> Iterator[sa.URL]:
        url = server.create_database("loanstate_bench_import")
        try:
            yield url
        finally:
            server.drop_database(url)

    return fresh


def _sqlite_database(directory: Path) -> Callable[[], Any]:
    files = itertools.count()

    @contextmanager
    def fresh() -> Iterator[sa.URL]:
        path = directory / f"import-{next(files)}.db"
        try:
            yield sa.make_url(f"sqlite:///{path}")
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    return fresh


def _claim_rows(engine: str, big: sa.URL, empty: sa.URL, delivered: int, rounds: int) -> list[Row]:
    seconds = fill_delivered(_new_schema(big), delivered)
    print(f"({engine}: {delivered:,} delivered rows written and analysed in {seconds:.0f} s, untimed)", flush=True)
    _analyse(_new_schema(empty))  # analysed alike, so the two differ only by the rows
    return Claim(engine, big, empty, delivered).rows(rounds)


def main(quick: bool = False) -> list[Row]:
    """Run this module's benchmarks; return its rows."""
    # The full sizes fit a run of about ten minutes on 2 cores (docs/performance.md says
    # why they are not the 1,000,000 loans on PostgreSQL and 5,000,000 delivered rows).
    if quick:
        sqlite_book, pg_book, memory, delivered, rounds = 2000, 2000, 2000, 5000, 2
    else:
        sqlite_book, pg_book, memory, delivered, rounds = 1_000_000, 50_000, 10_000, 1_000_000, 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="loanstate-bench-adopt-") as tmp:
        directory = Path(tmp)
        rows += Import("SQLite", _sqlite_database(directory), sqlite_book).rows(rounds)
        rows.append(import_memory(directory, memory))
        rows += _claim_rows(
            "SQLite",
            sa.make_url(f"sqlite:///{directory / 'big.db'}"),
            sa.make_url(f"sqlite:///{directory / 'empty.db'}"),
            delivered,
            rounds,
        )
    server = postgres_server()
    if server is not None:
        rows += Import("PostgreSQL", _pg_database(server), pg_book).rows(rounds)
        big, empty = server.create_database("loanstate_bench_big"), server.create_database("loanstate_bench_empty")
        try:
            rows += _claim_rows("PostgreSQL", big, empty, delivered, rounds)
        finally:
            server.drop_database(big)
            server.drop_database(empty)
    return rows
