"""``loanstate deliver``: the dispatcher as a service, logging one line per failed attempt."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click

from loanstate.cli._common import EXIT_FINDINGS, InputError, debug_option, json_text, printable
from loanstate.cli._settings import PRODUCTION_URL, db_options, open_store, require, settings

if TYPE_CHECKING:
    from loanstate.console.metrics import DispatchMetrics
    from loanstate.dispatch import Attempt, DispatchReport
    from loanstate.notifiers.top import TopNotifier
    from loanstate.store import SqlStore

__all__ = ["deliver"]

log: Final = logging.getLogger("loanstate.deliver")

# What an attempt's outcome means to an operator, and how loudly it is logged.
_FAILED: Final = {
    "retry": ("rescheduled", logging.WARNING),
    "parked": ("parked", logging.ERROR),
    # The dispatcher logs the pause itself, once, with its cause and remedy.
    "paused": ("not charged: delivery paused", logging.INFO),
}
# Fields a log record may carry for a log shipper (set through ``extra``).
_FIELDS: Final = ("loan_apply_no", "request_id", "outcome", "error", "seconds", "cause", "remedy")


class _TextFormatter(logging.Formatter):
    """One line per record; whatever came from input (loan numbers, errors) shown without control characters."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), keep_newlines=True)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, logger, message and the attempt's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            if hasattr(record, field):
                out[field] = getattr(record, field)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json_text(out)


def _configure_logging(log_format: str) -> None:
    """Log to stderr, as text or JSON lines, without the libraries' per-request and per-retry noise."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # A no-op when the host already configured logging (an embedding process, a test runner).
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # The HTTP clients log every request at INFO: at hundreds of events a second that
    # drowns the dispatcher's own lines. Their warnings still show.
    for noisy in ("httpx2", "httpcore2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # stamina logs each in-process retry as a bare "stamina.retry_scheduled" naming no
    # loan: the attempt lines below say it with the loan, request_id and error instead.
    logging.getLogger("stamina").setLevel(logging.ERROR)


def log_attempt(attempt: Attempt) -> None:
    """The dispatcher's ``on_attempt`` hook: one log line per failed attempt, naming loan, request_id and error."""
    said = _FAILED.get(attempt.outcome)
    if said is None:  # delivered: counted in the report, not logged one by one
        return
    what, level = said
    log.log(
        level,
        "attempt failed (%s): loan %s request_id %s after %.2f s: %s",
        what,
        attempt.loan_apply_no,
        attempt.request_id,
        attempt.seconds,
        attempt.error,
        extra={
            "loan_apply_no": attempt.loan_apply_no,
            "request_id": attempt.request_id,
            "outcome": attempt.outcome,
            "error": attempt.error,
            "seconds": round(attempt.seconds, 3),
        },
    )


def report_dict(report: DispatchReport) -> dict[str, Any]:
    """The report as JSON-ready data (``paused`` is ``null`` unless delivery ended paused)."""
    paused = report.paused
    return {
        "delivered": report.delivered,
        "rescheduled": report.retried,
        "parked": report.parked,
        "pending": report.pending,
        "lag_seconds": report.lag.total_seconds() if report.lag is not None else None,
        "elapsed": round(report.elapsed, 3),
        "paused": None
        if paused is None
        else {
            "cause": paused.cause,
            "remedy": paused.remedy,
            "message": paused.message,
            "since": paused.since.isoformat(),
        },
    }


def report_lines(report: DispatchReport) -> list[str]:
    """The report for a person: the counts, then one line naming a pause's cause and remedy."""
    lag = f"{report.lag.total_seconds():.0f} s" if report.lag is not None else "none"
    counts = (
        f"delivered {report.delivered}, rescheduled {report.retried}, parked {report.parked}, "
        f"pending {report.pending} (oldest waits {lag}) in {report.elapsed:.1f} s"
    )
    lines = [counts]
    if report.paused is not None:
        p = report.paused
        lines.append(printable(f"delivery paused ({p.cause}) since {p.since:%Y-%m-%d %H:%M:%S}: {p.remedy}"))
    return lines


@click.command(
    epilog=(
        "Example: LOANSTATE_APP_KEY=... LOANSTATE_APP_SECRET=... LOANSTATE_DB_PASSWORD=... "
        "loanstate deliver --db postgresql+psycopg://servicing@db/loans"
    )
)
@db_options
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 1024))
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300.0),
    help="HTTP seconds per read (default: the official SDKs' 15 s to connect, 30 s to read).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on 127.0.0.1:PORT (needs the console extra).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help="The final report."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="The log on stderr: text lines, or one JSON object per line for log shippers.",
)
@debug_option
def deliver(  # noqa: PLR0917 - click passes every option by name anyway
    db: str | None,
    config: str | None,
    once: bool,
    concurrency: int,
    timeout: float | None,
    metrics_port: int | None,
    fmt: str,
    log_format: str,
) -> int:
    """Run the dispatcher: deliver the store's outbox to Alibaba's open platform.

    Credentials come from LOANSTATE_APP_KEY, LOANSTATE_APP_SECRET (and
    LOANSTATE_DB_PASSWORD) or a config file only its owner can read; never
    from the command line. SIGTERM or Ctrl-C stops it gracefully. Each failed
    attempt is one log line naming the loan, the request_id and the error.
    Exit 1 when a loan was parked or delivery ended paused.
    """
    from loanstate.dispatch import Dispatcher

    _configure_logging(log_format)
    s = settings(config, db)
    require(
        {"LOANSTATE_APP_KEY": s.app_key, "LOANSTATE_APP_SECRET": s.app_secret},
        "set them in the environment, or as [top] app_key / app_secret in a config file (--config)",
    )
    assert s.app_key is not None
    assert s.app_secret is not None
    top_url = s.top_url or PRODUCTION_URL
    with (
        open_store(s) as store,
        _notifier(s.app_key, s.app_secret, top_url, timeout) as notifier,
        _metrics(store, metrics_port) as metrics,
    ):
        dispatcher = Dispatcher(
            store,
            notifier,
            concurrency=concurrency,
            on_attempt=_attempt_hooks(log_attempt, metrics),
            on_paused=None if metrics is None else metrics.on_paused,
            on_resumed=None if metrics is None else metrics.on_resumed,
        )
        where = printable(store.engine.url.render_as_string(hide_password=True))
        log.info("delivering %s -> %s as %s", where, top_url, dispatcher.worker_id)
        report = dispatcher.run_once() if once else dispatcher.run_forever()
    if fmt == "json":
        click.echo(json_text(report_dict(report), indent=2))
    else:
        for line in report_lines(report):
            click.echo(line)
    return EXIT_FINDINGS if report.parked or report.paused is not None else 0


def _notifier(app_key: str, app_secret: str, url: str, timeout: float | None) -> TopNotifier:
    """The TOP notifier; ``--timeout`` replaces the official SDKs' defaults only when given."""
    from loanstate.notifiers.top import TopNotifier

    if timeout is None:
        return TopNotifier(app_key, app_secret, url=url)
    return TopNotifier(app_key, app_secret, url=url, timeout=timeout)


@contextmanager
def _metrics(store: SqlStore, port: int | None) -> Iterator[DispatchMetrics | None]:
    """With ``--metrics-port``: the dispatcher's counters, served with the store's gauges on loopback."""
    if port is None:
        yield None
        return
    try:
        from loanstate.console.metrics import DispatchMetrics, serve_metrics
    except ModuleNotFoundError as missing:
        raise InputError(
            f"--metrics-port needs the console extra ({missing.name} is missing): pip install 'loanstate[console]'"
        ) from None
    metrics = DispatchMetrics()
    try:
        server = serve_metrics(store, port, metrics=metrics)
    except OSError as exc:
        raise InputError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    log.info("metrics on http://%s:%d/metrics", server.host, server.port)
    try:
        yield metrics
    finally:
        server.close()


def _attempt_hooks(log_line: Callable[[Attempt], None], metrics: DispatchMetrics | None) -> Callable[[Attempt], None]:
    """The log line for each failed attempt and, with metrics, the counters."""
    if metrics is None:
        return log_line

    def both(attempt: Attempt) -> None:
        log_line(attempt)
        metrics.on_attempt(attempt)

    return both
