"""Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place.

The rest of the store writes portable SQLAlchemy Core and asks this module for:

* the engine, set up per engine kind: SQLite in WAL mode with a busy timeout,
  ``synchronous=FULL`` and ``BEGIN IMMEDIATE`` for writers (so a
  read-then-compare-and-set holds the write lock from its first read);
  MySQL/MariaDB at ``READ COMMITTED`` (no gap locks between writers and
  claimers, and an ``UPDATE`` sees the latest committed version);
  PostgreSQL as it comes (``READ COMMITTED``);
* datetimes: stored as naive UTC with microseconds on every engine (MySQL's
  ``DATETIME`` would otherwise drop them), returned as aware UTC;
* claiming: ``FOR UPDATE SKIP LOCKED`` on the two servers, nothing on SQLite
  (one writer at a time already);
* an insert that leaves an existing row alone (each engine spells the upsert
  differently);
* which database errors are worth retrying (deadlocks, serialisation failures,
  lock timeouts, a busy SQLite file);
* refusing autocommit (a change's three writes must commit together), and an
  in-memory SQLite database every thread shares (one connection, taken in turn).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import sqlalchemy as sa
import stamina
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool

__all__ = [
    "READ_ONLY",
    "TABLE_OPTIONS",
    "BigId",
    "Key",
    "UtcDateTime",
    "autocommit_problem",
    "for_claim",
    "insert_if_absent",
    "is_retryable",
    "make_engine",
    "retrying",
]

T = TypeVar("T")

#: Execution option marking a read-only transaction (SQLite then begins DEFERRED, not IMMEDIATE).
READ_ONLY: Final = {"loanstate_read_only": True}

_SQLITE_BUSY_MS: Final = 30_000
# Engines configured here (including ones the caller passed in), so listeners go on once.
_configured: weakref.WeakSet[Engine] = weakref.WeakSet()

BigId: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Key(sa.types.TypeDecorator[str]):
    """A string compared exactly: case, accents and trailing spaces all count.

    MySQL/MariaDB compare strings case-insensitively and ignore trailing spaces
    by default, which would make two base64 request ids (or two loan numbers)
    collide in a unique index; a binary NO PAD collation keeps them distinct.
    """

    impl = sa.String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mysql":
            collation = "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"
            return dialect.type_descriptor(mysql.VARCHAR(self.length, charset="utf8mb4", collation=collation))
        return dialect.type_descriptor(sa.String(self.length))


#: Table options: MySQL/MariaDB tables in full UTF-8 (statuses and names may be Chinese).
TABLE_OPTIONS: Final[dict[str, Any]] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_engine": "InnoDB",
}


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime, stored as naive UTC with microseconds, read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()!r} reached the store; attach a tzinfo")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


_AUTOCOMMIT_PROBLEM: Final = (
    "is in AUTOCOMMIT mode: each write would commit on its own, and a crash between them would leave "
    "a status and its history with no outbox row (a change never notified); use the default isolation level"
)


def autocommit_problem(target: Engine | Connection) -> str | None:
    """Why ``target`` cannot carry the store's writes (it autocommits), or ``None`` when it can."""
    level = target.get_execution_options().get("isolation_level")
    if level is None and isinstance(target, Connection):
        # A connection's own options say nothing when the setting came from its engine.
        level = target.engine.get_execution_options().get("isolation_level")
    if level is None:
        engine = target.engine if isinstance(target, Connection) else target
        # create_engine(isolation_level=...) keeps the level on the dialect, not in the options.
        level = getattr(engine.dialect, "_on_connect_isolation_level", None)
    return _AUTOCOMMIT_PROBLEM if level == "AUTOCOMMIT" else None


def _in_memory(url: sa.URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url_or_engine: str | sa.URL | Engine) -> Engine:
    """An engine for ``url_or_engine``, configured for the store (see the module docstring).

    An engine passed in is configured in place (SQLite listeners are added and
    its pool recycled so every connection gets them); the caller keeps owning it.
    """
    if isinstance(url_or_engine, Engine):
        engine = url_or_engine
        if engine.dialect.name == "sqlite" and engine not in _configured:
            if _in_memory(engine.url):
                _share_memory_engine(engine)
            _configure_sqlite(engine)
            engine.dispose()
        _configured.add(engine)
        return engine
    url = sa.make_url(url_or_engine)
    backend = url.get_backend_name()
    if backend == "sqlite" and _in_memory(url):
        # One connection for every thread (the dispatchers deliver from others), so all
        # see one database; a lock hands it to one transaction at a time.
        engine = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        _configure_sqlite(engine)
        _take_in_turn(engine)
    elif backend == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": _SQLITE_BUSY_MS / 1000})
        _configure_sqlite(engine)
    elif backend in ("mysql", "mariadb"):
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        engine = sa.create_engine(
            url, isolation_level="READ COMMITTED", pool_pre_ping=True, pool_size=10, max_overflow=40
        )
    else:
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=40)
    _configured.add(engine)
    return engine


def _share_memory_engine(engine: Engine) -> None:
    """Make a caller's in-memory SQLite engine one database for every thread, or refuse it."""
    if not isinstance(engine.pool, StaticPool):
        # Its default pool gives each thread its own connection, hence its own empty database:
        # a dispatcher delivering from another thread would find nothing to send.
        raise ValueError(
            "is an in-memory SQLite engine with one database per thread; pass the URL 'sqlite://' instead "
            "(the store then shares one connection between threads), or create the engine with "
            "poolclass=StaticPool and connect_args={'check_same_thread': False}"
        )
    _take_in_turn(engine)


def _take_in_turn(engine: Engine) -> None:
    """Let one thread at a time hold the engine's single connection (checked out until checked in)."""
    turn = threading.RLock()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        turn.acquire()

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        turn.release()


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours to say.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, which is the point of a durable outbox.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN: the read before a compare-and-set
        # cannot go stale, and two writers never deadlock upgrading their locks.
        read_only = conn.get_execution_options().get("loanstate_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def for_claim(statement: sa.Select[Any], dialect_name: str) -> sa.Select[Any]:
    """Lock the rows ``statement`` selects for claiming, skipping rows another worker holds."""
    if dialect_name in ("postgresql", "mysql"):
        return statement.with_for_update(skip_locked=True)
    return statement


def insert_if_absent(table: sa.Table, values: Mapping[str, object], dialect_name: str) -> sa.Executable:
    """An INSERT of ``values`` into ``table`` that does nothing when the primary key exists."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).values(**values).on_conflict_do_nothing()
    if dialect_name == "mysql":
        stmt = mysql.insert(table).values(**values)
        key = next(iter(table.primary_key.columns)).name
        # Assigning the key to itself is MySQL's way to say "keep the row as it is".
        return stmt.on_duplicate_key_update({key: stmt.inserted[key]})
    raise ValueError(f"unsupported database dialect {dialect_name!r} (use sqlite, postgresql or mysql)")


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a database error that the same transaction may pass on a second try."""
    if not isinstance(exc, sa.exc.DBAPIError) or exc.connection_invalidated:
        return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in ("40001", "40P01", "55P03"):  # serialization failure, deadlock, lock not available
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in (1205, 1213):  # MySQL lock wait timeout, deadlock
        return True
    return "database is locked" in str(orig)


def retrying(fn: Callable[[], T]) -> T:
    """Run ``fn`` (one whole transaction), again on a retryable database error."""
    try:
        # The usual case pays for no retry machinery; stamina steps in after a first failure.
        return fn()
    except Exception as exc:
        if not is_retryable(exc):
            raise
    for attempt in stamina.retry_context(
        on=is_retryable, attempts=20, timeout=60.0, wait_initial=0.005, wait_max=0.5, wait_jitter=0.05
    ):
        with attempt:
            return fn()
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover
