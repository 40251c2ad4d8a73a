"""The ORM recipe: loanstate's rows commit or roll back with the caller's SQLAlchemy ORM Session, on every engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from loanstate import ConcurrentChange, IllegalTransition
from loanstate.store import Change, SqlStore

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


class Base(DeclarativeBase):
    """The servicing team's own models."""


class Repayment(Base):
    """A business write that must commit with the status change it causes."""

    __tablename__ = "servicing_repayments"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    loan: Mapped[str] = mapped_column(sa.String(64))
    amount: Mapped[int]


@pytest.fixture
def servicing(db_url: sa.URL) -> Iterator[tuple[sa.Engine, SqlStore]]:
    """The team's engine with its own tables and loanstate's, ten loans open."""
    engine = sa.create_engine(db_url)
    store = SqlStore(engine)
    store.create_schema()
    Base.metadata.create_all(engine)
    for n in range(10):
        store.open_loan(f"ORM{n}", status="OVERDUE", at=T0)
    try:
        yield engine, store
    finally:
        store.close()
        engine.dispose()


def _repayments(engine: sa.Engine) -> int:
    with Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Repayment)) or 0


def _outbox_rows(store: SqlStore) -> int:
    return len(store.outbox_entries())


def test_commit_writes_both(servicing: tuple[sa.Engine, SqlStore]) -> None:
    """A committed session holds the repayment, the new status, its history row and its outbox row."""
    engine, store = servicing
    with Session(engine) as session, session.begin():
        session.add(Repayment(loan="ORM0", amount=1200))
        session.flush()
        store.transition("ORM0", after="NEW", at=T0 + timedelta(days=1), connection=session.connection())
    assert _repayments(engine) == 1
    assert store.status("ORM0") == "NEW"
    assert [e.after_status for e in store.history("ORM0")] == ["NEW"]
    assert _outbox_rows(store) == 1


def test_an_error_after_the_change_rolls_back_both(servicing: tuple[sa.Engine, SqlStore]) -> None:
    """Whatever fails after transition() in the same session takes the status change with it."""
    engine, store = servicing

    def repay_then_fail() -> None:
        with Session(engine) as session, session.begin():
            session.add(Repayment(loan="ORM1", amount=50))
            store.transition("ORM1", after="NEW", at=T0 + timedelta(days=1), connection=session.connection())
            raise RuntimeError("ledger down")

    with pytest.raises(RuntimeError, match="ledger down"):
        repay_then_fail()
    assert _repayments(engine) == 0
    assert store.status("ORM1") == "OVERDUE"
    assert store.history("ORM1") == []
    assert _outbox_rows(store) == 0


def test_a_refused_change_leaves_the_session_usable(servicing: tuple[sa.Engine, SqlStore]) -> None:
    """A refused change writes nothing of ours (a savepoint); the caller may still commit its own writes."""
    engine, store = servicing
    with Session(engine) as session, session.begin():
        session.add(Repayment(loan="ORM2", amount=10))
        with pytest.raises(ConcurrentChange):
            store.transition("ORM2", after="SETTLED", at=T0, expected_before="NEW", connection=session.connection())
        with pytest.raises(IllegalTransition):
            store.transition("ORM2", after="OVERDUE", at=T0, connection=session.connection())
        session.add(Repayment(loan="ORM2", amount=20))
    assert _repayments(engine) == 2
    assert store.status("ORM2") == "OVERDUE"
    assert _outbox_rows(store) == 0


def test_a_nightly_batch_commits_or_rolls_back_whole(servicing: tuple[sa.Engine, SqlStore]) -> None:
    """transition_many in the caller's session: every change with the ORM writes, or none of them."""
    engine, store = servicing
    night = T0 + timedelta(days=2)
    changes = [Change(f"ORM{n}", "NEW", night) for n in range(3, 10)]

    def batch_then_fail() -> None:
        with Session(engine) as session, session.begin():
            session.add_all(Repayment(loan=c.loan_apply_no, amount=1) for c in changes)
            store.transition_many(changes, connection=session.connection())
            raise RuntimeError("the batch job failed before its end")

    with pytest.raises(RuntimeError, match="before its end"):
        batch_then_fail()
    assert _repayments(engine) == 0
    assert {store.status(f"ORM{n}") for n in range(3, 10)} == {"OVERDUE"}
    assert _outbox_rows(store) == 0

    with Session(engine) as session, session.begin():
        session.add_all(Repayment(loan=c.loan_apply_no, amount=1) for c in changes)
        events = store.transition_many(changes, connection=session.connection())
    assert _repayments(engine) == len(changes)
    assert [e.loan_apply_no for e in events] == [c.loan_apply_no for c in changes]
    assert {store.status(f"ORM{n}") for n in range(3, 10)} == {"NEW"}
    assert _outbox_rows(store) == len(changes)
