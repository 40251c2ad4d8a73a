"""``loanstate gateway``: the fake Alibaba open-platform gateway in the foreground, for manual testing."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Final

import click

from loanstate.cli._common import debug_option, json_text, load_machine, printable

if TYPE_CHECKING:
    from loanstate.fake import FakeTopGateway

__all__ = ["gateway"]

_TEST_KEY: Final = "test-app-key"
_TEST_SECRET: Final = "test-app-secret"  # the fake gateway's published test secret, not a credential


@click.command(epilog="Example: loanstate gateway --port 8080 --fault-rate 0.1")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--machine", "machine_file", type=click.Path(path_type=str), help="Lifecycle the platform enforces.")
@click.option("--fault-rate", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0))
@click.option("--latency", default=0.0, show_default=True, type=click.FloatRange(0.0, 60.0), help="Seconds per answer.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: the start line is one JSON object (url, app_key, fault_rate).",
)
@debug_option
def gateway(  # noqa: PLR0917 - click passes every option by name anyway
    port: int, machine_file: str | None, fault_rate: float, latency: float, seed: int, fmt: str
) -> int:
    """Run the fake Alibaba open-platform gateway on 127.0.0.1 in the foreground (Ctrl-C or SIGTERM stops it).

    It checks signatures, timestamps and the business JSON like the platform,
    deduplicates by request_id, and injects transient faults at --fault-rate.
    The app key and secret are LOANSTATE_APP_KEY / LOANSTATE_APP_SECRET, else
    the published test pair.
    """
    from loanstate.fake import FakeTopGateway, Fault, FaultPlan

    machine = load_machine(machine_file) if machine_file else None
    key = os.environ.get("LOANSTATE_APP_KEY") or _TEST_KEY
    secret = os.environ.get("LOANSTATE_APP_SECRET") or _TEST_SECRET
    transient = (Fault.HTTP_500, Fault.HTTP_503, Fault.DROP, Fault.ISP_ERROR)
    plan = FaultPlan.random({f: fault_rate / len(transient) for f in transient}, hang=5.0) if fault_rate else None
    fake = FakeTopGateway(
        app_key=key, app_secret=secret, machine=machine, faults=plan, seed=seed, latency=latency, port=port
    )

    def ready(gw: FakeTopGateway) -> None:
        test_pair = secret == _TEST_SECRET
        if fmt == "json":
            line = {
                "listening": gw.url,
                "app_key": gw.app_key,
                # The published test secret may be shown; a real one never is.
                "app_secret": secret if test_pair else None,
                "app_secret_from": "test pair" if test_pair else "LOANSTATE_APP_SECRET",
                "fault_rate": fault_rate,
                "latency": latency,
                "seed": seed,
            }
            click.echo(json_text(line))
        else:
            shown = secret if test_pair else "(from LOANSTATE_APP_SECRET)"
            click.echo(f"fake TOP gateway listening on {gw.url}")
            click.echo(f"app_key {printable(gw.app_key)}  app_secret {shown}  fault rate {fault_rate}")
            click.echo(
                f"deliver to it: LOANSTATE_TOP_URL={gw.url} LOANSTATE_APP_KEY={printable(gw.app_key)} "
                "LOANSTATE_APP_SECRET=... loanstate deliver --db sqlite:///loans.db"
            )
        sys.stdout.flush()

    # Ctrl-C or SIGTERM (a service manager, `kill`) stops it cleanly; installed
    # explicitly, since a shell starts background jobs with SIGINT ignored.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        fake.serve_forever(ready, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"stopped after {len(fake.requests)} requests", err=True)
    return 0
