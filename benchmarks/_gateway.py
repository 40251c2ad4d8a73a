"""A FakeTopGateway in its own process (its CPU is not the client's), whose records the benchmark reads back.

``python -m benchmarks._gateway LATENCY`` prints the gateway's URL, then
answers commands on standard input, one per line: ``records PREFIX`` prints
the gateway's own records (what took effect, in order) of the loans whose
number starts with ``PREFIX`` as one JSON line; end of input stops it. :func:`gateway_process` runs it and hands back a
:class:`Gateway` handle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from benchmarks._checks import GatewayRecords
from loanstate.fake import FakeTopGateway

__all__ = ["Gateway", "gateway_process", "records_of"]

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Gateway:
    """A running gateway process: its ``url`` and a way to read its records."""

    url: str
    _process: subprocess.Popen[str]

    def records(self, prefix: str) -> GatewayRecords:
        """The gateway's own account so far of the loans named ``prefix...`` (see :func:`records_of`)."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(f"records {prefix}\n")
        self._process.stdin.flush()
        data = json.loads(self._process.stdout.readline())
        return GatewayRecords(
            effects=data["effects"],
            applied=[(loan, rid) for loan, rid in data["applied"]],
            violations=data["violations"],
            conflicts=data["conflicts"],
        )


def records_of(gateway: FakeTopGateway, prefix: str = "") -> GatewayRecords:
    """A gateway's own records of the loans named ``prefix...`` (read once their deliveries are over).

    Effects are kept per request_id, so they are those of the applied changes
    of these loans; order violations and conflicts are the gateway's, whole.
    """
    applied = [(e.loan_apply_no, e.request_id) for e in gateway.delivered() if e.loan_apply_no.startswith(prefix)]
    effects = gateway.effects
    return GatewayRecords(
        effects={rid: effects[rid] for _, rid in applied},
        applied=applied,
        violations=gateway.order_violations,
        conflicts=gateway.conflicts,
    )


@contextmanager
def gateway_process(latency: float) -> Iterator[Gateway]:
    """Run a FakeTopGateway answering after ``latency`` seconds in a child process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._gateway", str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the gateway process did not start (said {url!r})")
        yield Gateway(url, process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def _serve(latency: float) -> None:
    from loanstate import default_machine

    # keep_requests bounds only the raw request log; effects and deliveries are kept in full.
    gateway = FakeTopGateway(latency=latency, machine=default_machine(), keep_requests=100)
    stop = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            command, _, prefix = line.strip().partition(" ")
            if command == "records":
                sys.stdout.write(json.dumps(attrs.asdict(records_of(gateway, prefix))) + "\n")
                sys.stdout.flush()
        stop.set()

    def ready(gw: FakeTopGateway) -> None:
        print(gw.url, flush=True)
        threading.Thread(target=commands, name="commands", daemon=True).start()

    gateway.serve_forever(ready, stop=stop)


if __name__ == "__main__":
    _serve(float(sys.argv[1]))
