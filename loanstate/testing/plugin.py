"""The pytest plugin loanstate registers (entry point ``pytest11``): fixtures and Hypothesis profiles.

Fixtures (each function-scoped, cleaned up after the test):

``loan_machine``
    the lifecycle the other fixtures use: :func:`~loanstate.default_machine`;
    override the fixture in your ``conftest.py`` to use yours.
``in_memory_notifier``
    an :class:`~loanstate.notifiers.InMemoryNotifier`.
``fake_top_gateway``
    a running :class:`~loanstate.testing.FakeTopGateway` on 127.0.0.1 that
    checks statuses and pairs against ``loan_machine``.
``sqlite_store``
    a :class:`~loanstate.store.SqlStore` on a fresh SQLite file, schema created.
``postgres_store``
    the same on a fresh PostgreSQL database (skipped when no server can be
    found, a failure under ``CI=true``; see :mod:`loanstate.testing._databases`).

Hypothesis profiles ``loanstate-dev`` (30 examples, quick local runs) and
``loanstate-ci`` (100 examples, no deadline: shared CI machines are slow) are
registered but *not* loaded: pick one with Hypothesis's own
``--hypothesis-profile=loanstate-ci``, the ``loanstate_hypothesis_profile`` ini
option, or the ``LOANSTATE_HYPOTHESIS_PROFILE`` environment variable; the
value ``auto`` means ``loanstate-ci`` when ``CI`` is set, else ``loanstate-dev``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Database fixtures: a fresh PostgreSQL / MySQL database per test (see loanstate.testing._databases).
from loanstate.testing._databases import (
    loanstate_mysql_server,
    loanstate_mysql_url,
    loanstate_postgres_server,
    loanstate_postgres_url,
)

if TYPE_CHECKING:
    import sqlalchemy as sa

    from loanstate._machine import LoanMachine
    from loanstate.fake import FakeTopGateway
    from loanstate.notifiers import InMemoryNotifier
    from loanstate.store import SqlStore

__all__ = [
    "PROFILES",
    "fake_top_gateway",
    "in_memory_notifier",
    "loan_machine",
    "loanstate_mysql_server",
    "loanstate_mysql_url",
    "loanstate_postgres_server",
    "loanstate_postgres_url",
    "postgres_store",
    "pytest_addoption",
    "pytest_configure",
    "sqlite_store",
]

#: The profiles this plugin registers, by short name.
PROFILES = {"dev": "loanstate-dev", "ci": "loanstate-ci"}
_INI = "loanstate_hypothesis_profile"


# The plugin is registered for every pytest run once loanstate is installed, so
# it must load without Hypothesis (the "test" extra): then the fixtures still
# work and the profiles are simply absent.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - exercised in a subprocess by the kit's tests
    _HAS_HYPOTHESIS = False
else:
    _HAS_HYPOTHESIS = True
    settings.register_profile(
        PROFILES["ci"],
        max_examples=100,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(PROFILES["dev"], max_examples=30, deadline=None)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ini option that picks a Hypothesis profile."""
    parser.addini(
        _INI,
        "Hypothesis profile to load: loanstate-dev, loanstate-ci, any registered name, or auto (CI -> ci, else dev)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Load the chosen profile, before test modules (and their ``@settings``) are imported."""
    name = os.environ.get("LOANSTATE_HYPOTHESIS_PROFILE") or str(config.getini(_INI))
    if name == "auto":
        name = "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"
    if not name:
        return
    if not _HAS_HYPOTHESIS:
        raise pytest.UsageError(f"{_INI} / LOANSTATE_HYPOTHESIS_PROFILE is {name!r}, but Hypothesis is not installed")
    from hypothesis import settings

    settings.load_profile(PROFILES.get(name, name))


@pytest.fixture
def loan_machine() -> LoanMachine:
    """The lifecycle the loanstate fixtures use (override this fixture to use your own)."""
    from loanstate._machine import default_machine

    return default_machine()


@pytest.fixture
def in_memory_notifier() -> Iterator[InMemoryNotifier]:
    """An InMemoryNotifier: records what it is sent, can be told to fail."""
    from loanstate.notifiers import InMemoryNotifier

    with InMemoryNotifier() as notifier:
        yield notifier


@pytest.fixture
def fake_top_gateway(loan_machine: LoanMachine) -> Iterator[FakeTopGateway]:
    """A FakeTopGateway running on loopback, checking against ``loan_machine``."""
    from loanstate.fake import FakeTopGateway

    with FakeTopGateway(machine=loan_machine) as gateway:
        yield gateway


def _store(url: str | sa.URL, machine: LoanMachine) -> Iterator[SqlStore]:
    from loanstate.store import SqlStore

    store = SqlStore(url, machine=machine)
    try:
        store.create_schema()
        yield store
    finally:
        store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, loan_machine: LoanMachine) -> Iterator[SqlStore]:
    """A SqlStore on a fresh SQLite file, schema created, closed afterwards."""
    yield from _store(f"sqlite:///{tmp_path / 'loanstate.sqlite3'}", loan_machine)


@pytest.fixture
def postgres_store(loanstate_postgres_url: sa.URL, loan_machine: LoanMachine) -> Iterator[SqlStore]:
    """A SqlStore on a fresh PostgreSQL database (dropped afterwards); skipped where there is no server."""
    yield from _store(loanstate_postgres_url, loan_machine)
