"""The operator's console: an ASGI web app over the store and its outbox, and Prometheus metrics.

Needs the ``console`` extra (``pip install 'loanstate[console]'``).
:func:`create_app` builds the app (serve it with ``loanstate console``, or
mount it in your own Starlette or FastAPI service); :mod:`loanstate.console.metrics`
holds the metrics and the dispatcher hooks that feed them.
"""

from __future__ import annotations

from loanstate.console._app import create_app
from loanstate.console.metrics import DispatchMetrics, MetricsServer, PauseRecorder, StoreCollector, serve_metrics

__all__ = ["DispatchMetrics", "MetricsServer", "PauseRecorder", "StoreCollector", "create_app", "serve_metrics"]
