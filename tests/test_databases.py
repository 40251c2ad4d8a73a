"""How tests find their database servers: environment, local server, throwaway server, else skip (fail in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from loanstate.testing._databases import ENV_MYSQL, ENV_POSTGRES, Server, Unavailable, find_server, require

NOWHERE_MYSQL = "mysql+pymysql://root@127.0.0.1:1/mysql"


def test_an_environment_url_comes_first(
    loanstate_postgres_server: Server | Unavailable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL in LOANSTATE_TEST_POSTGRES_URL is used as given when the server answers."""
    server = require(loanstate_postgres_server)
    monkeypatch.setenv(ENV_POSTGRES, server.url.render_as_string(hide_password=False))
    found = find_server("postgresql", start=False)
    assert isinstance(found, Server)
    assert (found.origin, found.url) == ("env", server.url)


def test_an_environment_url_that_does_not_answer_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL from the environment that does not answer is an error to report, never silently replaced."""
    monkeypatch.setenv(ENV_MYSQL, NOWHERE_MYSQL)
    found = find_server("mysql")
    assert isinstance(found, Unavailable)
    assert "127.0.0.1:1" in found.reason
    assert "from the environment" in found.reason


def test_nothing_found_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no server, require() skips with the reason; under CI=true it fails instead."""
    missing = Unavailable("postgresql", "no postgresql server for the tests: nothing answers")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="nothing answers"):
        require(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and no postgresql server"):
        require(missing)


def test_each_test_gets_its_own_database(loanstate_postgres_server: Server | Unavailable) -> None:
    """create_database() makes a new, uniquely named database that drop_database() removes."""
    server = require(loanstate_postgres_server)
    first, second = server.create_database(), server.create_database()
    try:
        assert first.database != second.database
        engine = sa.create_engine(first, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        engine.dispose()
    finally:
        server.drop_database(first)
        server.drop_database(second)
    with pytest.raises(ValueError, match="refusing to drop"):
        server.drop_database(server.url.set(database="postgres"))


@pytest.mark.slow
def test_a_throwaway_mariadb_starts_from_the_installed_binaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a local server, a MariaDB is started in a temporary directory, serves a database, and stops."""
    monkeypatch.delenv(ENV_MYSQL, raising=False)
    found = find_server("mysql", use_local=False, workdir=tmp_path)
    if isinstance(found, Unavailable):
        assert "mariadb" in found.reason  # the binaries are missing here: the reason says so
        return
    try:
        assert found.origin == "throwaway"
        url = found.create_database()
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT @@character_set_database").scalar() == "utf8mb4"
        engine.dispose()
        found.drop_database(url)
    finally:
        found.stop()
    assert isinstance(find_server("mysql", use_local=False, start=False), Unavailable)


@pytest.mark.slow
def test_a_throwaway_postgresql_starts_or_says_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a local server, PostgreSQL starts from the binaries (as `postgres` via runuser under root) and serves."""
    monkeypatch.delenv(ENV_POSTGRES, raising=False)
    found = find_server("postgresql", use_local=False, workdir=tmp_path)
    if isinstance(found, Unavailable):
        # CI has the binaries (and runs as root): there the throwaway path must really run.
        assert os.environ.get("CI", "").lower() not in ("1", "true", "yes"), found.reason
        assert any(word in found.reason for word in ("root", "pg_ctl", "initdb", "failed"))
        return
    try:
        assert found.origin == "throwaway"
        url = found.create_database()
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == url.database
        engine.dispose()
        found.drop_database(url)
    finally:
        found.stop()
    stopped = sa.create_engine(found.url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
    with pytest.raises(sa.exc.OperationalError):
        stopped.connect()
    stopped.dispose()
