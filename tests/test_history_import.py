"""Importing a loan's past history: changes notified before loanstate, written as delivered history."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import SCRIPT

from loanstate import Dispatcher, InMemoryNotifier, InvalidConfiguration, LoanChangeEvent, SqlStore, UnknownLoan
from loanstate._events import TOP_TIMEZONE, format_top_time
from loanstate.store import LoanRecord
from loanstate.testing import History, histories

EXAMPLE = itertools.count()
T0 = datetime(2024, 1, 1, 8, 0, tzinfo=TOP_TIMEZONE)


def unique(history: History, prefix: str) -> list[LoanChangeEvent]:
    """The history's events, loan numbers and request_ids made unique to this example with ``prefix``."""
    return [
        LoanChangeEvent.from_dict(
            {**r, "loan_apply_no": prefix + r["loan_apply_no"][:50], "request_id": prefix + r["request_id"][:50]}
        )
        for r in history.records
    ]


def change(loan: str, before: str, after: str, at: datetime, rid: str, **more: str) -> dict[str, str]:
    """One record shaped like ``LoanChangeEvent.to_dict()``."""
    return {
        "loan_apply_no": loan,
        "before_status": before,
        "after_status": after,
        "change_time": at.isoformat(),
        "request_id": rid,
        **more,
    }


def shaped(event: LoanChangeEvent, shape: str) -> object:
    """``event`` as the import may be given it: the event, its to_dict(), or the API's own to_top_param()."""
    if shape == "event":
        return event
    if shape == "dict":
        return event.to_dict()
    return json.loads(event.to_top_param())


def as_read(event: LoanChangeEvent, shape: str) -> LoanChangeEvent:
    """The event as the store keeps it from ``shape`` (the API's format keeps whole seconds in GMT+8)."""
    return LoanChangeEvent.from_top_param(event.to_top_param()) if shape == "top" else event


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25, deadline=None)
@given(
    history=histories(loans=(1, 5), max_changes=6),
    batch_size=st.integers(min_value=1, max_value=4),
    shape=st.sampled_from(["event", "dict", "top"]),
)
def test_any_history_imports_exactly_and_a_rerun_changes_nothing(
    store: SqlStore, history: History, batch_size: int, shape: str
) -> None:
    """Any generated history reads back exactly (history, status), its outbox all delivered; a rerun is unchanged."""
    events = unique(history, f"{next(EXAMPLE)}_")
    records = [shaped(e, shape) for e in events]
    report = store.import_history(records, batch_size=batch_size)  # type: ignore[arg-type]
    loans = list(dict.fromkeys(e.loan_apply_no for e in events))
    assert (report.imported, report.unchanged, report.opened, report.clean) == (len(events), 0, len(loans), True)
    for loan in loans:
        expected = [as_read(e, shape) for e in events if e.loan_apply_no == loan]
        assert store.history(loan) == expected
        assert store.status(loan) == expected[-1].after_status
        entries = store.outbox_entries(loan)
        assert [(x.sequence, x.state, x.event) for x in entries] == [
            (n, "delivered", e) for n, e in enumerate(expected, start=1)
        ]
        assert all(x.delivered_at is not None and x.attempts == 0 for x in entries)
    again = store.import_history(records, batch_size=batch_size)  # type: ignore[arg-type]
    assert (again.imported, again.unchanged, again.opened, again.clean) == (0, len(events), 0, True)


def test_a_later_transition_continues_the_sequence(store: SqlStore) -> None:
    """After an import of two changes, transition() writes sequence 3 from the imported status, pending."""
    store.import_history(
        [change("L1", "NEW", "OVERDUE", T0, "r1"), change("L1", "OVERDUE", "NEW", T0 + timedelta(days=1), "r2")]
    )
    event = store.transition("L1", after="OVERDUE", at=T0 + timedelta(days=2))
    assert event.before_status == "NEW"
    assert [e.request_id for e in store.history("L1")] == ["r1", "r2", event.request_id]
    assert [(x.sequence, x.state) for x in store.outbox_entries("L1")] == [
        (1, "delivered"),
        (2, "delivered"),
        (3, "pending"),
    ]


def test_a_dispatcher_never_sends_an_imported_event(store: SqlStore) -> None:
    """A dispatcher finds nothing to send after an import; only the later transition goes out."""
    store.import_history([change(f"L{n}", "NEW", "OVERDUE", T0, f"r{n}") for n in range(20)])
    notifier = InMemoryNotifier()
    dispatcher = Dispatcher(store, notifier)
    assert dispatcher.run_once().delivered == 0
    assert notifier.sent == []
    later = store.transition("L3", after="SETTLED", at=T0 + timedelta(days=1))
    assert dispatcher.run_once().delivered == 1
    assert notifier.sent == [later]


def test_conflicts_name_the_line_and_write_nothing_of_their_loan(store: SqlStore) -> None:
    """A reused request_id, a loan moved past, or a status that differs: conflicts with lines; those loans untouched."""
    store.import_history([change("A", "NEW", "OVERDUE", T0, "ra1")])
    store.open_loans([LoanRecord("B", "OVERDUE", T0)])
    report = store.import_history(
        [
            change("C", "NEW", "OVERDUE", T0, "ra1"),  # ra1 is A's
            change("B", "NEW", "SETTLED", T0, "rb1"),  # B is OVERDUE
            change("D", "NEW", "OVERDUE", T0, "rd1"),  # fine
            change("C", "OVERDUE", "SETTLED", T0, "rc2"),
        ]
    )
    assert [(p.kind, p.line, p.loan_apply_no) for p in report.conflicts] == [("conflict", 1, "C"), ("conflict", 2, "B")]
    assert "request_id 'ra1' is already used for another change (loan 'A', sequence 1)" in report.conflicts[0].reason
    assert "the loan is 'OVERDUE' now, this change starts from 'NEW'" in report.conflicts[1].reason
    assert (report.imported, report.opened) == (1, 1)
    with pytest.raises(UnknownLoan, match="C"):
        store.status("C")
    assert (store.status("B"), store.history("B")) == ("OVERDUE", [])
    store.transition("A", after="SETTLED", at=T0 + timedelta(days=1))
    moved = store.import_history([change("A", "NEW", "OVERDUE", T0, "ra1"), change("A", "OVERDUE", "NEW", T0, "ra2")])
    (problem,) = moved.conflicts
    assert problem.line == 2
    assert "moved past the previous line (now at sequence 2)" in problem.reason
    assert store.status("A") == "SETTLED"


def test_a_loan_already_open_continues_from_its_status(store: SqlStore) -> None:
    """An open loan at the first before_status takes the history from sequence 1; another identity conflicts."""
    store.open_loans([LoanRecord("B", "OVERDUE", T0, customer_id="c1")])
    other = store.import_history([change("B", "OVERDUE", "SETTLED", T0 + timedelta(hours=1), "rb1", customer_id="c2")])
    assert [p.line for p in other.conflicts] == [1]
    assert "open with customer_id 'c1', institution_loan_no None" in other.conflicts[0].reason
    report = store.import_history([change("B", "OVERDUE", "SETTLED", T0 + timedelta(hours=1), "rb1", customer_id="c1")])
    assert (report.imported, report.opened, report.clean) == (1, 0, True)
    assert store.status("B") == "SETTLED"
    assert [x.sequence for x in store.outbox_entries("B")] == [1]


def test_a_longer_file_adds_only_the_new_changes(store: SqlStore) -> None:
    """The same file with later changes appended: the first ones are unchanged, the rest continue the sequence."""
    first = [change("L", "NEW", "OVERDUE", T0, "r1")]
    store.import_history(first)
    report = store.import_history([*first, change("L", "OVERDUE", "NEW", T0 + timedelta(days=1), "r2")])
    assert (report.imported, report.unchanged, report.opened) == (1, 1, 0)
    assert [x.sequence for x in store.outbox_entries("L")] == [1, 2]


def test_bad_records_and_broken_chains_are_invalid_and_spoil_only_their_loan(store: SqlStore) -> None:
    """Bad fields, an illegal pair or a chain break are invalid with their lines; other loans import."""
    report = store.import_history(
        [
            change("X", "NEW", "NOPE", T0, "rx1"),
            change("Y", "NEW", "OVERDUE", T0, "ry1"),
            change("Y", "NEW", "SETTLED", T0, "ry2"),  # Y was left OVERDUE
            {**change("Z", "NEW", "OVERDUE", T0, "rz1"), "change_time": "2024-01-01T08:00:00"},
            change("W", "NEW", "OVERDUE", T0, "rw1"),
        ]
    )
    assert [(p.line, p.loan_apply_no) for p in report.invalid] == [(1, "X"), (3, "Y"), (4, "Z")]
    assert "previous change (line 2) left it 'OVERDUE'" in report.invalid[1].reason
    assert "change_time" in report.invalid[2].reason
    assert (report.imported, report.opened) == (1, 1)
    assert store.status("W") == "OVERDUE"
    with pytest.raises(UnknownLoan, match="Y"):
        store.status("Y")


def test_batch_size_must_be_a_positive_int(store: SqlStore) -> None:
    """batch_size 0 or not an int is an InvalidConfiguration naming it."""
    for bad in (0, "10", 1.5):
        with pytest.raises(InvalidConfiguration, match="batch_size"):
            store.import_history([], batch_size=bad)  # type: ignore[arg-type]


# -- the command -------------------------------------------------------------------


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``loanstate ARGS`` and capture what it says."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def top_lines(count: int) -> list[str]:
    """``count`` loans' two changes each as ``to_top_param()`` lines (GMT+8 API times), loans interleaved."""
    lines: list[str] = []
    for step, (before, after) in enumerate((("NEW", "OVERDUE"), ("OVERDUE", "SETTLED"))):
        for n in range(count):
            at = T0 + timedelta(days=step, minutes=n)
            event = LoanChangeEvent(f"FI{n:04d}", before, after, at, f"r{n}_{step}", customer_id=f"客户{n}")
            lines.append(event.to_top_param())
    return lines


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cli_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL the command line can use (no password in it): SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'loans.db'}"
    url: sa.URL = request.getfixturevalue("loanstate_postgres_url")
    return url.render_as_string(hide_password=False)


def test_cli_imports_a_clean_history_and_again_unchanged(tmp_path: Path, cli_db: str) -> None:
    """A file of to_top_param() lines audits clean, imports (exit 0), and a second run is all unchanged."""
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(top_lines(15)) + "\n", encoding="utf-8")
    result = run("import", "--history", path, "--db", cli_db, "--format", "json", "--progress")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["findings"], out["refused"]) == ([], False)
    assert (out["import"]["imported"], out["import"]["opened"]) == (30, 15)
    again = json.loads(run("import", "--history", path, "--db", cli_db, "--format", "json").stdout)
    assert (again["import"]["imported"], again["import"]["unchanged"]) == (0, 30)
    store = SqlStore(cli_db)
    try:
        assert store.status("FI0007") == "SETTLED"
        assert store.outbox_status().delivered == 30
        assert store.outbox_status().pending == 0
    finally:
        store.close()


def test_cli_refuses_on_findings_unless_accepted(tmp_path: Path) -> None:
    """Audit findings are listed and nothing is imported (exit 1); --accept-findings imports what it can."""
    path = tmp_path / "history.csv"
    rows = [
        ["loan_apply_no", "before_status", "after_status", "change_time", "request_id"],
        ["A", "NEW", "OVERDUE", format_top_time(T0), "ra1"],
        ["B", "NEW", "OVERDUE", format_top_time(T0 + timedelta(hours=1)), "rb1"],
        ["B", "OVERDUE", "SETTLED", format_top_time(T0), "rb2"],  # earlier than line 3
    ]
    path.write_text("\r\n".join(",".join(r) for r in rows) + "\r\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'loans.db'}"
    refused = run("import", "--history", path, "--db", db)
    assert refused.returncode == 1, refused.stderr
    assert "line 4: time-backwards" in refused.stdout
    assert "refused: 1 audit findings; nothing imported" in refused.stdout
    assert not (tmp_path / "loans.db").exists() or _loans(db) == []
    accepted = run("import", "--history", path, "--db", db, "--accept-findings", "--format", "json")
    assert accepted.returncode == 0, accepted.stderr
    out: dict[str, Any] = json.loads(accepted.stdout)
    assert [f["kind"] for f in out["findings"]] == ["time-backwards"]
    assert (out["refused"], out["import"]["imported"]) == (False, 3)
    assert _loans(db) == ["A", "B"]


def test_cli_conflicts_exit_one_with_lines(tmp_path: Path) -> None:
    """A clean file whose request_id is already used for another change: exit 1, the line in the report."""
    db = f"sqlite:///{tmp_path / 'loans.db'}"
    store = SqlStore(db)
    store.create_schema()
    store.import_history([change("A", "NEW", "OVERDUE", T0, "r1")])
    store.close()
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(change("B", "NEW", "OVERDUE", T0, "r1")) + "\n", encoding="utf-8")
    result = run("import", "--history", path, "--db", db)
    assert result.returncode == 1, result.stderr
    assert "line 1: conflict: request_id 'r1' is already used for another change" in result.stdout


def test_cli_accept_findings_needs_history(tmp_path: Path) -> None:
    """--accept-findings without --history is a usage error (exit 2)."""
    path = tmp_path / "book.jsonl"
    path.write_text("{}\n", encoding="utf-8")
    result = run("import", path, "--accept-findings", "--db", f"sqlite:///{tmp_path / 'l.db'}")
    assert result.returncode == 2
    assert "--accept-findings goes with --history" in result.stderr


def _loans(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(conn.scalars(sa.text("SELECT loan_apply_no FROM loanstate_loans")))
    finally:
        engine.dispose()
