"""Schema versions: what a database holds, and the steps from each version to the next.

``loanstate_meta`` records the version a database was created or last upgraded
to. :func:`schema_status` reads it with the row count of every table;
:func:`upgrade` runs the steps from that version to :data:`SCHEMA_VERSION`, each
in its own transaction that also records the version it reaches, so an upgrade
that stops half way (a crash, a lost connection) is simply run again. Every step
checks before it changes (a column or an index already there is left alone):
MySQL and MariaDB commit each DDL statement as they go, so a step may have half
run even though its transaction did not commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loanstate._errors import InvalidConfiguration
from loanstate.store import _schema as schema

__all__ = ["SchemaStatus", "schema_status", "upgrade"]


@attrs.frozen
class SchemaStatus:
    """What a database holds: its schema ``version`` (``None`` before ``db init``),
    the ``expected`` version of this loanstate, and ``rows`` per loanstate table
    (``None`` for a table that is missing)."""

    version: int | None
    expected: int
    rows: Mapping[str, int | None]

    @property
    def needs_upgrade(self) -> bool:
        """The database is older than this loanstate: run ``loanstate db upgrade``."""
        return self.version is not None and self.version < self.expected

    @property
    def too_new(self) -> bool:
        """The database was upgraded by a newer loanstate than this one."""
        return self.version is not None and self.version > self.expected

    @property
    def current(self) -> bool:
        """Created and at this loanstate's version."""
        return self.version == self.expected


def recorded_version(conn: Connection) -> int | None:
    """The version in ``loanstate_meta``, or ``None`` when the schema was never created."""
    if not sa.inspect(conn).has_table(schema.meta.name):
        return None
    value = conn.scalar(sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version"))
    return None if value is None else int(value)


def schema_status(engine: Engine) -> SchemaStatus:
    """The version recorded in the database and the row count of each loanstate table."""
    with engine.connect() as conn:
        present = set(sa.inspect(conn).get_table_names())
        rows: dict[str, int | None] = {}
        for table in schema.metadata.sorted_tables:
            rows[table.name] = (
                int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0) if table.name in present else None
            )
        version = recorded_version(conn)
    return SchemaStatus(version=version, expected=schema.SCHEMA_VERSION, rows=rows)


def upgrade(engine: Engine) -> list[str]:
    """Bring the database to :data:`SCHEMA_VERSION`; return what each step did ([] when already there).

    Refuses (``InvalidConfiguration``) a database without the schema (create it
    with ``loanstate db init``) or one newer than this loanstate.
    """
    done: list[str] = []
    while True:
        with engine.connect() as conn:
            version = recorded_version(conn)
        if version is None:
            raise InvalidConfiguration(
                "database", engine.url.render_as_string(hide_password=True), "holds no loanstate schema: run db init"
            )
        if version > schema.SCHEMA_VERSION:
            raise InvalidConfiguration(
                "database",
                engine.url.render_as_string(hide_password=True),
                f"has schema version {version}, newer than this loanstate's {schema.SCHEMA_VERSION}: upgrade loanstate",
            )
        if version == schema.SCHEMA_VERSION:
            return done
        step = _STEPS[version]
        with engine.begin() as conn:
            done += step(conn)
            conn.execute(
                sa.update(schema.meta).where(schema.meta.c.key == "schema_version").values(value=str(version + 1))
            )
        done.append(f"schema version {version} -> {version + 1}")


def _add_column(conn: Connection, table: sa.Table, column: sa.Column[object]) -> list[str]:
    existing = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    if column.name in existing:
        return []
    preparer = conn.dialect.identifier_preparer
    ddl = column.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(
        f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)} {ddl}"
    )
    return [f"added column {table.name}.{column.name}"]


def _add_index(conn: Connection, index: sa.Index) -> list[str]:
    table = index.table
    assert table is not None
    if index.name in {ix["name"] for ix in sa.inspect(conn).get_indexes(table.name)}:
        return []
    index.create(conn)
    return [f"added index {index.name}"]


def _add_table(conn: Connection, table: sa.Table) -> list[str]:
    if sa.inspect(conn).has_table(table.name):
        return []
    table.create(conn)
    return [f"added table {table.name}"]


def _to_2(conn: Connection) -> list[str]:
    """1 -> 2: ``outbox.skipped_at`` (retention counts a skipped row's age from it), the indexes
    on (state, id) and (state, delivered_at) that let the claim and pruning skip delivered rows,
    and ``loanstate_pauses`` (a dispatcher's pause, for the console)."""
    outbox = schema.outbox
    done = _add_column(conn, outbox, outbox.c.skipped_at)
    # Schema 1 kept no time for a skip: the row's creation is the best bound we have.
    conn.execute(
        sa.update(outbox)
        .where(outbox.c.state == "skipped", outbox.c.skipped_at.is_(None))
        .values(skipped_at=outbox.c.created_at)
    )
    for name in ("ix_loanstate_outbox_claim", "ix_loanstate_outbox_delivered"):
        done += _add_index(conn, next(ix for ix in outbox.indexes if ix.name == name))
    return done + _add_table(conn, schema.pauses)


_STEPS: Final[dict[int, Callable[[Connection], list[str]]]] = {1: _to_2}
