"""Shared fixtures for loanstate's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from loanstate.store import SqlStore

# The engines every store and dispatcher test runs on. The server fixtures
# (loanstate_postgres_url, loanstate_mysql_url) come from the loanstate pytest
# plugin: a fresh database per test, dropped afterwards.
ENGINES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]
SERVERS = [p for p in ENGINES if p.id != "sqlite"]


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> sa.URL:
    """A fresh, empty database on each engine: an SQLite file, or a new database on the server."""
    kind = request.param
    if kind == "sqlite":
        return sa.make_url(f"sqlite:///{tmp_path / 'loanstate.db'}")
    url: sa.URL = request.getfixturevalue("loanstate_postgres_url" if kind == "postgresql" else "loanstate_mysql_url")
    return url


@pytest.fixture(params=SERVERS)
def server_db_url(request: pytest.FixtureRequest) -> sa.URL:
    """A fresh database on each server engine (PostgreSQL, MySQL/MariaDB): many writers at once."""
    url: sa.URL = request.getfixturevalue(
        "loanstate_postgres_url" if request.param == "postgresql" else "loanstate_mysql_url"
    )
    return url


@pytest.fixture
def store(db_url: sa.URL) -> Iterator[SqlStore]:
    """A SqlStore with its schema created, on each engine."""
    made = SqlStore(db_url)
    made.create_schema()
    try:
        yield made
    finally:
        made.close()
