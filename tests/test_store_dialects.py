"""The one module where SQLite, PostgreSQL and MySQL/MariaDB differ: locking, upserts, times, retryable errors."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from _durable import populate

from loanstate import SqlStore
from loanstate.store import Claim
from loanstate.store._dialects import for_claim, insert_if_absent, is_retryable, make_engine, retrying
from loanstate.store._schema import meta, outbox


@pytest.mark.parametrize(
    ("url", "locks"),
    [("postgresql+psycopg://", True), ("mysql+pymysql://", True), ("sqlite://", False)],
)
def test_claims_skip_locked_rows_on_the_servers_only(url: str, locks: bool) -> None:
    """The claim query says FOR UPDATE SKIP LOCKED on PostgreSQL and MySQL; SQLite has one writer anyway."""
    dialect = sa.create_engine(url).dialect  # no connection is made
    sql = str(for_claim(sa.select(outbox.c.id), dialect.name).compile(dialect=dialect))
    assert ("FOR UPDATE SKIP LOCKED" in sql) is locks


def test_insert_if_absent_keeps_the_existing_row(db_url: sa.URL) -> None:
    """Each engine's own upsert spelling leaves an existing row untouched."""
    engine = make_engine(db_url)
    meta.create(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(insert_if_absent(meta, {"key": "k", "value": "first"}, engine.dialect.name))
        conn.execute(insert_if_absent(meta, {"key": "k", "value": "second"}, engine.dialect.name))
        assert conn.execute(sa.select(meta.c.value)).scalars().all() == ["first"]
    engine.dispose()


def test_a_busy_sqlite_file_is_a_retryable_error(tmp_path: Path) -> None:
    """'database is locked' from SQLite counts as retryable; a syntax error does not."""
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05}, poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(sa.exc.OperationalError) as busy, engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert is_retryable(busy.value)
        with pytest.raises(sa.exc.OperationalError) as wrong, engine.connect() as conn:
            conn.exec_driver_sql("SELEC 1")
        assert not is_retryable(wrong.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()


def test_deadlocks_are_retried_until_both_transactions_commit(server_db_url: sa.URL) -> None:
    """Two transactions locking two rows in opposite order deadlock; the loser is retried and both commit."""
    engine = make_engine(server_db_url)
    try:
        _deadlock_and_retry(engine)
    finally:
        # Also when an assertion fails: a pooled connection left to the garbage collector
        # warns (an error here) in whichever later test happens to be running.
        engine.dispose()


def _deadlock_and_retry(engine: sa.Engine) -> None:
    table = sa.Table("pair", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.Integer))
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 1, "n": 0}, {"id": 2, "n": 0}])
    both_hold_one = threading.Barrier(2, timeout=30)
    attempts = {1: 0, 2: 0}

    def bump(first: int, second: int) -> None:
        def transaction() -> None:
            attempts[first] += 1
            with engine.begin() as conn:
                conn.execute(table.update().where(table.c.id == first).values(n=table.c.n + 1))
                if attempts[first] == 1:
                    both_hold_one.wait()  # the first time round, make sure the two cross
                conn.execute(table.update().where(table.c.id == second).values(n=table.c.n + 1))

        retrying(transaction)

    threads = [threading.Thread(target=bump, args=pair) for pair in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with engine.connect() as conn:
        assert conn.execute(sa.select(table.c.n).order_by(table.c.id)).scalars().all() == [2, 2]
    # At least one deadlock victim was retried. A retry can deadlock again (it may lock its
    # first row before the winner, woken by the abort, re-takes it), so more is fine.
    assert sum(attempts.values()) >= 3


def test_a_claim_skips_rows_another_worker_is_claiming(server_db_url: sa.URL) -> None:
    """While one worker's claim transaction holds rows, another worker's claim takes the others at once."""
    store = SqlStore(server_db_url)
    store.create_schema()
    populate(store, loans=4, changes=1)
    lease = timedelta(seconds=60)
    got: list[list[Claim]] = []
    try:
        with store.engine.begin() as holding:
            first = store.outbox._claim(holding, "worker-a", 2, lease)  # locked, not yet committed
            other = threading.Thread(target=lambda: got.append(store.outbox.claim("worker-b", limit=4, lease=lease)))
            other.start()
            other.join(30)  # without SKIP LOCKED it would wait for worker-a's commit
            finished = not other.is_alive()
        other.join(60)
        assert finished, "the second claim waited for the first one's locks"
        [second] = got
        assert len(first) == len(second) == 2
        assert {c.outbox_id for c in first}.isdisjoint(c.outbox_id for c in second)
    finally:
        store.close()
