"""The durable guarantees under fire: SIGKILLed dispatchers, and several dispatcher processes on one outbox.

Deliveries go over real HTTP (TopNotifier) to a FakeTopGateway that injects
transient faults, including answers lost *after* the change took effect. The
gateway counts each request_id's effect and checks each loan's order.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from _durable import populate

from loanstate import SqlStore
from loanstate.testing import FakeTopGateway, Fault, FaultPlan

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": str(HERE.parent)}
# ~10% of requests fail transiently; DROP/TIMEOUT/MALFORMED lose the answer after the effect.
FAULTS = FaultPlan.random(
    {
        Fault.HTTP_500: 0.02,
        Fault.HTTP_503: 0.01,
        Fault.DROP: 0.02,
        Fault.TIMEOUT: 0.01,
        Fault.MALFORMED: 0.01,
        Fault.ISP_ERROR: 0.02,
        Fault.LATENCY: 0.05,
    },
    latency=0.05,
    hang=0.3,
)


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    """Each crash test runs a Dispatcher (TopNotifier) and an AsyncDispatcher (AsyncTopNotifier)."""
    return str(request.param)


def start_worker(
    url: sa.URL,
    gateway: FakeTopGateway,
    worker_id: str,
    *,
    lease: float,
    concurrency: int,
    face: str,
    gate: bool = False,
) -> subprocess.Popen[str]:
    """A dispatcher process (``face``: sync or async) delivering the outbox at ``url`` to ``gateway``.

    With ``gate`` it starts delivering only once told to go.
    """
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_worker.py"),
            "deliver",
            url.render_as_string(hide_password=False),
            gateway.url,
            worker_id,
            str(lease),
            str(concurrency),
            face,
            *(["gate"] if gate else []),
        ],
        stdin=subprocess.PIPE if gate else None,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def assert_exactly_once_in_order(store: SqlStore, names: list[str], gateway: FakeTopGateway) -> None:
    """Every event delivered, each request_id took effect once, and each loan saw its history in order."""
    status = store.outbox_status()
    assert (status.pending, status.parked, status.leased) == (0, 0, 0)
    expected = {e.request_id for name in names for e in store.history(name)}
    assert status.delivered == len(expected)
    assert set(gateway.effects) == expected
    assert set(gateway.effects.values()) == {1}
    assert gateway.order_violations == []
    for name in names:
        assert gateway.delivered(name) == store.history(name), name


@pytest.mark.slow
def test_sigkilled_dispatchers_lose_nothing_and_never_reorder(db_url: sa.URL, face: str) -> None:
    """A dispatcher SIGKILLed 20 times at random moments: after restarts every event took effect once, in order."""
    store = SqlStore(db_url)
    store.create_schema()
    names = populate(store, loans=200, changes=10)
    rng = random.Random(20240601)
    kills = 0
    with FakeTopGateway(faults=FAULTS, seed=7, latency=0.02) as gateway:
        while kills < 20:
            # Half the restarts reuse the dead worker's id (instant takeover), half wait out its lease.
            worker_id = "crashy" if rng.random() < 0.5 else f"crashy-{kills}"
            # Four at a time, so twenty short runs cannot drain the outbox before the last kill.
            # The shortest lease the lease rule allows for the worker's 1 s send deadline and quick retries.
            process = start_worker(db_url, gateway, worker_id, lease=3.5, concurrency=4, face=face)
            assert process.stdout is not None
            if process.stdout.readline().strip() != "delivering":
                process.wait(30)
                break  # nothing left to deliver before the kill: the run is over early
            time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            process.stdout.close()
            kills += 1
        assert kills == 20, "the outbox drained before 20 kills: give the test more events"
        assert store.outbox_status().pending > 0
        final = start_worker(db_url, gateway, "survivor", lease=3.5, concurrency=16, face=face)
        out, _ = final.communicate(timeout=240)
        assert final.returncode == 0, out
        assert_exactly_once_in_order(store, names, gateway)
    store.close()


@pytest.mark.slow
def test_several_dispatcher_processes_share_one_outbox(server_db_url: sa.URL, face: str) -> None:
    """Three dispatcher processes on one PostgreSQL / MariaDB outbox share the work, each event once, in order."""
    store = SqlStore(server_db_url)
    store.create_schema()
    names = populate(store, loans=150, changes=8)
    with FakeTopGateway(faults=FAULTS, seed=11, latency=0.02) as gateway:
        workers = [
            start_worker(server_db_url, gateway, f"worker-{n}", lease=5.0, concurrency=8, face=face, gate=True)
            for n in range(3)
        ]
        for w in workers:  # all set up before any starts: a slow start cannot find the work already done
            assert w.stdout is not None
            assert w.stdout.readline().strip() == "ready"
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        outputs = [w.communicate(timeout=240)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0, 0], outputs
        shares = [int(out.split("delivered=")[1].split()[0]) for out in outputs]
        assert all(share > 0 for share in shares), shares
        assert sum(shares) >= 150 * 8
        assert_exactly_once_in_order(store, names, gateway)
    store.close()
