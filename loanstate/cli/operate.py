"""The operating side of the ``loanstate`` command: demo, gateway, deliver, outbox.

Credentials never come from the command line (other users can read a
process's arguments): the database password and the open-platform app key and
secret come from environment variables or from a config file that only its
owner may read.

Environment: ``LOANSTATE_DB_URL`` (a SQLAlchemy URL), ``LOANSTATE_DB_PASSWORD``,
``LOANSTATE_APP_KEY``, ``LOANSTATE_APP_SECRET``, ``LOANSTATE_TOP_URL``,
``LOANSTATE_CONFIG`` (path of the config file). The config file (TOML)::

    [database]
    url = "postgresql+psycopg://servicing@db.internal/loans"
    password = "..."

    [top]
    app_key = "..."
    app_secret = "..."
    url = "https://gw.api.taobao.com/router/rest"

The environment wins over the file; ``--db`` (which must not hold a password)
wins over both for the URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import click

from loanstate.cli._common import EXIT_FINDINGS, InputError, debug_option, first_line, load_machine, stdout

if TYPE_CHECKING:
    from loanstate.store import SqlStore

__all__ = ["Settings", "deliver", "demo", "gateway", "outbox"]

#: Alibaba's production gateway, used by ``deliver`` unless LOANSTATE_TOP_URL or [top] url says otherwise.
PRODUCTION_URL: Final = "https://gw.api.taobao.com/router/rest"
_TEST_KEY: Final = "test-app-key"
_TEST_SECRET: Final = "test-app-secret"  # the fake gateway's published test secret, not a credential


@attrs.frozen
class Settings:
    """Connection settings gathered from the environment and the config file (secrets kept out of repr)."""

    db_url: str | None = None
    db_password: str | None = attrs.field(default=None, repr=False)
    app_key: str | None = None
    app_secret: str | None = attrs.field(default=None, repr=False)
    top_url: str | None = None
    source: str = "environment"


# "scheme://user:password@host": what a URL that cannot even be parsed may still hold.
_PASSWORD_IN_URL: Final = re.compile(r"(://[^:@/]*:).*@")  # greedy: a raw '@' or '/' in the password too


def _redacted(url: str) -> str:
    """``url`` with any password masked, for an error message about a URL SQLAlchemy cannot parse."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


def _read_config(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a config file")
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"{path}: holds credentials but others may read it (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    return data


def settings(config: str | None, db: str | None) -> Settings:
    """Gather the settings: ``--db`` URL, then environment variables, then the config file."""
    env = os.environ
    path = config or env.get("LOANSTATE_CONFIG")
    data = _read_config(path) if path else {}
    database = data.get("database", {}) if isinstance(data.get("database"), dict) else {}
    top = data.get("top", {}) if isinstance(data.get("top"), dict) else {}
    if db is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(db)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise InputError(f"--db {_redacted(db)!r} is not a database URL (e.g. sqlite:///loans.db)") from None
        if parsed.password is not None:
            raise InputError(
                "--db holds a password, and command lines are visible to other users: "
                "put it in LOANSTATE_DB_PASSWORD or the config file's [database] password instead"
            )

    def pick(name: str, table: dict[str, Any], key: str) -> str | None:
        value = env.get(name) or table.get(key)
        return str(value) if value else None

    return Settings(
        db_url=db or pick("LOANSTATE_DB_URL", database, "url"),
        db_password=pick("LOANSTATE_DB_PASSWORD", database, "password"),
        app_key=pick("LOANSTATE_APP_KEY", top, "app_key"),
        app_secret=pick("LOANSTATE_APP_SECRET", top, "app_secret"),
        top_url=pick("LOANSTATE_TOP_URL", top, "url"),
        source=f"environment and {path}" if path else "environment",
    )


def _require(values: dict[str, str | None], where: str) -> None:
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: {where}")


@contextmanager
def open_store(s: Settings, *, create: bool = False) -> Iterator[SqlStore]:
    """Open the store the settings name and check it answers; every failure is one clear line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from loanstate.store import SqlStore

    _require(
        {"a database URL": s.db_url},
        "pass --db URL, or set LOANSTATE_DB_URL, or [database] url in the config file",
    )
    assert s.db_url is not None
    try:
        url = make_url(s.db_url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise InputError(f"{_redacted(s.db_url)!r} is not a database URL (e.g. sqlite:///loans.db)") from None
    if s.db_password and url.password is None:
        url = url.set(password=s.db_password)
    shown = url.render_as_string(hide_password=True)
    on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if on_disk and not create and not Path(str(url.database)).exists():
        raise InputError(f"{shown}: no such database file")
    try:
        store = SqlStore(url)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise InputError(
            f"{shown}: the database driver is not installed ({first_line(exc)}); "
            "pip install 'loanstate[postgres]' or 'loanstate[mysql]'"
        ) from None
    try:
        try:
            if create:
                store.create_schema()
            elif store.schema_version() is None:
                raise InputError(
                    f"{shown}: holds no loanstate tables (servicing code creates them with SqlStore.create_schema())"
                )
        except SQLAlchemyError as exc:
            detail = first_line(getattr(exc, "orig", None) or exc)
            raise InputError(f"cannot use database {shown}: {detail}") from None
        yield store
    finally:
        store.close()


# -- demo ----------------------------------------------------------------------------


class _RichDemoProgress:
    """Live progress of the demo on stderr (rich)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.notes: dict[str, int] = {}

    def start(self, phase: str, total: int) -> None:
        self.tasks[phase] = self.bar.add_task(phase, total=total, extra="")

    def advance(self, phase: str, amount: int = 1) -> None:
        self.bar.advance(self.tasks[phase], amount)

    def note(self, key: str, value: int) -> None:
        self.notes[key] = value
        if "delivering" in self.tasks:
            extra = "  ".join(f"{k} {v}" for k, v in sorted(self.notes.items()))
            self.bar.update(self.tasks["delivering"], extra=extra)


@click.command(epilog="Example: loanstate demo --loans 500 --seed 7")
@click.option("--loans", default=2000, show_default=True, type=click.IntRange(1, 200_000), help="How many loans.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same loans, changes and outcome.")
@click.option("--db", help="SQLAlchemy URL of an empty database (default: SQLite in a temporary directory).")
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 512))
@click.option(
    "--fault-rate",
    default=0.03,
    show_default=True,
    type=click.FloatRange(0.0, 0.5),
    help="Share of requests the fake gateway fails transiently.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Live progress on stderr (default: when a terminal).")
@debug_option
def demo(  # noqa: PLR0917 - click passes every option by name anyway
    loans: int, seed: int, db: str | None, concurrency: int, fault_rate: float, fmt: str, progress: bool | None
) -> int:
    """Run the whole job on embedded defaults and check its guarantees.

    Starts a fake Alibaba gateway on loopback (with injected faults), records
    random legal lifecycles of many loans in a SQLite store (illegal attempts
    are refused), delivers every change through the dispatcher, and shows what
    happened: exit 0 when every guarantee held, 1 when one did not.
    """
    from loanstate._demo import REFUSED_BY_PLATFORM, run_demo

    if db is not None:
        settings(None, db)  # refuses a password on the command line
    live = (sys.stderr.isatty() if progress is None else progress) and fmt == "text"
    reporter = _RichDemoProgress() if live else None
    if reporter is not None:
        reporter.bar.start()
    try:
        summary = run_demo(
            loans=loans,
            seed=seed,
            db=db,
            concurrency=concurrency,
            fault_rate=fault_rate,
            progress=reporter,
        )
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):  # unreachable, not a database, access denied, ...
            where = db or "the temporary SQLite database"
            raise InputError(f"cannot use database {where}: {first_line(getattr(exc, 'orig', None) or exc)}") from None
        raise
    finally:
        if reporter is not None:
            reporter.bar.stop()
    if fmt == "json":
        click.echo(json.dumps(summary.to_dict(), indent=2))
        return 0 if summary.ok else EXIT_FINDINGS
    from rich.markup import escape
    from rich.table import Table

    def yes(flag: bool) -> str:
        return "[green]yes[/green]" if flag else "[bold red]NO[/bold red]"

    before, after = REFUSED_BY_PLATFORM
    table = Table(
        title=f"loanstate demo: {summary.loans} loans, seed {summary.seed}, {escape(summary.database)}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    table.add_row("changes recorded", str(summary.changes), "random legal lifecycles")
    table.add_row("illegal attempts refused", str(summary.illegal_rejected), "nothing written")
    table.add_row("events delivered", str(summary.delivered), "accepted by the gateway")
    table.add_row("faults injected", str(summary.faults_injected), "5xx, drops, timeouts, isp.*")
    table.add_row("replays absorbed", str(summary.replays_absorbed), "same request_id, no effect")
    table.add_row("rescheduled", str(summary.rescheduled), "retried via the outbox")
    table.add_row(
        "parked loans",
        str(summary.parked_loans),
        f"platform refuses {before}->{after}",
    )
    table.add_row("waiting behind parked", str(summary.waiting_behind_parked), "kept in per-loan order")
    table.add_row("each request_id effective once", yes(summary.exactly_once), "at the gateway")
    table.add_row("per-loan order held", yes(summary.order_held), "at the gateway")
    table.add_row("gateway agrees with store", yes(summary.matches_store), "event by event")
    table.add_row("left undelivered", str(summary.undelivered), "")
    table.add_row("elapsed", f"{summary.elapsed:.1f} s", "")
    table.add_row("throughput", f"{summary.throughput:.0f} events/s", "end to end")
    stdout().print(table)
    return 0 if summary.ok else EXIT_FINDINGS


# -- gateway -------------------------------------------------------------------------


@click.command(epilog="Example: loanstate gateway --port 8080 --fault-rate 0.1")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--machine", "machine_file", type=click.Path(path_type=str), help="Lifecycle the platform enforces.")
@click.option("--fault-rate", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0))
@click.option("--latency", default=0.0, show_default=True, type=click.FloatRange(0.0, 60.0), help="Seconds per answer.")
@click.option("--seed", default=0, show_default=True)
@debug_option
def gateway(port: int, machine_file: str | None, fault_rate: float, latency: float, seed: int) -> int:
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
        shown = secret if secret == _TEST_SECRET else "(from LOANSTATE_APP_SECRET)"
        click.echo(f"fake TOP gateway listening on {gw.url}", err=False)
        click.echo(f"app_key {gw.app_key}  app_secret {shown}  fault rate {fault_rate}", err=False)
        click.echo(
            f"deliver to it: LOANSTATE_TOP_URL={gw.url} LOANSTATE_APP_KEY={gw.app_key} "
            "LOANSTATE_APP_SECRET=... loanstate deliver --db sqlite:///loans.db",
            err=False,
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


# -- deliver -------------------------------------------------------------------------

_CONFIG_HELP: Final = "Config file with credentials (TOML, mode 600); also LOANSTATE_CONFIG."


@click.command(
    epilog=(
        "Example: LOANSTATE_APP_KEY=... LOANSTATE_APP_SECRET=... LOANSTATE_DB_PASSWORD=... "
        "loanstate deliver --db postgresql+psycopg://servicing@db/loans"
    )
)
@click.option("--db", help="SQLAlchemy URL of the store, without password (or LOANSTATE_DB_URL).")
@click.option("--config", type=click.Path(path_type=str), help=_CONFIG_HELP)
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 1024))
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 300.0), help="HTTP seconds.")
@debug_option
def deliver(db: str | None, config: str | None, once: bool, concurrency: int, timeout: float) -> int:
    """Run the dispatcher: deliver the store's outbox to Alibaba's open platform.

    Credentials come from LOANSTATE_APP_KEY, LOANSTATE_APP_SECRET (and
    LOANSTATE_DB_PASSWORD) or a config file only its owner can read; never
    from the command line. SIGTERM or Ctrl-C stops it gracefully.
    """
    from loanstate.dispatch import Dispatcher
    from loanstate.notifiers.top import TopNotifier

    # The dispatcher and stamina log retries and parked loans: an operator wants them on stderr.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The HTTP clients log every request at INFO: at hundreds of events a second that
    # drowns the dispatcher's own retries and parkings. Their warnings still show.
    for noisy in ("httpx2", "httpcore2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    s = settings(config, db)
    _require(
        {"LOANSTATE_APP_KEY": s.app_key, "LOANSTATE_APP_SECRET": s.app_secret},
        "set them in the environment, or as [top] app_key / app_secret in a config file (--config)",
    )
    assert s.app_key is not None
    assert s.app_secret is not None
    with (
        open_store(s) as store,
        TopNotifier(s.app_key, s.app_secret, url=s.top_url or PRODUCTION_URL, timeout=timeout) as notifier,
    ):
        dispatcher = Dispatcher(store, notifier, concurrency=concurrency)
        where = store.engine.url.render_as_string(hide_password=True)
        click.echo(f"delivering {where} -> {s.top_url or PRODUCTION_URL} as {dispatcher.worker_id}", err=True)
        report = dispatcher.run_once() if once else dispatcher.run_forever()
    lag = f"{report.lag.total_seconds():.0f} s" if report.lag is not None else "none"
    click.echo(
        f"delivered {report.delivered}, rescheduled {report.retried}, parked {report.parked}, "
        f"pending {report.pending} (oldest waits {lag}) in {report.elapsed:.1f} s"
    )
    return EXIT_FINDINGS if report.parked else 0


# -- outbox --------------------------------------------------------------------------


@click.group(epilog="Example: loanstate outbox status --db sqlite:///loans.db")
def outbox() -> None:
    """Look after the outbox: its status, and parked loans (retry or skip)."""


def _db_options(fn: Any) -> Any:
    fn = click.option("--config", type=click.Path(path_type=str), help=_CONFIG_HELP)(fn)
    return click.option("--db", help="SQLAlchemy URL of the store, without password (or LOANSTATE_DB_URL).")(fn)


@outbox.command("status", epilog="Example: loanstate outbox status --db sqlite:///loans.db --format json")
@_db_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@debug_option
def outbox_status(db: str | None, config: str | None, fmt: str) -> int:
    """Counts per state, the lag of the oldest pending event, and every parked loan (exit 1 if any)."""
    with open_store(settings(config, db)) as store:
        status = store.outbox_status()
    parked = [attrs.asdict(p) for p in status.parked_loans]
    if fmt == "json":
        out = {
            "pending": status.pending,
            "delivered": status.delivered,
            "parked": status.parked,
            "skipped": status.skipped,
            "leased": status.leased,
            "lag_seconds": status.lag.total_seconds() if status.lag is not None else None,
            "parked_loans": parked,
        }
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return EXIT_FINDINGS if parked else 0
    from rich.markup import escape
    from rich.table import Table

    console = stdout()
    lag = f"{status.lag.total_seconds():.0f} s" if status.lag is not None else "-"
    console.print(
        f"pending {status.pending} (leased {status.leased}, oldest waits {lag})  delivered {status.delivered}  "
        f"parked {status.parked}  skipped {status.skipped}"
    )
    if not parked:
        console.print("[green]no parked loans[/green]")
        return 0
    table = Table(title="parked loans", title_justify="left")
    for column in ("loan_apply_no", "request_id", "attempts", "waiting", "last error"):
        table.add_column(column)
    for p in status.parked_loans:
        # Loan numbers and error messages are data, never rich markup.
        table.add_row(
            escape(p.loan_apply_no),
            escape(p.request_id),
            str(p.attempts),
            str(p.waiting),
            escape((p.last_error or "")[:80]),
        )
    console.print(table)
    console.print("resolve: loanstate outbox retry LOAN_APPLY_NO  |  loanstate outbox skip REQUEST_ID")
    return EXIT_FINDINGS


@outbox.command("retry", epilog="Example: loanstate outbox retry FI123123121 --db sqlite:///loans.db")
@click.argument("loan_apply_no")
@_db_options
@debug_option
def outbox_retry(loan_apply_no: str, db: str | None, config: str | None) -> int:
    """Un-park a loan: its parked event is tried again by the next dispatcher pass (exit 1 if none was parked)."""
    with open_store(settings(config, db)) as store:
        count = store.retry(loan_apply_no)
    if not count:
        click.echo(f"loan {loan_apply_no!r} has no parked event")
        return EXIT_FINDINGS
    click.echo(f"loan {loan_apply_no!r}: parked event will be retried")
    return 0


@outbox.command("skip", epilog="Example: loanstate outbox skip 3f0c...e1 --db sqlite:///loans.db")
@click.argument("request_id")
@_db_options
@debug_option
def outbox_skip(request_id: str, db: str | None, config: str | None) -> int:
    """Set a parked (or pending) event aside for good, so the loan's later events go on."""
    with open_store(settings(config, db)) as store:
        skipped = store.outbox.skip(request_id)
    for rid, loan_apply_no in skipped.items():
        click.echo(f"skipped {rid}: loan {loan_apply_no!r} (never sent; tell the platform another way if it must know)")
    return 0
