"""The schema as loanstate owns it: versions, the upgrade from a real schema-1 database, Alembic's view."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import _schema_v1 as v1
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from loanstate import InvalidConfiguration
from loanstate.store import SCHEMA_VERSION, SqlStore
from loanstate.store import _schema as schema

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def _differences(engine: sa.Engine) -> list[object]:
    """What Alembic's autogenerate would write to bring the database to loanstate's tables."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, schema.metadata))


@pytest.fixture
def v1_database(db_url: sa.URL) -> Iterator[sa.Engine]:
    """A database as loanstate 0.1.0 left it: schema 1, loans, history and outbox rows in every state."""
    engine = sa.create_engine(db_url)
    v1.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(v1.meta).values(key="schema_version", value="1"))
    # The writes of the durable path are the same on schema 1: use them to fill it.
    store = SqlStore(engine)
    for n in range(4):
        store.open_loan(f"L{n}", at=T0)
        store.transition(f"L{n}", after="OVERDUE", at=T0 + timedelta(hours=1))
        store.transition(f"L{n}", after="NEW", at=T0 + timedelta(hours=2))
    with engine.begin() as conn:
        row = v1.outbox.c
        conn.execute(sa.update(v1.outbox).where(row.sequence == 1).values(state="delivered", delivered_at=T0))
        conn.execute(sa.update(v1.outbox).where(row.loan_apply_no == "L1", row.sequence == 2).values(state="skipped"))
        conn.execute(
            sa.update(v1.outbox)
            .where(row.loan_apply_no == "L2", row.sequence == 2)
            .values(state="parked", last_error="code 41")
        )
    store.close()
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_new_database_is_created_at_the_current_version(store: SqlStore) -> None:
    """create_schema records SCHEMA_VERSION; the status counts every table's rows."""
    status = store.schema_status()
    assert status.version == SCHEMA_VERSION == status.expected
    assert status.current
    assert not status.needs_upgrade
    assert not status.too_new
    assert dict(status.rows) == {table.name: 0 for table in schema.metadata.sorted_tables} | {"loanstate_meta": 1}


def test_before_init_the_status_says_nothing_is_there(db_url: sa.URL) -> None:
    """An empty database has no version and no tables; upgrade refuses it and names db init."""
    store = SqlStore(db_url)
    try:
        status = store.schema_status()
        assert status.version is None
        assert not status.current
        assert not status.needs_upgrade
        assert set(status.rows.values()) == {None}
        with pytest.raises(InvalidConfiguration, match="db init"):
            store.upgrade_schema()
    finally:
        store.close()


def test_upgrade_from_a_real_schema_1_database(v1_database: sa.Engine) -> None:
    """A schema-1 database is refused until upgraded; the upgrade keeps every row and the store works on."""
    store = SqlStore(v1_database)
    before = store.schema_status()
    assert before.version == 1
    assert before.needs_upgrade
    assert before.rows["loanstate_outbox"] == 8
    assert before.rows["loanstate_history"] == 8
    with pytest.raises(InvalidConfiguration, match="db upgrade"):
        store.create_schema()

    steps = store.upgrade_schema()
    assert steps == [
        "added column loanstate_outbox.skipped_at",
        "added index ix_loanstate_outbox_claim",
        "added index ix_loanstate_outbox_delivered",
        "added table loanstate_pauses",
        "schema version 1 -> 2",
    ]
    after = store.schema_status()
    assert after.current
    assert after.rows == {**before.rows, "loanstate_pauses": 0}
    store.create_schema()  # now accepted
    assert store.upgrade_schema() == []  # nothing left to do

    entries = {(e.loan_apply_no, e.sequence): e for e in store.outbox_entries()}
    assert entries[("L1", 2)].state == "skipped"
    with v1_database.connect() as conn:
        skipped_at = conn.scalar(sa.select(schema.outbox.c.skipped_at).where(schema.outbox.c.state == "skipped"))
    assert skipped_at == entries[("L1", 2)].created_at  # schema 1 kept no skip time: creation is the bound
    assert [e.after_status for e in store.history("L0")] == ["OVERDUE", "NEW"]
    event = store.transition("L0", after="SETTLED", at=T0 + timedelta(hours=3))
    assert [e.request_id for e in store.history("L0")][-1] == event.request_id
    assert _differences(v1_database) == []  # the upgrade reaches exactly the tables db init makes
    store.close()


def test_an_interrupted_upgrade_runs_again(v1_database: sa.Engine) -> None:
    """A step half done (MySQL commits DDL as it goes) is finished by running the upgrade again."""
    with v1_database.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE loanstate_outbox ADD COLUMN skipped_at "
            + schema.outbox.c.skipped_at.type.compile(dialect=conn.dialect)
        )
    store = SqlStore(v1_database)
    assert store.upgrade_schema() == [
        "added index ix_loanstate_outbox_claim",
        "added index ix_loanstate_outbox_delivered",
        "added table loanstate_pauses",
        "schema version 1 -> 2",
    ]
    assert store.schema_status().current
    assert _differences(v1_database) == []
    store.close()


def test_a_database_from_a_newer_loanstate_is_refused(store: SqlStore) -> None:
    """A schema version above this loanstate's is refused by create_schema and upgrade alike."""
    with store.engine.begin() as conn:
        conn.execute(sa.update(schema.meta).values(value=str(SCHEMA_VERSION + 1)))
    assert store.schema_status().too_new
    with pytest.raises(InvalidConfiguration, match="upgrade loanstate"):
        store.create_schema()
    with pytest.raises(InvalidConfiguration, match="newer"):
        store.upgrade_schema()


def test_alembic_autogenerate_sees_no_difference_after_init(store: SqlStore) -> None:
    """A project's own Alembic environment that includes loanstate's tables finds nothing to migrate."""
    assert _differences(store.engine) == []


def test_alembic_would_see_a_missing_index() -> None:
    """The comparison above is not blind: a database lacking loanstate's index is a difference."""
    engine = sa.create_engine("sqlite://")
    schema.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_loanstate_outbox_delivered")
    assert any("ix_loanstate_outbox_delivered" in str(d) for d in _differences(engine))
