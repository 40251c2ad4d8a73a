"""Importing an existing loan book: ``SqlStore.open_loans`` and ``loanstate import``, on real databases."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import SCRIPT

from loanstate import InvalidConfiguration, SqlStore, UnknownLoan, default_machine
from loanstate._events import TOP_TIMEZONE, format_top_time
from loanstate.store import LoanRecord
from loanstate.store._schema import loans as loans_table
from loanstate.testing import change_times, loan_numbers, statuses, texts

EXAMPLE = itertools.count()
OPENED = datetime(2023, 6, 1, 9, 30, tzinfo=TOP_TIMEZONE)

# A book: distinct loans, each at some status, opened at some instant, with or without identity fields.
books = st.lists(
    st.tuples(loan_numbers(), statuses(), change_times(), st.none() | texts(), st.none() | texts()),
    max_size=25,
    unique_by=lambda loan: loan[0],
)


def as_records(book: list[tuple[str, str, datetime, str | None, str | None]], prefix: str) -> list[LoanRecord]:
    """The book as LoanRecords, loan numbers made unique to this example with ``prefix``."""
    return [LoanRecord(f"{prefix}{loan[:50]}", status, at, cid, ino) for loan, status, at, cid, ino in book]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(book=books, batch_size=st.integers(min_value=1, max_value=7), as_mappings=st.booleans())
def test_any_book_imports_exactly_and_a_rerun_changes_nothing(
    store: SqlStore, book: list[tuple[str, str, datetime, str | None, str | None]], batch_size: int, as_mappings: bool
) -> None:
    """Every loan of any book opens at its status with its identity and instant; running it again is all unchanged."""
    records = as_records(book, f"{next(EXAMPLE)}#")
    given_records: list[object] = list(records)
    if as_mappings:
        given_records = [
            {
                "loan_apply_no": r.loan_apply_no,
                "status": r.status,
                "opened_at": r.opened_at.isoformat(),
                "customer_id": r.customer_id,
                "institution_loan_no": r.institution_loan_no,
            }
            for r in records
        ]
    report = store.open_loans(given_records, batch_size=batch_size)  # type: ignore[arg-type]
    assert (report.opened, report.unchanged, report.conflicts, report.invalid) == (len(records), 0, (), ())
    with store.engine.connect() as conn:
        rows = {row.loan_apply_no: row for row in conn.execute(sa.select(loans_table))}
    for record in records:
        assert store.status(record.loan_apply_no) == record.status
        row = rows[record.loan_apply_no]
        assert (row.customer_id, row.institution_loan_no, row.version) == (
            record.customer_id,
            record.institution_loan_no,
            0,
        )
        assert row.opened_at == record.opened_at
        assert store.history(record.loan_apply_no) == []
    again = store.open_loans(records, batch_size=batch_size)
    assert (again.opened, again.unchanged, again.clean) == (0, len(records), True)


def test_conflicts_are_reported_with_reasons_and_never_overwritten(store: SqlStore) -> None:
    """A loan open with another status or identity is a conflict naming both values; the database keeps its own."""
    store.open_loan("FI1", at=OPENED)
    store.open_loan("FI2", at=OPENED, customer_id="C2")
    report = store.open_loans(
        [
            LoanRecord("FI1", "OVERDUE", OPENED),  # 1: status differs
            LoanRecord("FI2", "NEW", OPENED, customer_id="C9"),  # 2: identity differs
            LoanRecord("FI3", "NEW", OPENED),  # 3: new
            LoanRecord("FI3", "SETTLED", OPENED),  # 4: contradicts line 3 of this import
            LoanRecord("FI3", "NEW", OPENED),  # 5: repeats line 3: unchanged
        ],
        batch_size=2,
    )
    assert (report.opened, report.unchanged) == (1, 1)
    assert [(p.line, p.loan_apply_no) for p in report.conflicts] == [(1, "FI1"), (2, "FI2"), (4, "FI3")]
    assert "status 'NEW', this record says 'OVERDUE'" in report.conflicts[0].reason
    assert "customer_id 'C2', this record says 'C9'" in report.conflicts[1].reason
    assert "status 'NEW'" in report.conflicts[2].reason
    assert [store.status(loan) for loan in ("FI1", "FI2", "FI3")] == ["NEW", "NEW", "NEW"]


def test_bad_records_name_every_bad_field_and_the_good_ones_import(store: SqlStore) -> None:
    """A bad record is ``invalid`` (each bad field named, at its position); the records around it open."""
    report = store.open_loans(
        [
            {"loan_apply_no": "FI1", "status": "NEW", "opened_at": "2024-01-01 08:00:00"},  # the API's own form
            {"loan_apply_no": " ", "status": "LATE", "opened_at": "2024-01-01T08:00:00"},
            "not a mapping",  # type: ignore[list-item]
            {"loan_apply_no": "FI4", "status": "OVERDUE", "opened_at": OPENED, "customer_id": "\x00"},
            {"loan_apply_no": "FI5", "status": "SETTLED", "opened_at": OPENED},
        ]
    )
    assert report.opened == 2
    assert [(p.line, p.kind) for p in report.invalid] == [(2, "invalid"), (3, "invalid"), (4, "invalid")]
    second = report.invalid[0].reason
    assert all(name in second for name in ("loan_apply_no", "status: unknown status 'LATE'", "opened_at"))
    assert "customer_id" in report.invalid[2].reason
    assert store.status("FI1") == "NEW"
    assert store.status("FI5") == "SETTLED"
    with pytest.raises(UnknownLoan):
        store.status("FI4")


def test_batch_size_must_be_a_positive_int(store: SqlStore) -> None:
    """``batch_size=0`` is refused with InvalidConfiguration before anything is written."""
    with pytest.raises(InvalidConfiguration, match="batch_size"):
        store.open_loans([LoanRecord("FI1", "NEW", OPENED)], batch_size=0)
    with pytest.raises(UnknownLoan):
        store.status("FI1")


# -- the command -------------------------------------------------------------------


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``loanstate ARGS`` and capture what it says."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def book_lines(count: int, start: int = 0) -> list[str]:
    """``count`` JSON Lines loans, statuses cycling over the default lifecycle, times in the API's own form."""
    names = sorted(default_machine().statuses)
    return [
        json.dumps(
            {
                "loan_apply_no": f"FI{n:06d}",
                "status": names[n % len(names)],
                "opened_at": format_top_time(OPENED + timedelta(minutes=n)),
                "customer_id": f"客户{n}",
                "note": "ignored",
            },
            ensure_ascii=False,
        )
        for n in range(start, start + count)
    ]


def test_import_jsonl_with_crlf_and_bom_then_again(tmp_path: Path) -> None:
    """A JSON Lines book (BOM, CRLF) imports clean (exit 0); the same command again reports every loan unchanged."""
    path = tmp_path / "book.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(book_lines(40)).encode("utf-8") + b"\r\n")
    db = f"sqlite:///{tmp_path / 'loans.db'}"
    first = run("import", path, "--db", db, "--format", "json", "--batch-size", "7")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout) == {"opened": 40, "unchanged": 0, "conflicts": [], "invalid": []}
    again = run("import", path, "--db", db)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "every record imported or already there" in again.stdout
    store = SqlStore(db)
    assert store.status("FI000007") == sorted(default_machine().statuses)[7 % 4]
    store.close()


def test_import_gbk_csv_reports_bad_and_conflicting_lines(tmp_path: Path) -> None:
    """A GBK CSV: bad records and conflicts come with their line numbers, exit 1, and the good rows are imported."""
    rows = [
        "loan_apply_no,status,opened_at,customer_id",
        "FI1,NEW,2024-01-01 08:00:00,客户一",
        "FI2,LATE,2024-01-01 08:00:00,",
        "FI3,OVERDUE,2024-01-01T08:00:00,",
        "FI1,SETTLED,2024-01-01 08:00:00,客户一",
        "FI4,SETTLED,2024-01-02T09:00:00+08:00,",
    ]
    path = tmp_path / "book.csv"
    path.write_bytes("\r\n".join([*rows, ""]).encode("gbk"))
    db = f"sqlite:///{tmp_path / 'loans.db'}"
    result = run("import", path, "--db", db, "--encoding", "gbk", "--format", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert (data["opened"], data["unchanged"]) == (2, 0)
    assert [(p["line"], p["kind"]) for p in data["invalid"]] == [(3, "invalid"), (4, "invalid")]
    assert "unknown status 'LATE'" in data["invalid"][0]["reason"]
    assert "has no UTC offset" in data["invalid"][1]["reason"]
    assert [(p["line"], p["loan_apply_no"]) for p in data["conflicts"]] == [(5, "FI1")]
    text = run("import", path, "--db", db, "--encoding", "gbk")
    assert text.returncode == 1
    assert "line 5: conflict: already open" in text.stdout


def test_import_usage_errors_exit_two(tmp_path: Path) -> None:
    """No database, a non-text --encoding, a FIFO, a CSV without the loan columns: exit 2, one line, no traceback."""
    path = tmp_path / "book.jsonl"
    path.write_text("\n".join(book_lines(2)) + "\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'loans.db'}"
    assert run("import", path, "--db", db, "--encoding", "rot13").returncode == 2
    fifo = tmp_path / "book.fifo.jsonl"
    os.mkfifo(fifo)
    header_only = tmp_path / "book.csv"
    header_only.write_text("loan_apply_no,before_status\n", encoding="utf-8")
    for args, says in (
        ((path,), "database URL"),
        ((fifo, "--db", db), "not a regular file"),
        ((header_only, "--db", db), "lacks status"),
    ):
        result = run("import", *args, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert says in result.stderr


def test_progress_bar_is_cleared_before_the_report(tmp_path: Path) -> None:
    """``--progress`` draws on stderr and is gone before the report; stdout is the JSON report alone."""
    path = tmp_path / "book.jsonl"
    path.write_text("\n".join(book_lines(30)) + "\n", encoding="utf-8")
    result = run("import", path, "--db", f"sqlite:///{tmp_path / 'loans.db'}", "--progress", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["opened"] == 30


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cli_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL the command line can use (no password in it): SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'loans.db'}"
    url: sa.URL = request.getfixturevalue("loanstate_postgres_url")
    return url.render_as_string(hide_password=False)


def test_an_import_killed_midway_resumes_to_the_same_result(tmp_path: Path, cli_db: str) -> None:
    """SIGKILL mid-file, then the same command again: every loan opened once, at its status; nothing else."""
    count = 20_000
    path = tmp_path / "book.jsonl"
    path.write_text("\n".join(book_lines(count)) + "\n", encoding="utf-8")
    engine = sa.create_engine(cli_db)
    process = subprocess.Popen(
        [str(SCRIPT), "import", str(path), "--db", cli_db, "--batch-size", "50", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        written = _wait_for_rows(engine, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert written > 0
    resumed = run("import", path, "--db", cli_db, "--format", "json", "--batch-size", "500")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["opened"] + report["unchanged"] == count
    assert report["unchanged"] >= written  # what the killed run committed stayed, and counts as unchanged
    names = sorted(default_machine().statuses)
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(loans_table.c.loan_apply_no, loans_table.c.status)).all())
    engine.dispose()
    assert rows == {f"FI{n:06d}": names[n % len(names)] for n in range(count)}


def _wait_for_rows(engine: sa.Engine, process: subprocess.Popen[bytes]) -> int:
    """Poll until the running import has committed some loans (and is still running); how many."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with engine.connect() as conn:
                written = conn.scalar(sa.select(sa.func.count()).select_from(loans_table)) or 0
        except sa.exc.DBAPIError:
            written = 0  # the tables are not there yet
        if written:
            return int(written)
        time.sleep(0.05)
    raise AssertionError("the import finished or stalled before it could be killed")
