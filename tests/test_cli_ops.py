"""The operating commands through the real console script: demo, gateway, deliver, outbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from loanstate import Dispatcher, InMemoryNotifier, PermanentDeliveryError, SqlStore, TopNotifier, default_machine
from loanstate._events import TOP_TIMEZONE
from loanstate.fake import FakeTopGateway

SCRIPT = Path(sys.executable).with_name("loanstate")
SECRET = "s3cret-not-to-be-shown"
START = datetime(2024, 3, 1, 9, 0, tzinfo=TOP_TIMEZONE)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any LOANSTATE_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOANSTATE_")}
    return {**env, "COLUMNS": "200", **extra}


def run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``loanstate ARGS`` with a clean environment (plus ``env``), ``stdin`` as its input."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=clean_env(**(env or {})),
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert exit 2 with one line and no traceback; return the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def loans_db(tmp_path: Path) -> Iterator[tuple[str, SqlStore]]:
    """A SQLite store with three loans and five recorded changes, not yet delivered."""
    url = f"sqlite:///{tmp_path / 'loans.db'}"
    store = SqlStore(url)
    store.create_schema()
    for n, path in enumerate((["OVERDUE", "NEW"], ["SETTLED"], ["OVERDUE", "SETTLED"])):
        loan = f"FI{n}"
        store.open_loan(loan, at=START)
        for step, after in enumerate(path, start=1):
            store.transition(loan, after=after, at=START + timedelta(days=30 * step))
    try:
        yield url, store
    finally:
        store.close()


# -- demo ----------------------------------------------------------------------------


def test_demo_is_deterministic_under_a_seed_and_every_guarantee_holds() -> None:
    """Two runs with one seed: same loans, changes, refusals, deliveries and parked loans; all checks pass."""
    first = run("demo", "--loans", "120", "--seed", "5", "--format", "json")
    second = run("demo", "--loans", "120", "--seed", "5", "--format", "json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["ok"] is True
    assert a["exactly_once"]
    assert a["order_held"]
    assert a["matches_store"]
    assert a["changes"] > 120
    assert a["illegal_rejected"] >= 1
    for key in ("changes", "illegal_rejected", "delivered", "parked_loans", "waiting_behind_parked", "undelivered"):
        assert a[key] == b[key], key
    assert a["delivered"] + a["waiting_behind_parked"] + a["parked_loans"] == a["changes"]


def test_demo_text_summary_and_a_plain_install_without_hypothesis() -> None:
    """The demo needs no test extra: with Hypothesis unimportable it still runs and prints its summary."""
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'hypothesis' or name.startswith('hypothesis.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'hypothesis'\", name='hypothesis')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from loanstate.cli import main\n"
        "main(['demo', '--loans', '40', '--seed', '1'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, check=False, timeout=120, env=clean_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "each request_id effective once" in result.stdout
    assert "per-loan order held" in result.stdout


# -- gateway -------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_gateway_runs_in_the_foreground_and_answers_a_signed_call(stop: signal.Signals) -> None:
    """``loanstate gateway --port 0`` prints its URL, accepts a signed notification, stops on Ctrl-C or SIGTERM."""
    with subprocess.Popen(
        [str(SCRIPT), "gateway", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("fake TOP gateway listening on http://127.0.0.1:"), first
            url = first.split()[-1]
            event = default_machine().change(loan_apply_no="FI9", before="NEW", after="OVERDUE", at=START)
            with TopNotifier("test-app-key", "test-app-secret", url=url, timeout=10) as notifier:
                receipt = notifier.send(event)
            assert receipt.request_id == event.request_id
        finally:
            process.send_signal(stop)
            _, said = process.communicate(timeout=30)
    assert process.returncode == 0, said
    assert "stopped after 1 requests" in said


# -- deliver -------------------------------------------------------------------------


def test_deliver_once_with_credentials_from_a_private_config_file(
    loans_db: tuple[str, SqlStore], tmp_path: Path
) -> None:
    """Credentials in a mode-600 config file: every change reaches the gateway once; the secret is never shown."""
    url, store = loans_db
    config = tmp_path / "loanstate.toml"
    with FakeTopGateway(app_secret=SECRET) as gateway:
        config.write_text(f'[top]\napp_key = "test-app-key"\napp_secret = "{SECRET}"\nurl = "{gateway.url}"\n')
        config.chmod(0o644)
        line = one_line_error(run("deliver", "--db", url, "--config", config, "--once"))
        assert "chmod 600" in line
        config.chmod(0o600)
        result = run("deliver", "--db", url, "--config", config, "--once")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "delivered 5," in result.stdout
        assert SECRET not in result.stdout + result.stderr
        assert sorted(gateway.effects.values()) == [1] * 5
    assert store.outbox_status().pending == 0


def test_deliver_refuses_to_start_without_credentials_naming_them(loans_db: tuple[str, SqlStore]) -> None:
    """No app key or secret in env or config: one line naming what is missing, exit 2."""
    url, _ = loans_db
    line = one_line_error(run("deliver", "--db", url, "--once"))
    assert "LOANSTATE_APP_KEY" in line
    assert "LOANSTATE_APP_SECRET" in line
    line = one_line_error(run("deliver", "--once", env={"LOANSTATE_APP_KEY": "k", "LOANSTATE_APP_SECRET": "s"}))
    assert "database URL" in line


def test_database_problems_are_one_line_exit_two(tmp_path: Path) -> None:
    """A password on the command line, a missing SQLite file, an unreachable server: one line each."""
    creds = {"LOANSTATE_APP_KEY": "k", "LOANSTATE_APP_SECRET": SECRET}
    line = one_line_error(run("deliver", "--db", "postgresql+psycopg://u:hunter2@127.0.0.1/x", env=creds))
    assert "LOANSTATE_DB_PASSWORD" in line
    assert "hunter2" not in line
    assert "no such database file" in one_line_error(run("outbox", "status", "--db", f"sqlite:///{tmp_path / 'no.db'}"))
    unreachable = run("outbox", "status", "--db", "postgresql+psycopg://loanstate@127.0.0.1:1/loans")
    assert "cannot use database" in one_line_error(unreachable)
    bad_port = run("outbox", "status", "--db", "postgresql+psycopg://loanstate@127.0.0.1:port/loans")
    assert "is not a database URL" in one_line_error(bad_port)
    unparsable = run("outbox", "status", env={"LOANSTATE_DB_URL": "postgresql+psycopg://u:hun@ter2@127.0.0.1:x/db"})
    line = one_line_error(unparsable)
    assert "is not a database URL" in line
    assert "hun" not in line
    assert "ter2" not in line
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("not a database\n" * 100, encoding="utf-8")
    assert "cannot use database" in one_line_error(run("demo", "--loans", "5", "--db", f"sqlite:///{not_a_db}"))
    demo_unreachable = run("demo", "--loans", "5", "--db", "postgresql+psycopg://loanstate@127.0.0.1:1/loans")
    assert "cannot use database" in one_line_error(demo_unreachable)


@pytest.mark.mysql
def test_wrong_database_password_is_one_line_exit_two(loanstate_mysql_url: sa.URL) -> None:
    """A wrong password from LOANSTATE_DB_PASSWORD: one line saying access was denied, the password not shown."""
    url = loanstate_mysql_url.set(password=None).render_as_string(hide_password=False)
    result = run("outbox", "status", "--db", url, env={"LOANSTATE_DB_PASSWORD": "wrong-Pa55word"})
    line = one_line_error(result)
    assert "cannot use database" in line
    assert "denied" in line.lower()
    assert "wrong-Pa55word" not in result.stderr


# -- outbox --------------------------------------------------------------------------


def test_outbox_status_retry_and_skip_resolve_a_parked_loan(loans_db: tuple[str, SqlStore]) -> None:
    """A parked loan shows in ``status`` (exit 1); ``retry`` un-parks it; ``skip`` sets its event aside."""
    url, store = loans_db
    notifier = InMemoryNotifier()
    notifier.fail_when(lambda event: event.loan_apply_no == "FI0", PermanentDeliveryError)
    Dispatcher(store, notifier).run_once()
    status = run("outbox", "status", "--db", url)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "FI0" in status.stdout
    data = json.loads(run("outbox", "status", "--db", url, "--format", "json").stdout)
    (parked,) = data["parked_loans"]
    assert parked["loan_apply_no"] == "FI0"
    assert parked["waiting"] == 1

    assert run("outbox", "retry", "FI0", "--db", url).returncode == 0
    assert run("outbox", "retry", "FI0", "--db", url).returncode == 1  # nothing parked any more
    Dispatcher(store, notifier).run_once()  # fails for good again: parked again
    skipped = run("outbox", "skip", parked["request_id"], "--db", url, stdin="y\n")
    assert skipped.returncode == 0, skipped.stderr
    assert "FI0" in skipped.stderr  # the confirmation names the loan
    assert "skipped 1 event" in skipped.stdout
    assert "no event with request_id" in one_line_error(run("outbox", "skip", "no-such-id", "--db", url, "--yes"))
    notifier.clear_failures()
    Dispatcher(store, notifier).run_once()  # the loan's later event goes on
    final = run("outbox", "status", "--db", url)
    assert final.returncode == 0, final.stdout
    assert "no parked loans" in final.stdout


def test_demo_refuses_a_database_that_already_holds_loans(loans_db: tuple[str, SqlStore]) -> None:
    """Earlier loans would read as broken guarantees: the demo says the database is not empty, exit 2."""
    url, store = loans_db
    line = one_line_error(run("demo", "--loans", "5", "--seed", "9", "--db", url))
    assert "already holds 3 loans" in line
    assert store.outbox_status().pending == 5  # nothing was touched


def test_outbox_status_prints_odd_loan_numbers_as_they_are(tmp_path: Path) -> None:
    """A parked loan whose number holds brackets (``[/b]``) is listed as it is, not taken for rich markup."""
    store = SqlStore(f"sqlite:///{tmp_path / 'loans.db'}")
    try:
        store.create_schema()
        store.open_loan("FI[/b]", at=START)
        store.transition("FI[/b]", after="SETTLED", at=START + timedelta(days=1))
        notifier = InMemoryNotifier()
        notifier.fail_when(lambda event: True, PermanentDeliveryError)
        Dispatcher(store, notifier).run_once()
    finally:
        store.close()
    result = run("outbox", "status", "--db", f"sqlite:///{tmp_path / 'loans.db'}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FI[/b]" in result.stdout


def test_demo_live_progress_goes_to_stderr() -> None:
    """``demo --progress`` draws its bars on stderr; the summary table is on stdout."""
    result = run("demo", "--loans", "30", "--seed", "2", "--progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delivering" in result.stderr
    assert "per-loan order held" in result.stdout
