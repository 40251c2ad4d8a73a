"""Prometheus metrics, the dispatcher's metric hooks, the persisted pause, and the console command's guards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from loanstate import Dispatcher, InMemoryNotifier, LoanChangeEvent, PermanentDeliveryError, TransientDeliveryError
from loanstate.cli.console import is_loopback
from loanstate.console import DispatchMetrics, PauseRecorder, create_app, serve_metrics
from loanstate.dispatch import Attempt, Pause, RetryPolicy
from loanstate.store import SqlStore

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def run_with_faults(store: SqlStore) -> None:
    """Twelve loans through a dispatcher whose notifier fails: four transient failures, three loans for good."""
    at = datetime.now(UTC) - timedelta(minutes=5)
    for i in range(12):
        store.open_loan(f"M-{i:02d}", at=at)
        store.transition(f"M-{i:02d}", after="OVERDUE", at=at)
    store.transition("M-00", after="NEW", at=at + timedelta(seconds=1))
    notifier = InMemoryNotifier()
    notifier.fail_when(lambda e: e.loan_apply_no in ("M-00", "M-01", "M-02"), PermanentDeliveryError("isv.bad-loan"))
    # Four loans fail once, transiently, then go through: whichever order the dispatcher sends in.
    flaky = {"M-03", "M-04", "M-05", "M-06"}

    def fails_once(event: LoanChangeEvent) -> bool:
        if event.loan_apply_no in flaky:
            flaky.discard(event.loan_apply_no)
            return True
        return False

    notifier.fail_when(fails_once, TransientDeliveryError)
    policy = RetryPolicy(attempts=2, wait_initial=0.01, wait_max=0.02, wait_jitter=0.0)
    Dispatcher(store, notifier, concurrency=3, retry=policy).run_once()
    # One more change nobody has delivered yet: a pending event with a lag.
    store.transition("M-11", after="SETTLED", at=at + timedelta(seconds=2))


def test_console_metrics_match_the_store_after_a_delivery_run_with_faults(store: SqlStore) -> None:
    """/metrics reports the outbox's own counts per state, its parked loans and its lag."""
    run_with_faults(store)
    status = store.outbox_status()
    assert status.parked == 3
    assert status.pending >= 1
    response = TestClient(create_app(store)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    for state in ("pending", "delivered", "parked", "skipped"):
        assert found[("loanstate_outbox_events", (("state", state),))] == getattr(status, state)
    assert found[("loanstate_parked_loans", ())] == len({p.loan_apply_no for p in status.parked_loans})
    assert status.lag is not None
    assert found[("loanstate_outbox_lag_seconds", ())] >= status.lag.total_seconds()
    assert found[("loanstate_dispatcher_paused", ())] == 0


def test_console_pages_read_every_engine(store: SqlStore) -> None:
    """The overview, the parked groups and a loan's page render on each engine after a faulty run."""
    run_with_faults(store)
    client = TestClient(create_app(store))
    overview = client.get("/")
    assert overview.status_code == 200
    assert '<span class="n">3</span><span class="l">parked</span>' in overview.text
    parked = client.get("/parked")
    assert "PermanentDeliveryError: isv.bad-loan" in parked.text
    assert "<td>3</td><td>3</td>" in parked.text
    assert client.get("/loans/M-00").text.count("<li>") == 2
    assert "M-05" in client.get("/search", params={"q": "M-0"}).text


def test_dispatch_metrics_follow_the_dispatcher_s_hooks(tmp_path: Path) -> None:
    """Wired to a dispatcher's hooks, the counters add up to the attempts the store recorded."""
    store = SqlStore(f"sqlite:///{tmp_path / 'hooks.db'}")
    store.create_schema()
    metrics = DispatchMetrics()
    at = datetime.now(UTC)
    for i in range(5):
        store.open_loan(f"H-{i}", at=at)
        store.transition(f"H-{i}", after="OVERDUE", at=at)
    notifier = InMemoryNotifier()
    notifier.fail_when(lambda e: e.loan_apply_no == "H-0", PermanentDeliveryError("isv.bad-loan"))
    Dispatcher(
        store,
        notifier,
        on_attempt=metrics.on_attempt,  # type: ignore[call-arg, unused-ignore]
        on_paused=metrics.on_paused,
        on_resumed=metrics.on_resumed,
    ).run_once()
    registry = metrics.registry
    assert registry.get_sample_value("loanstate_deliveries_total", {"outcome": "delivered"}) == 4
    assert registry.get_sample_value("loanstate_deliveries_total", {"outcome": "parked"}) == 1
    assert registry.get_sample_value("loanstate_delivery_seconds_count") == 5
    assert registry.get_sample_value("loanstate_dispatcher_paused") == 0
    assert store.outbox_status().delivered == 4
    store.close()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """OpenTelemetry's SDK recording spans in memory (the global provider can be set once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    exporter.clear()


def test_dispatch_metrics_count_time_and_trace_each_attempt(spans: InMemorySpanExporter) -> None:
    """Each attempt counts under its outcome, lands in the histogram, and becomes a span with its ids."""
    spans.clear()
    metrics = DispatchMetrics()
    attempts = [
        Attempt("r1", "L-1", "delivered", 0.02),
        Attempt("r2", "L-2", "retry", 0.3, "TransientDeliveryError: busy"),
        Attempt("r3", "L-3", "parked", 0.1, "PermanentDeliveryError: isv.bad-loan"),
        Attempt("r4", "L-1", "delivered", 0.04),
    ]
    for attempt in attempts:
        metrics.on_attempt(attempt)
    value = metrics.registry.get_sample_value
    assert value("loanstate_deliveries_total", {"outcome": "delivered"}) == 2
    assert value("loanstate_deliveries_total", {"outcome": "retry"}) == 1
    assert value("loanstate_deliveries_total", {"outcome": "parked"}) == 1
    assert value("loanstate_deliveries_total", {"outcome": "paused"}) == 0
    assert value("loanstate_delivery_seconds_count") == 4
    assert value("loanstate_delivery_seconds_sum") == pytest.approx(0.46)
    assert value("loanstate_delivery_seconds_bucket", {"le": "0.05"}) == 2
    finished = spans.get_finished_spans()
    assert [s.attributes["loanstate.request_id"] for s in finished if s.attributes] == ["r1", "r2", "r3", "r4"]
    parked = finished[2]
    assert parked.name == "loanstate.deliver"
    assert parked.attributes is not None
    assert parked.attributes["loanstate.outcome"] == "parked"
    assert parked.attributes["loanstate.loan_apply_no"] == "L-3"


def test_a_recorded_pause_shows_on_the_console_until_resumed(tmp_path: Path) -> None:
    """A dispatcher's pause, recorded in the store, turns the overview's banner and the paused gauge on, then off."""
    store = SqlStore(f"sqlite:///{tmp_path / 'pause.db'}")
    store.create_schema()
    metrics = DispatchMetrics(recorder=PauseRecorder(store, "worker-a:1234"))
    client = TestClient(create_app(store))
    assert "Delivery is running" in client.get("/").text
    since = datetime(2026, 11, 30, 1, 2, 3, tzinfo=UTC)
    remedy = "the platform rejects our signature: check LOANSTATE_APP_SECRET"
    metrics.on_paused(Pause("signature", remedy, "code 25 <Invalid signature>", since))
    page = client.get("/").text
    assert "Delivery is paused" in page
    assert remedy in page
    assert "code 25 &lt;Invalid signature&gt;" in page
    assert "worker-a:1234" in page
    assert "2026-11-30 01:02:03 UTC" in page
    assert samples(client.get("/metrics").text)[("loanstate_dispatcher_paused", ())] == 1
    assert metrics.registry.get_sample_value("loanstate_dispatcher_paused") == 1
    metrics.on_resumed()
    assert "Delivery is running" in client.get("/").text
    assert samples(client.get("/metrics").text)[("loanstate_dispatcher_paused", ())] == 0
    assert metrics.registry.get_sample_value("loanstate_dispatcher_paused") == 0
    store.close()


def test_a_restarted_worker_clears_its_stale_pause(tmp_path: Path) -> None:
    """A new PauseRecorder under the same worker id forgets the pause a crashed run left behind."""
    store = SqlStore(f"sqlite:///{tmp_path / 'stale.db'}")
    store.create_schema()
    PauseRecorder(store, "w1").on_paused(Pause("tls", "fix the CA bundle", "TLS failed", datetime.now(UTC)))
    PauseRecorder(store, "w2").on_paused(Pause("tls", "fix the CA bundle", "TLS failed", datetime.now(UTC)))
    PauseRecorder(store, "w1")
    page = TestClient(create_app(store)).get("/").text
    assert "w2" in page
    assert "<code>w1</code>" not in page
    store.close()


def test_serve_metrics_exposes_store_and_dispatcher_metrics(tmp_path: Path) -> None:
    """serve_metrics answers /metrics on loopback with the store's gauges and the dispatcher's counters."""
    store = SqlStore(f"sqlite:///{tmp_path / 'served.db'}")
    store.create_schema()
    run_with_faults(store)
    metrics = DispatchMetrics()
    metrics.on_attempt(Attempt("r1", "M-03", "delivered", 0.01))
    server = serve_metrics(store, 0, metrics=metrics)
    try:
        assert server.host == "127.0.0.1"
        body = httpx2.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    finally:
        server.close()
        store.close()
    found = samples(body)
    assert found[("loanstate_outbox_events", (("state", "parked"),))] == 3
    assert found[("loanstate_parked_loans", ())] == 3
    assert found[("loanstate_deliveries_total", (("outcome", "delivered"),))] == 1
    assert found[("loanstate_dispatcher_paused", ())] == 0
    assert ("loanstate_delivery_seconds_count", ()) in found


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.3.4.5", True), ("0.0.0.0", False),
     ("10.0.0.7", False), ("console.internal", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    """Only this machine's own addresses count as loopback; a host name other than localhost does not."""
    assert is_loopback(host) is loopback


def _loanstate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOANSTATE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "loanstate", *args],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_console_command_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    """`loanstate console --host 0.0.0.0` without LOANSTATE_CONSOLE_TOKEN exits 2 with one line."""
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    SqlStore(db).create_schema()
    done = _loanstate("console", "--db", db, "--host", "0.0.0.0")
    assert done.returncode == 2
    assert "LOANSTATE_CONSOLE_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_console_command_refuses_actions_without_a_token(tmp_path: Path) -> None:
    """`loanstate console --allow-actions` without a token exits 2 naming the variable."""
    done = _loanstate("console", "--db", f"sqlite:///{tmp_path / 'cli.db'}", "--allow-actions")
    assert done.returncode == 2
    assert "--allow-actions needs a token" in done.stderr


def test_console_command_refuses_a_password_in_the_url() -> None:
    """A password on the command line is refused, and not echoed back."""
    done = _loanstate("console", "--db", "postgresql+psycopg://u:hunter2-secret@127.0.0.1/loans")
    assert done.returncode == 2
    assert "hunter2-secret" not in done.stderr + done.stdout


def test_console_command_serves_and_logs_each_action(tmp_path: Path) -> None:
    """`loanstate console --allow-actions` serves on loopback; a retry by bearer token is logged with its loan."""
    db = f"sqlite:///{tmp_path / 'served.db'}"
    store = SqlStore(db)
    store.create_schema()
    run_with_faults(store)
    store.close()
    token = "served-token-0123456789"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOANSTATE_")}
    environment["LOANSTATE_CONSOLE_TOKEN"] = token
    port = _free_port()
    command = [sys.executable, "-m", "loanstate", "console", "--db", db, "--port", str(port), "--allow-actions"]
    server = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        answer = _wait_for_console(port, token)
        assert answer.status_code == 200
        done = httpx2.post(
            f"http://127.0.0.1:{port}/loans/M-01/retry", headers={"authorization": f"Bearer {token}"}, timeout=10
        )
        assert done.json() == {"action": "retry", "count": 1, "loans": ["M-01"]}
        refused = httpx2.post(f"http://127.0.0.1:{port}/loans/M-02/retry", timeout=10)
        assert refused.status_code == 401
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert 'console retry by bearer token from 127.0.0.1: 1 event(s); loans ["M-01"]' in stderr
    assert "console retry refused from 127.0.0.1: no token" in stderr
    assert token not in stderr


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_console(port: int, token: str) -> httpx2.Response:
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx2.get(
                f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=5
            )
        except httpx2.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
