"""The operating commands through the real console script: demo, gateway, deliver, outbox."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from _cli import SCRIPT, START, clean_env, one_line_error, run

from loanstate import Dispatcher, InMemoryNotifier, PermanentDeliveryError, SqlStore, TopNotifier, default_machine
from loanstate.cli.deliver import report_dict, report_lines
from loanstate.dispatch import DispatchReport, Pause
from loanstate.fake import FakeTopGateway, Fault, FaultPlan

SECRET = "s3cret-not-to-be-shown"


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
            event = default_machine().change(loan_apply_no="FI9", before="NEW", after="OVERDUE", at=START, sequence=1)
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


def test_demo_summary_names_what_was_not_delivered_within_80_columns() -> None:
    """At 80 columns every summary line fits, and it names the parked loans and the events waiting behind them."""
    result = run("demo", "--loans", "200", "--seed", "3", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    data = json.loads(run("demo", "--loans", "200", "--seed", "3", "--format", "json").stdout)
    assert data["parked_loans"] > 0  # the seed parks some loans: the summary must say so
    rows = {line[:32].strip(): line[32:].split() for line in lines[1:]}
    assert rows["not delivered"][0] == str(data["not_delivered"])
    assert rows["parked loans"][0] == str(data["parked_loans"])
    assert rows["waiting behind parked"][0] == str(data["waiting_behind_parked"])
    assert rows["left pending"][0] == "0"
    assert data["not_delivered"] == data["parked_loans"] + data["waiting_behind_parked"]


def test_tutorial_sample_output_has_the_demo_summary_lines() -> None:
    """docs/tutorial.md shows the demo's summary as it prints: the same rows, in the same order, within 80 columns."""
    tutorial = (Path(__file__).resolve().parent.parent / "docs" / "tutorial.md").read_text(encoding="utf-8")
    sample = tutorial.split("```text\nloanstate demo:", 1)[1].split("```", 1)[0].splitlines()[1:]
    result = run("demo", "--loans", "60", "--seed", "0", env={"COLUMNS": "80"})
    printed = result.stdout.splitlines()[1:]

    def labels(lines: list[str]) -> list[str]:
        return [line[:32].rstrip() for line in lines if line.strip()]

    assert labels(sample) == labels(printed)
    assert all(len(line) <= 80 for line in sample)


# -- deliver: what an operator reads ------------------------------------------------


def test_deliver_logs_one_line_per_failed_attempt_naming_loan_request_and_error(
    loans_db: tuple[str, SqlStore],
) -> None:
    """A refused event: one log line naming its loan, request_id and the platform's error; no bare stamina line."""
    url, store = loans_db
    faults = FaultPlan(schedule=(Fault.HTTP_500, Fault.HTTP_500, Fault.BUSINESS_FAILURE, *([None] * 10)))
    with FakeTopGateway(faults=faults) as gateway:
        creds = {"LOANSTATE_APP_KEY": "test-app-key", "LOANSTATE_APP_SECRET": "test-app-secret"}
        result = run(
            "deliver", "--db", url, "--once", "--concurrency", "1", env={**creds, "LOANSTATE_TOP_URL": gateway.url}
        )
    assert result.returncode == 1, result.stdout + result.stderr  # a loan parked
    (parked,) = store.outbox_status().parked_loans
    failed = [line for line in result.stderr.splitlines() if "attempt failed" in line]
    assert all(re.search(r"loan FI\d request_id [0-9A-Za-z_-]+ ", line) for line in failed), failed
    (parked_line,) = [line for line in failed if "(parked)" in line]
    assert f"loan {parked.loan_apply_no} request_id {parked.request_id}" in parked_line
    assert "FAKE_BUSINESS_FAILURE" in parked_line
    assert "stamina" not in result.stderr


def test_deliver_json_logs_and_json_report(loans_db: tuple[str, SqlStore]) -> None:
    """``--log-format json``: each stderr line a JSON object, the failure with its fields; ``--format json`` too."""
    url, store = loans_db
    faults = FaultPlan(schedule=(Fault.BUSINESS_FAILURE,))
    with FakeTopGateway(faults=faults) as gateway:
        env = {"LOANSTATE_APP_KEY": "test-app-key", "LOANSTATE_APP_SECRET": "test-app-secret"}
        env["LOANSTATE_TOP_URL"] = gateway.url
        result = run("deliver", "--db", url, "--once", "--log-format", "json", "--format", "json", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    (failure,) = [r for r in records if r.get("outcome") == "parked"]
    (parked,) = store.outbox_status().parked_loans
    assert failure["loan_apply_no"] == parked.loan_apply_no
    assert failure["request_id"] == parked.request_id
    assert "FAKE_BUSINESS_FAILURE" in failure["error"]
    assert failure["level"] == "ERROR"
    report = json.loads(result.stdout)
    assert report["delivered"] == 5 - 1 - parked.waiting
    assert report["parked"] == 1
    assert report["paused"] is None


def test_deliver_with_a_wrong_secret_pauses_and_says_why_in_one_line(loans_db: tuple[str, SqlStore]) -> None:
    """A mistyped app secret parks nothing: ``deliver --once`` prints one line naming the cause and the remedy."""
    url, store = loans_db
    with FakeTopGateway(app_secret=SECRET) as gateway:
        env = {"LOANSTATE_APP_KEY": "test-app-key", "LOANSTATE_APP_SECRET": "not-the-secret"}
        result = run("deliver", "--db", url, "--once", env={**env, "LOANSTATE_TOP_URL": gateway.url})
        data = json.loads(
            run(
                "deliver", "--db", url, "--once", "--format", "json", env={**env, "LOANSTATE_TOP_URL": gateway.url}
            ).stdout
        )
    assert result.returncode == 1, result.stdout + result.stderr
    (pause,) = [line for line in result.stdout.splitlines() if line.startswith("delivery paused")]
    assert "(signature)" in pause
    assert "LOANSTATE_APP_SECRET" in pause
    assert data["paused"]["cause"] == "signature"
    assert store.outbox_status().parked == 0
    assert SECRET not in result.stdout + result.stderr


def test_a_pause_is_one_line_naming_cause_and_remedy() -> None:
    """The report ``deliver`` prints for a run that ended paused: the counts, then one line with cause and remedy."""
    pause = Pause(
        cause="signature",
        remedy="the platform rejects our signature: check LOANSTATE_APP_SECRET",
        message="code 25 Invalid Signature \x1b[2J",
        since=datetime(2024, 3, 1, 1, 2, 3, tzinfo=UTC),
    )
    report = DispatchReport(delivered=0, retried=0, parked=0, pending=5, lag=None, elapsed=0.5, paused=pause)
    counts, line = report_lines(report)
    assert counts.startswith("delivered 0, rescheduled 0, parked 0, pending 5")
    assert line == (
        "delivery paused (signature) since 2024-03-01 01:02:03: "
        "the platform rejects our signature: check LOANSTATE_APP_SECRET"
    )
    assert report_dict(report)["paused"]["cause"] == "signature"


@pytest.mark.parametrize("where", ["env", "config"])
def test_a_gateway_url_ending_in_a_newline_is_refused_at_start(
    loans_db: tuple[str, SqlStore], tmp_path: Path, where: str
) -> None:
    """``LOANSTATE_TOP_URL`` (or ``[top] url``) with a trailing newline: exit 2, one line naming it; nothing sent."""
    url, store = loans_db
    env = {"LOANSTATE_APP_KEY": "test-app-key", "LOANSTATE_APP_SECRET": "test-app-secret"}
    bad = "http://127.0.0.1:9/router/rest\n"
    if where == "env":
        env["LOANSTATE_TOP_URL"] = bad
        args: tuple[str | Path, ...] = ()
    else:
        config = tmp_path / "loanstate.toml"
        config.write_text('[top]\nurl = "http://127.0.0.1:9/router/rest\\n"\n', encoding="utf-8")
        config.chmod(0o600)
        args = ("--config", config)
    line = one_line_error(run("deliver", "--db", url, "--once", *args, env=env))
    assert "LOANSTATE_TOP_URL" in line if where == "env" else "[top] url" in line
    assert "is not a gateway URL" in line
    assert "'\\n'" in line
    assert store.outbox_status().pending == 5


@pytest.mark.parametrize("kind", ["fifo", "device", "large"])
def test_config_must_be_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    """``--config`` naming a FIFO, /dev/zero or a huge file: one line, exit 2, without blocking or reading it all."""
    if kind == "fifo":
        path = tmp_path / "config.fifo"
        os.mkfifo(path, 0o600)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "big.toml"
        path.write_bytes(b"# padding\n" * 100_000)
        path.chmod(0o600)
    result = run("outbox", "status", "--config", path, "--db", "sqlite:///x.db", timeout=60)
    line = one_line_error(result)
    assert ("is not a regular file" in line) if kind != "large" else ("a config file is at most" in line)


def test_gateway_start_line_as_json() -> None:
    """``gateway --format json`` starts with one JSON object holding its URL and app key."""
    with subprocess.Popen(
        [str(SCRIPT), "gateway", "--port", "0", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    ) as process:
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
    assert first["listening"].startswith("http://127.0.0.1:")
    assert first["app_key"] == "test-app-key"
    assert first["fault_rate"] == 0.0


def test_diagram_never_writes_a_control_character_to_the_terminal(tmp_path: Path) -> None:
    """A description holding ESC sequences is refused, or drawn without its control characters: no ESC on stdout."""
    definition = tmp_path / "odd.toml"
    definition.write_text(
        '[lifecycle]\ninitial = "NEW"\nterminal = ["DONE"]\n[statuses]\nNEW = "in \\u001b[31mforce"\nDONE = "done"\n'
        '[[transitions]]\nbefore = "NEW"\nafter = "DONE"\n',
        encoding="utf-8",
    )
    result = run("diagram", definition)
    assert "\x1b" not in result.stdout + result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 0:
        # The diagram code strips control characters from descriptions; the rest of the text stays.
        assert "[31mforce" in result.stdout


def test_demo_progress_bars_are_gone_before_the_summary_on_a_terminal() -> None:
    """On a terminal (a pty for stdout and stderr) the bars are erased before the summary and never drawn after it."""
    import pty

    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [str(SCRIPT), "demo", "--loans", "30", "--seed", "2"],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=clean_env(COLUMNS="100", TERM="xterm"),
    ) as process:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the other end closed: the demo is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=120)
    os.close(controller)
    raw = b"".join(chunks).decode("utf-8", errors="replace")
    assert process.returncode == 0, raw
    title = raw.index("loanstate demo: 30 loans, seed 2")
    assert "delivering" in raw[:title]  # the bars were drawn...
    assert "\x1b[2K" in raw[raw.rindex("delivering") : title]  # ...then erased before the summary
    after = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw[title:])
    assert "delivering" not in after
    assert "recording" not in after


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_deliver_serves_metrics_while_it_runs(loans_db: tuple[str, SqlStore]) -> None:
    """``deliver --metrics-port``: /metrics on loopback counts the deliveries and the store's gauges; stops cleanly."""
    import urllib.request

    url, store = loans_db
    port = _free_port()
    with FakeTopGateway() as gateway:
        env = clean_env(
            LOANSTATE_APP_KEY="test-app-key", LOANSTATE_APP_SECRET="test-app-secret", LOANSTATE_TOP_URL=gateway.url
        )
        with subprocess.Popen(
            [str(SCRIPT), "deliver", "--db", url, "--metrics-port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as worker:
            text = ""
            deadline = datetime.now(UTC) + timedelta(seconds=60)
            while datetime.now(UTC) < deadline and 'loanstate_deliveries_total{outcome="delivered"} 5.0' not in text:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                        text = answer.read().decode()
                except OSError:
                    pass
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=60)
    assert 'loanstate_deliveries_total{outcome="delivered"} 5.0' in text, text[-2000:] + err
    assert 'loanstate_outbox_events{state="delivered"} 5.0' in text
    assert "loanstate_dispatcher_paused 0.0" in text
    assert worker.returncode == 0, out + err
    assert store.outbox_status().delivered == 5


def test_deliver_metrics_port_in_use_is_one_clear_line(loans_db: tuple[str, SqlStore]) -> None:
    """A metrics port another process holds is an input error naming it, before anything is sent."""
    import socket

    url, store = loans_db
    with socket.socket() as taken, FakeTopGateway() as gateway:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"LOANSTATE_APP_KEY": "test-app-key", "LOANSTATE_APP_SECRET": "test-app-secret"}
        result = run(
            "deliver", "--db", url, "--once", "--metrics-port", str(port), env={**env, "LOANSTATE_TOP_URL": gateway.url}
        )
    assert f"--metrics-port {port}" in one_line_error(result)
    assert store.outbox_status().delivered == 0


def test_a_paused_dispatcher_records_its_pause_for_the_console(loans_db: tuple[str, SqlStore]) -> None:
    """A wrong secret pauses the dispatcher, which records the pause in the store; a passing probe clears it."""
    from loanstate.store._pauses import read_pauses

    _, store = loans_db
    with FakeTopGateway(app_secret=SECRET) as gateway:
        with TopNotifier("test-app-key", "not-the-secret", url=gateway.url) as wrong:
            dispatcher = Dispatcher(store, wrong, worker_id="w-pause-test")
            assert dispatcher.run_once().paused is not None
        (pause,) = read_pauses(store.engine)
        assert (pause.worker_id, pause.cause) == ("w-pause-test", "signature")
        with TopNotifier("test-app-key", SECRET, url=gateway.url) as right:
            dispatcher.notifier = right
            assert dispatcher.run_once().delivered == 5
    assert read_pauses(store.engine) == []
