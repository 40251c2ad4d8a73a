"""How tests find a PostgreSQL and a MySQL/MariaDB server, and get a fresh database on it.

For each engine, in order:

1. the URL in an environment variable (``LOANSTATE_TEST_POSTGRES_URL``,
   ``LOANSTATE_TEST_MYSQL_URL``), pointing at a server where the user may
   create and drop databases;
2. a local server on the standard port (127.0.0.1:5432 as ``postgres``,
   127.0.0.1:3306 as ``root``, no password), when one answers;
3. a throwaway server started from the installed binaries in a temporary
   directory on a free port (PostgreSQL with ``initdb`` + ``pg_ctl``, as the
   unprivileged ``postgres`` user through ``runuser`` when the tests run as
   root, since PostgreSQL refuses root; MariaDB with ``mariadb-install-db`` +
   ``mariadbd``), stopped at the end of the session;
4. otherwise the tests that need it are skipped, with the reason printed,
   except under ``CI=true``, where a missing database fails the run.

Each test gets a uniquely named database (:meth:`Server.create_database`),
dropped afterwards. The pytest plugin exposes this as the fixtures
``loanstate_postgres_url`` and ``loanstate_mysql_url``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Literal

import attrs
import pytest
import sqlalchemy as sa

__all__ = [
    "ENV_MYSQL",
    "ENV_POSTGRES",
    "Server",
    "Unavailable",
    "find_server",
    "loanstate_mysql_server",
    "loanstate_mysql_url",
    "loanstate_postgres_server",
    "loanstate_postgres_url",
    "require",
]

ENV_POSTGRES: Final = "LOANSTATE_TEST_POSTGRES_URL"
ENV_MYSQL: Final = "LOANSTATE_TEST_MYSQL_URL"

Kind = Literal["postgresql", "mysql"]

# The unprivileged system user a throwaway PostgreSQL runs as when the tests run as root.
_POSTGRES_USER: Final = "postgres"

_LOCAL: Final[dict[Kind, str]] = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/mysql",
}


@attrs.define
class Server:
    """A database server tests may create databases on; ``origin`` says how it was found."""

    kind: Kind
    url: sa.URL
    origin: Literal["env", "local", "throwaway"]
    _stop: Callable[[], None] | None = None

    def create_database(self, prefix: str = "loanstate_test") -> sa.URL:
        """Create a uniquely named, empty database; return its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        suffix = " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if self.kind == "mysql" else ""
        self._admin(f"CREATE DATABASE {name}{suffix}")
        return self.url.set(database=name)

    def drop_database(self, url: sa.URL) -> None:
        """Drop a database :meth:`create_database` made (closing any session left on PostgreSQL)."""
        name = url.database
        if not name or not name.startswith("loanstate"):
            raise ValueError(f"refusing to drop {name!r}: not a database the tests created")
        force = " WITH (FORCE)" if self.kind == "postgresql" else ""
        self._admin(f"DROP DATABASE IF EXISTS {name}{force}")

    def stop(self) -> None:
        """Stop the server if this session started it."""
        if self._stop is not None:
            self._stop()
            self._stop = None

    def _admin(self, sql: str) -> None:
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()


@attrs.frozen
class Unavailable:
    """Why no server of this kind could be found or started."""

    kind: Kind
    reason: str


def _answers(url: sa.URL | str) -> str | None:
    """``None`` when a server answers at ``url``, else why not."""
    args = {"connect_timeout": 3}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        engine.dispose()
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _which(name: str) -> str | None:
    extra = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin", "/usr/lib/postgresql/bin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def _as_postgres_user() -> list[str] | str:
    """The command prefix that runs a PostgreSQL binary unprivileged, or why there is none.

    PostgreSQL refuses to run as root: there the binaries run as the
    ``postgres`` system user (which the server packages create) through
    ``runuser``; anyone else runs them as themselves.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(_POSTGRES_USER)
    except KeyError:
        return f"running as root, and there is no {_POSTGRES_USER!r} user to run PostgreSQL as"
    runuser = _which("runuser")
    if runuser is None:
        return "running as root, and runuser (util-linux) is not installed to run PostgreSQL unprivileged"
    return [runuser, "-u", _POSTGRES_USER, "--"]


def _start_postgres(workdir: Path) -> Server | str:
    pg_ctl = _which("pg_ctl")
    if pg_ctl is None:
        return "pg_ctl is not installed"
    initdb = Path(os.path.realpath(pg_ctl)).with_name("initdb")
    if not initdb.exists():
        return f"initdb is not installed beside {pg_ctl}"
    prefix = _as_postgres_user()
    if isinstance(prefix, str):
        return prefix
    if prefix:
        # The unprivileged user must own the data directory and reach it: pytest's
        # own temporary directories are private to root, so use one of our own.
        workdir = Path(tempfile.mkdtemp(prefix="loanstate-postgresql-"))
        record = pwd.getpwnam(_POSTGRES_USER)
        os.chown(workdir, record.pw_uid, record.pw_gid)
    datadir, log, port = workdir / "pgdata", workdir / "postgresql.log", _free_port()

    def run(*args: str, timeout: float = 120) -> str | None:
        """Run a PostgreSQL binary (as the unprivileged user when root); ``None`` on success, else why not."""
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False, timeout=timeout)
        return None if done.returncode == 0 else f"{Path(args[0]).name} failed: {done.stderr.strip()[-300:]}"

    def stop() -> None:
        run(pg_ctl, "stop", "-D", str(datadir), "-m", "fast", "-w")
        if prefix:
            shutil.rmtree(workdir, ignore_errors=True)

    why = run(str(initdb), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -h 127.0.0.1 -k {workdir}"
    why = why or run(pg_ctl, "start", "-D", str(datadir), "-l", str(log), "-w", "-t", "90", "-o", options, timeout=120)
    url = sa.make_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
    if why is None:
        why = _answers(url)
    if why is not None:
        stop()
        return f"starting PostgreSQL from {pg_ctl} failed ({why})"
    return Server("postgresql", url, "throwaway", stop)


def _start_mariadb(workdir: Path) -> Server | str:
    install, server = _which("mariadb-install-db"), _which("mariadbd")
    if install is None or server is None:
        return "mariadb-install-db / mariadbd are not installed"
    datadir, log = workdir / "mariadb-data", workdir / "mariadb.log"
    user = ["--user=root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    done = subprocess.run(
        [install, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=normal", *user],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        return f"mariadb-install-db failed: {done.stderr.strip()[-300:]}"
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                server,
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={workdir / 'mariadb.sock'}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                *user,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()

    url = sa.make_url(f"mysql+pymysql://root@127.0.0.1:{port}/mysql")
    deadline = time.monotonic() + 60
    while (why := _answers(url)) is not None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop()
            return f"mariadbd did not come up ({why}); log: {log.read_text(errors='replace')[-300:]}"
        time.sleep(0.2)
    return Server("mysql", url, "throwaway", stop)


def find_server(
    kind: Kind, *, use_local: bool = True, start: bool = True, workdir: Path | None = None
) -> Server | Unavailable:
    """Find (or start) a server of ``kind`` following the order in the module docstring."""
    env = os.environ.get(ENV_POSTGRES if kind == "postgresql" else ENV_MYSQL)
    if env:
        why = _answers(env)
        if why is None:
            return Server(kind, sa.make_url(env), "env")
        # An explicit URL that does not answer is a mistake to report, not to paper over.
        url = sa.make_url(env).render_as_string(hide_password=True)
        return Unavailable(kind, f"{url} (from the environment) does not answer: {why}")
    reasons = []
    if use_local:
        why = _answers(_LOCAL[kind])
        if why is None:
            return Server(kind, sa.make_url(_LOCAL[kind]), "local")
        reasons.append(f"no local server at {_LOCAL[kind]}: {why}")
    if start:
        where = workdir or Path(tempfile.mkdtemp(prefix=f"loanstate-{kind}-"))
        started = _start_postgres(where) if kind == "postgresql" else _start_mariadb(where)
        if isinstance(started, Server):
            return started
        reasons.append(started)
    name = ENV_POSTGRES if kind == "postgresql" else ENV_MYSQL
    return Unavailable(kind, f"no {kind} server for the tests (set {name}): " + "; ".join(reasons))


def require(found: Server | Unavailable) -> Server:
    """The server, or skip the test with the reason (a failure under ``CI=true``)."""
    if isinstance(found, Server):
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {found.reason}", pytrace=False)
    pytest.skip(found.reason)


def _session_server(kind: Kind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server | Unavailable]:
    found = find_server(kind, workdir=tmp_path_factory.mktemp(f"{kind}-server"))
    try:
        yield found
    finally:
        if isinstance(found, Server):
            found.stop()


def _fresh_database(found: Server | Unavailable) -> Iterator[sa.URL]:
    """A fresh database on the session's server (or ``require``'s skip), dropped after the test."""
    server = require(found)
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture(scope="session")
def loanstate_postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server | Unavailable]:
    """The PostgreSQL server for this session (or why there is none)."""
    yield from _session_server("postgresql", tmp_path_factory)


@pytest.fixture(scope="session")
def loanstate_mysql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server | Unavailable]:
    """The MySQL/MariaDB server for this session (or why there is none)."""
    yield from _session_server("mysql", tmp_path_factory)


@pytest.fixture
def loanstate_postgres_url(loanstate_postgres_server: Server | Unavailable) -> Iterator[sa.URL]:
    """URL of a fresh PostgreSQL database, dropped after the test."""
    yield from _fresh_database(loanstate_postgres_server)


@pytest.fixture
def loanstate_mysql_url(loanstate_mysql_server: Server | Unavailable) -> Iterator[sa.URL]:
    """URL of a fresh MySQL/MariaDB database, dropped after the test."""
    yield from _fresh_database(loanstate_mysql_server)
