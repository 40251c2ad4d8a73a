"""The benchmarks run and their correctness checks hold (quick mode), and the checks fail when they should.

No timing is asserted: the figures of a quick run mean nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from benchmarks._checks import CheckFailed, check_counts, check_deliveries, check_replies, expected_order
from benchmarks._gateway import records_of
from benchmarks._report import BEGIN, END
from loanstate import LoanChangeEvent, TopNotifier, default_machine
from loanstate.fake import FakeTopGateway, Fault
from loanstate.top import CONTENT_TYPE, build_request

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "performance.md"
AT = datetime(2024, 1, 1, tzinfo=UTC)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _region(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_passes_every_check_and_writes_the_results(tmp_path: Path) -> None:
    """`python -m benchmarks --quick --write-docs PAGE` exits 0, runs every check, and writes every row into PAGE."""
    page = tmp_path / "performance.md"
    shutil.copy(PAGE, page)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--write-docs", str(page)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    region = _region(page.read_text(encoding="utf-8"))
    assert region.lstrip().startswith("A quick run")
    assert "none failed" in region
    for workload in (
        "change(), cold",
        "bytes held per loan",
        "to_top_param() + sign() one event",
        "sequential round trip to FakeTopGateway",
        "SQLite: transition, 1 per transaction",
        "SQLite: transition_many",
        "Dispatcher: CPU per 1000 delivered events",
        "AsyncDispatcher: CPU per 1000 delivered events",
        "audit 40,000 records",
        "SQLite: open_loans, 2,000 loans",
        "tracemalloc peak, SQLite open_loans of 8,000 loans",
        "SQLite: outbox claim of 32, 5,000 delivered rows present",
    ):
        assert workload in region, workload
    for check in (
        "TopNotifier.send: 101 events of 101 loans each took effect once, every loan in order",
        "bare httpx2 posts: all 101 replies were fresh successes",
        "AsyncTopNotifier, 32 concurrent: 100 events",
        "Dispatcher: 200 events of 100 loans each took effect once, every loan in order",
        "AsyncDispatcher: 200 events of 100 loans each took effect once, every loan in order",
        "Dispatcher: delivered (report) = 200, delivered (outbox) = 200, pending = 0, parked = 0",
        "bare httpx2 client, 32 threads: all 200 replies were fresh successes",
        "bare aiohttp client, 32 at a time: all 200 replies were fresh successes",
        "bare httpx2.AsyncClient, 32 at a time: all 200 replies were fresh successes",
        "SQLite SqlStore.open_loans: exactly 2,000 loans in the table, every one NEW at version 0",
        "SQLite raw driver executemany: exactly 2,000 loans in the table",
        "SQLite claim, 5,000 delivered rows present: 20 claims each returned the next 32 pending events",
        "SQLite claim, 0 delivered rows present: 20 claims each returned the next 32 pending events",
        "SQLite SqlStore.transition_many: 200 changes, as many history and outbox rows",
        "SQLite raw driver, 1 per transaction: 20 changes",
        "audit: 40,000 records read on every side",
        "change(): no memory held per loan",
    ):
        assert check in region, check
    if IN_CI or "PostgreSQL:" in region:  # CI has a server: its rows and checks must be there
        assert "PostgreSQL: transition_many" in region
        assert "PostgreSQL: open_loans, 2,000 loans" in region
        assert "PostgreSQL claim, 5,000 delivered rows present: 20 claims" in region
        assert "scale-out, 4 worker(s) at c=32: delivered (workers) = 100, delivered (outbox) = 100" in region
        assert "scale-out, 1 worker(s) at c=32: 100 events of 100 loans each took effect once" in region


def test_the_published_results_come_from_a_full_run() -> None:
    """docs/performance.md's results region is a full run's output, naming machine, date and commit, every row."""
    region = _region(PAGE.read_text(encoding="utf-8"))
    assert region.lstrip().startswith("One full run of `python -m benchmarks`")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", region)
    assert re.search(r"\d+ cores", region)
    assert "SQLite 3." in region
    assert "PostgreSQL" in region
    for workload in (
        "change(), cold",
        "SQLite: transition, 1 per transaction",
        "PostgreSQL: transition_many, 1000 per transaction",
        "Dispatcher, 1000 loans x 2",
        "AsyncDispatcher: CPU per 1000 delivered events",
        "PostgreSQL, 4 dispatcher processes",
        "audit 1,000,000 records",
        "SQLite: open_loans, 1,000,000 loans",
        "delivered rows present",
    ):
        assert workload in region, workload
    assert "none failed" in region


def _events(loan: str, count: int) -> list[LoanChangeEvent]:
    """``count`` consecutive changes of one loan, NEW -> OVERDUE -> NEW ..., each with its own request_id."""
    machine, walk = default_machine(), ("NEW", "OVERDUE")
    return [
        machine.change(
            loan_apply_no=loan, before=walk[n % 2], after=walk[(n + 1) % 2], at=AT, request_id=f"{loan}-{n + 1}"
        )
        for n in range(count)
    ]


def _order(events: list[LoanChangeEvent]) -> dict[str, list[str]]:
    return expected_order((e.loan_apply_no, e.request_id) for e in events)


def test_check_deliveries_passes_a_run_that_took_effect_once_in_order() -> None:
    """Events sent in their loan's order, each once, pass the delivery check."""
    events = _events("FI1", 3) + _events("FI2", 2)
    with FakeTopGateway() as gateway, TopNotifier("test-app-key", "test-app-secret", url=gateway.url) as notifier:
        for event in events:
            notifier.send(event)
        check_deliveries(records_of(gateway), _order(events), "in order")


def test_check_deliveries_fails_on_events_out_of_order() -> None:
    """A loan whose events took effect in another order than the store's fails the check."""
    events = _events("FI1", 3)
    with FakeTopGateway() as gateway, TopNotifier("test-app-key", "test-app-secret", url=gateway.url) as notifier:
        for event in (events[1], events[0], events[2]):
            notifier.send(event)
        with pytest.raises(CheckFailed, match="FI1"):
            check_deliveries(records_of(gateway), _order(events), "reordered")


def test_check_deliveries_fails_on_a_missing_event() -> None:
    """An expected event the gateway never applied fails the check (equality, not at-least)."""
    events = _events("FI1", 2) + _events("FI2", 1)
    with FakeTopGateway() as gateway, TopNotifier("test-app-key", "test-app-secret", url=gateway.url) as notifier:
        for event in events[:2]:
            notifier.send(event)
        with pytest.raises(CheckFailed, match="FI2"):
            check_deliveries(records_of(gateway), _order(events), "lost")


def test_check_deliveries_fails_on_an_extra_event_of_a_loan() -> None:
    """A change the store never recorded, applied for one of the run's loans, fails the check."""
    events = _events("FI1", 2)
    with FakeTopGateway() as gateway, TopNotifier("test-app-key", "test-app-secret", url=gateway.url) as notifier:
        for event in events:
            notifier.send(event)
        with pytest.raises(CheckFailed, match="FI1"):
            check_deliveries(records_of(gateway), _order(events[:1]), "extra")


def test_check_deliveries_fails_on_a_request_id_reused_for_another_change() -> None:
    """A request_id sent again with a different change (the gateway's conflict record) fails the check."""
    first = _events("FI1", 1)[0]
    reused = default_machine().change(
        loan_apply_no="FI1", before="NEW", after="SETTLED", at=AT, request_id=first.request_id
    )
    with FakeTopGateway() as gateway, TopNotifier("test-app-key", "test-app-secret", url=gateway.url) as notifier:
        notifier.send(first)
        notifier.send(reused)
        with pytest.raises(CheckFailed, match="reused"):
            check_deliveries(records_of(gateway), _order([first]), "conflict")


def test_check_replies_fails_on_a_reply_that_is_no_success() -> None:
    """A bare client's error reply, classified by the notifiers' rules, fails the reply check."""
    event = _events("FI1", 1)[0]
    with FakeTopGateway(faults=[Fault.ISV_ERROR]) as gateway:
        request = build_request(event, app_key="test-app-key", app_secret="test-app-secret", now=datetime.now(UTC))
        answer = httpx2.post(
            f"{gateway.url}?{request.query_string()}", content=request.body(), headers={"Content-Type": CONTENT_TYPE}
        )
    reply = (answer.status_code, answer.content, answer.headers.get("content-type"))
    with pytest.raises(CheckFailed, match="not a fresh success"):
        check_replies([reply], 1, "bare")
    with pytest.raises(CheckFailed, match="2 requests"):
        check_replies([reply], 2, "bare")


def test_check_counts_wants_equality() -> None:
    """One delivery too many fails the count check just as one too few does."""
    check_counts("exact", Counter(delivered=100), {"delivered": 100})
    for wrong in (99, 101):
        with pytest.raises(CheckFailed, match="expected exactly 100"):
            check_counts("off by one", {"delivered": wrong}, {"delivered": 100})
