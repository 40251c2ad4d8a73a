"""Prometheus metrics for the outbox and the dispatcher, and OpenTelemetry spans per delivery.

Two sources feed one exposition:

- :class:`StoreCollector` reads the store at every scrape:
  ``loanstate_outbox_events{state=...}``, ``loanstate_outbox_lag_seconds``,
  ``loanstate_parked_loans`` and, in the console, ``loanstate_dispatcher_paused``
  (1 when any worker has recorded a pause in the store);
- :class:`DispatchMetrics` counts what one dispatcher process does, through the
  dispatcher's hooks: ``loanstate_deliveries_total{outcome=...}``,
  ``loanstate_delivery_seconds`` (a histogram) and ``loanstate_dispatcher_paused``.

:func:`serve_metrics` serves both on a port (what ``loanstate deliver
--metrics-port`` runs); the console serves the store's at ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from threading import Thread
from typing import TYPE_CHECKING, Any, Final

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from loanstate.dispatch._recorder import PauseRecorder
from loanstate.store._inspect import STATES, gauges
from loanstate.store._pauses import read_pauses

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from loanstate.dispatch import Attempt, Pause
    from loanstate.store import SqlStore

__all__ = ["OUTCOMES", "DispatchMetrics", "MetricsServer", "PauseRecorder", "StoreCollector", "serve_metrics"]

_log = logging.getLogger("loanstate.console")

#: The outcomes an attempt can have (the labels of ``loanstate_deliveries_total``).
OUTCOMES: Final = ("delivered", "retry", "parked", "paused")

# From a loopback fake's milliseconds to a congested gateway's deadline (45 s).
_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 45.0, 60.0)


class StoreCollector(Collector):
    """Reads the outbox at each scrape; with ``pauses``, also whether any worker recorded a pause."""

    def __init__(self, store: SqlStore, *, pauses: bool = True) -> None:
        self._store = store
        self._pauses = pauses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._store.now()
        numbers = gauges(self._store.engine, now)
        events = GaugeMetricFamily("loanstate_outbox_events", "Outbox events in each state.", labels=["state"])
        for state in STATES:
            events.add_metric([state], numbers.counts[state])
        yield events
        yield GaugeMetricFamily(
            "loanstate_outbox_lag_seconds",
            "Seconds the oldest pending event has waited since it was recorded (0 when none is pending).",
            value=0.0 if numbers.lag is None else numbers.lag.total_seconds(),
        )
        yield GaugeMetricFamily(
            "loanstate_parked_loans", "Loans whose delivery is parked, waiting for an operator.", numbers.parked_loans
        )
        if self._pauses:
            yield GaugeMetricFamily(
                "loanstate_dispatcher_paused",
                "1 while a dispatcher has paused delivery on a systemic failure.",
                1.0 if read_pauses(self._store.engine) else 0.0,
            )


def _tracer() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("loanstate")


class DispatchMetrics:
    """A dispatcher's counters, with methods that fit its hooks.

    ``Dispatcher(store, notifier, on_attempt=m.on_attempt, on_paused=m.on_paused,
    on_resumed=m.on_resumed)``. Metrics go to ``registry`` (a fresh one by
    default, so two dispatchers in one process never collide). With
    ``recorder``, pauses are also persisted in the store. When opentelemetry-api
    is installed, each attempt also becomes a span ``loanstate.deliver`` with
    its request_id, loan_apply_no and outcome.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, recorder: PauseRecorder | None = None) -> None:
        self.registry: Final = registry if registry is not None else CollectorRegistry()
        self._recorder = recorder
        self._deliveries = Counter(
            "loanstate_deliveries", "Delivery attempts, by outcome.", ["outcome"], registry=self.registry
        )
        for outcome in OUTCOMES:
            self._deliveries.labels(outcome)
        self._seconds = Histogram(
            "loanstate_delivery_seconds", "Wall time of one delivery attempt.", buckets=_BUCKETS, registry=self.registry
        )
        self._paused = Gauge(
            "loanstate_dispatcher_paused",
            "1 while this dispatcher has paused delivery on a systemic failure.",
            registry=self.registry,
        )
        self._tracer = _tracer()

    def on_attempt(self, attempt: Attempt) -> None:
        """Count one attempt, time it, and trace it."""
        self._deliveries.labels(attempt.outcome).inc()
        self._seconds.observe(max(attempt.seconds, 0.0))
        if self._tracer is not None:
            end = time.time_ns()
            span = self._tracer.start_span("loanstate.deliver", start_time=end - int(attempt.seconds * 1e9))
            span.set_attribute("loanstate.request_id", attempt.request_id)
            span.set_attribute("loanstate.loan_apply_no", attempt.loan_apply_no)
            span.set_attribute("loanstate.outcome", attempt.outcome)
            if attempt.error is not None:
                span.set_attribute("loanstate.error", attempt.error[:500])
            span.end(end_time=end)

    def on_paused(self, pause: Pause) -> None:
        """Delivery paused: the gauge reads 1 (and the pause is recorded, with a recorder)."""
        self._paused.set(1)
        if self._recorder is not None:
            self._recorder.on_paused(pause)

    def on_resumed(self) -> None:
        """Delivery resumed: the gauge reads 0."""
        self._paused.set(0)
        if self._recorder is not None:
            self._recorder.on_resumed()


@attrs.frozen
class MetricsServer:
    """A running metrics endpoint: its address, and ``close()`` to stop it."""

    host: str
    port: int
    _server: WSGIServer = attrs.field(repr=False)
    _thread: Thread = attrs.field(repr=False)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    store: SqlStore, port: int, *, host: str = "127.0.0.1", metrics: DispatchMetrics | None = None
) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` in a background thread: the store's gauges and ``metrics``.

    Port 0 picks a free port (read it from the result). The dispatcher's own
    ``loanstate_dispatcher_paused`` comes from ``metrics``; without it, from the
    pauses recorded in the store.
    """
    registry = metrics.registry if metrics is not None else CollectorRegistry()
    registry.register(StoreCollector(store, pauses=metrics is None))
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host, int(server.server_address[1]), server, thread)
