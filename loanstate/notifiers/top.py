"""Delivering change events to Alibaba's open platform: :class:`TopNotifier` and :class:`AsyncTopNotifier`.

Each ``send`` encodes and signs one event (:func:`loanstate.top.build_request`),
POSTs it over a pooled connection with explicit timeouts, and classifies the
reply with the one outcome table (:func:`loanstate.top.classify`): a
:class:`~loanstate.notifiers.Receipt`, or a
:class:`~loanstate.TransientDeliveryError` / :class:`~loanstate.PermanentDeliveryError`
carrying ``request_id``, ``trace_id`` and the gateway's codes. A retry of the
same event carries the same ``request_id`` (it is the event's own). HTTPS is
required except for loopback addresses. The app secret and the signatures
never appear in a repr, a log record, an exception or a URL.

:class:`TopNotifier` runs on ``httpx2``; :class:`AsyncTopNotifier` on aiohttp's
client, which costs far less CPU per request under asyncio (see its module).
"""

from __future__ import annotations

import ssl
from typing import Final

import httpx2

from loanstate._errors import DeliveryError, InvalidConfiguration, PermanentDeliveryError
from loanstate._events import LoanChangeEvent
from loanstate.notifiers._base import BaseNotifier, Receipt
from loanstate.notifiers._top_aiohttp import DEFAULT_ASYNC_TIMEOUT, AsyncTopNotifier
from loanstate.notifiers._top_common import (
    PRODUCTION_URL,
    Clock,
    TopNotifierCommon,
    TopProtocol,
    log_failure,
    no_answer,
    tls_context,
    tls_settings_error,
)
from loanstate.top import DEFAULT_POLICY, OutcomePolicy

__all__ = ["DEFAULT_ASYNC_TIMEOUT", "DEFAULT_TIMEOUT", "PRODUCTION_URL", "AsyncTopNotifier", "TopNotifier"]

#: Seconds: 5 to connect, 10 for each other step (pool wait, each write and read).
DEFAULT_TIMEOUT: Final = httpx2.Timeout(10.0, connect=5.0)


class TopNotifier(TopNotifierCommon, BaseNotifier):
    """Sends change events to the open platform over HTTPS, synchronously, on ``httpx2``.

    ``app_key``/``app_secret``: the app's credentials (the secret is kept
    private: it is in no repr, log or error). ``url``: the gateway (HTTPS, or
    HTTP to a loopback address such as a :class:`~loanstate.fake.FakeTopGateway`).
    ``sign_method``: ``hmac-sha256`` (default), ``hmac`` or ``md5``.
    ``timeout``: seconds or an ``httpx2.Timeout`` (default 5 s to connect, 10 s
    for each other step). ``clock``: gives the request ``timestamp`` and
    receipts' ``delivered_at``. ``format``/``simplify``: the reply shape asked
    for (all are understood). ``policy``: which business codes are retryable or
    mean "already done". ``session``/``target_app_key``/``partner``: optional
    system parameters. ``proxy``, ``verify`` (CA bundle path, SSL context or
    bool), ``cert``, ``limits``, ``trust_env`` go to ``httpx2.Client``, or pass
    your own ``client`` (then it is not closed here). Thread-safe; the pool
    reuses connections.
    """

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        url: str,
        sign_method: str = "hmac-sha256",
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
        format: str = "json",
        simplify: bool = False,
        policy: OutcomePolicy = DEFAULT_POLICY,
        session: str | None = None,
        target_app_key: str | None = None,
        partner: str | None = None,
        proxy: str | httpx2.Proxy | None = None,
        verify: ssl.SSLContext | str | bool = True,
        cert: str | tuple[str, str] | None = None,
        limits: httpx2.Limits | None = None,
        trust_env: bool = True,
        client: httpx2.Client | None = None,
    ) -> None:
        self._protocol = TopProtocol(
            app_key,
            app_secret,
            url=url,
            sign_method=sign_method,
            clock=clock,
            format=format,
            simplify=simplify,
            policy=policy,
            session=session,
            target_app_key=target_app_key,
            partner=partner,
        )
        if not isinstance(timeout, httpx2.Timeout) and not (isinstance(timeout, int | float) and timeout > 0):
            raise InvalidConfiguration("timeout", timeout, "must be a positive number of seconds or an httpx2.Timeout")
        self._owns_client = client is None
        try:
            # A CA path and a client certificate are loaded into a context here:
            # httpx2 deprecates its string forms (a warning) and refuses the two together.
            if verify is True and cert is not None:
                verify = httpx2.create_ssl_context(trust_env=trust_env)  # httpx2's own trust store, as without cert
            tls = tls_context(verify, cert) if client is None else verify
            self._client = client or httpx2.Client(
                timeout=timeout,
                proxy=proxy,
                verify=tls,
                limits=limits or httpx2.Limits(max_connections=100, max_keepalive_connections=100),
                trust_env=trust_env,
            )
        except OSError as exc:  # includes ssl.SSLError: a CA bundle or certificate that does not load
            raise tls_settings_error(verify, cert, exc) from None
        self._timeout = timeout

    def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError`` (see the outcome table)."""
        protocol = self._protocol
        request = protocol.prepare(event)
        # The error is raised after the except clause, so it has no __context__:
        # the client's exception holds the request, whose body carries the signature.
        failure: DeliveryError | None = None
        try:
            response = self._client.post(
                protocol.target(request),
                content=request.body(),
                headers=protocol.headers,
                timeout=self._timeout,
            )
        except httpx2.TimeoutException as exc:
            failure = no_answer(event, exc, timed_out=True)
        except httpx2.UnsupportedProtocol as exc:
            failure = PermanentDeliveryError(f"cannot reach the gateway ({exc})", request_id=event.request_id)
            log_failure(event, failure)
        except httpx2.HTTPError as exc:
            failure = no_answer(event, exc, timed_out=False)
        if failure is not None:
            raise failure
        return protocol.interpret(
            event,
            response.status_code,
            response.content,
            content_type=response.headers.get("content-type"),
            retry_after=response.headers.get("retry-after"),
        )

    def close(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            self._client.close()
