"""``loanstate db init|status|upgrade`` and ``loanstate outbox prune``, through the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _schema_v1 as v1
import pytest
import sqlalchemy as sa

from loanstate.cli._common import InputError
from loanstate.cli.db import parse_age
from loanstate.store import Outcome, SqlStore

SCRIPT = Path(sys.executable).with_name("loanstate")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``loanstate ARGS`` with no LOANSTATE_* setting from the outer environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOANSTATE_")}
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False, timeout=120, env=env
    )


def test_db_init_then_status_on_every_engine(db_url: sa.URL) -> None:
    """init creates the schema (and again changes nothing); status prints the version and rows, exit 0."""
    url = db_url.render_as_string(hide_password=False)
    if db_url.get_backend_name() != "sqlite":
        before = run("db", "status", "--db", url, "--format", "json")
        assert before.returncode == 1, before.stderr
        assert json.loads(before.stdout)["needs"] == "init"
    for _ in range(2):
        made = run("db", "init", "--db", url)
        assert made.returncode == 0, made.stderr
        assert "schema version 2 ready" in made.stdout
    status = run("db", "status", "--db", url, "--format", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["version"] == report["expected"] == 2
    assert report["needs"] is None
    assert report["rows"]["loanstate_outbox"] == 0
    assert report["rows"]["loanstate_meta"] == 1


def test_db_upgrade_from_schema_1(tmp_path: Path) -> None:
    """status exits 1 and says to upgrade; upgrade prints its steps; then status exits 0 and other commands work."""
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    v1.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(v1.meta).values(key="schema_version", value="1"))
    engine.dispose()
    url = f"sqlite:///{path}"
    status = run("db", "status", "--db", url)
    assert status.returncode == 1
    assert "schema version 1 (this loanstate: 2)" in status.stdout
    assert "run: loanstate db upgrade" in status.stdout
    refused = run("outbox", "status", "--db", url)
    assert refused.returncode == 2
    assert "schema version 1, this loanstate uses 2: run `loanstate db upgrade`" in refused.stderr
    upgraded = run("db", "upgrade", "--db", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines() == [
        "added column loanstate_outbox.skipped_at",
        "added index ix_loanstate_outbox_claim",
        "added index ix_loanstate_outbox_delivered",
        "added table loanstate_pauses",
        "schema version 1 -> 2",
        "schema version 2: up to date",
    ]
    again = run("db", "upgrade", "--db", url)
    assert again.stdout.strip() == "schema version 2: up to date (nothing to do)"
    assert run("db", "status", "--db", url).returncode == 0


def test_outbox_prune_deletes_old_delivered_rows_and_archives_them(tmp_path: Path) -> None:
    """prune --older-than 30d --archive: old delivered rows go to the archive then out of the table; others stay."""
    path = tmp_path / "loans.db"
    store = SqlStore(f"sqlite:///{path}")
    store.create_schema()
    long_ago = datetime.now(UTC) - timedelta(days=60)
    for n in range(3):
        store.open_loan(f"A{n}", at=long_ago)
        store.transition(f"A{n}", after="OVERDUE", at=long_ago)
        store.transition(f"A{n}", after="NEW", at=long_ago)
    claims = store.outbox.claim("cli-test", limit=10, lease=timedelta(minutes=1))
    store.outbox.settle([Outcome(claim=c, kind="delivered", at=long_ago) for c in claims])
    store.close()
    archive = tmp_path / "pruned.jsonl"
    done = run(
        "outbox", "prune", "--older-than", "30d", "--archive", archive, "--db", f"sqlite:///{path}", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == 3
    lines = [json.loads(line) for line in archive.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["request_id"] for line in lines) == sorted(c.event.request_id for c in claims)
    store = SqlStore(f"sqlite:///{path}")
    assert [e.state for e in store.outbox_entries()] == ["pending"] * 3  # the second changes wait, untouched
    assert len(store.history("A0")) == 2  # history is kept
    store.close()
    nothing = run("outbox", "prune", "--older-than", "1d", "--db", f"sqlite:///{path}")
    assert nothing.returncode == 0
    assert nothing.stdout.startswith("pruned 0 ")


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30d", timedelta(days=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("3600s", timedelta(hours=1)),
    ],
)
def test_ages_read_as_written(text: str, age: timedelta) -> None:
    """--older-than reads days, hours, minutes and seconds, and sums of them."""
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["", "30", "30x", "d", "-1d", "0d", "1.5d", "３0d", "30d ", "99999999999999d"])
def test_bad_ages_are_refused(text: str) -> None:
    """Anything else is an input error naming the option (full-width digits and overflow included)."""
    with pytest.raises(InputError, match="--older-than"):
        parse_age(text)
