"""Delivering change events to Alibaba's open platform: :class:`TopNotifier` and :class:`AsyncTopNotifier`.

Each ``send`` encodes and signs one event (:func:`loanstate.top.build_request`),
POSTs it over a pooled ``httpx2`` connection with explicit timeouts, and
classifies the reply with the one outcome table (:func:`loanstate.top.classify`):
a :class:`~loanstate.notifiers.Receipt`, or a
:class:`~loanstate.TransientDeliveryError` / :class:`~loanstate.PermanentDeliveryError`
carrying ``request_id``, ``trace_id`` and the gateway's codes. A retry of the
same event carries the same ``request_id`` (it is the event's own). HTTPS is
required except for loopback addresses. The app secret and the signatures
never appear in a repr, a log record, an exception or a URL.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import httpx2

from loanstate._errors import DeliveryError, InvalidConfiguration, PermanentDeliveryError, TransientDeliveryError
from loanstate._events import LoanChangeEvent
from loanstate.notifiers._base import BaseAsyncNotifier, BaseNotifier, Receipt
from loanstate.top import (
    CONTENT_TYPE,
    DEFAULT_POLICY,
    FORMATS,
    SIGN_METHODS,
    OutcomePolicy,
    TopRequest,
    build_request,
    classify,
    partner_id,
    transport_failure,
)

__all__ = ["DEFAULT_TIMEOUT", "PRODUCTION_URL", "AsyncTopNotifier", "TopNotifier"]

#: The platform's production gateway.
PRODUCTION_URL: Final = "https://gw.api.taobao.com/router/rest"
#: Seconds: 5 to connect, 10 for the whole answer.
DEFAULT_TIMEOUT: Final = httpx2.Timeout(10.0, connect=5.0)

_log = logging.getLogger("loanstate.notifiers.top")

Clock = Callable[[], datetime]
TimeoutSetting = float | httpx2.Timeout
VerifySetting = ssl.SSLContext | str | bool


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConfiguration("url", url, "expected an http(s) URL such as " + PRODUCTION_URL)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise InvalidConfiguration("url", url, "HTTPS is required except for loopback addresses")
    if parts.query or parts.fragment:
        raise InvalidConfiguration("url", url, "must not carry a query string or fragment")
    return url


class _TopProtocol:
    """Configuration, request preparation and reply interpretation shared by both twins."""

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        url: str,
        sign_method: str,
        clock: Clock | None,
        format: str,
        simplify: bool,
        policy: OutcomePolicy,
        session: str | None,
        target_app_key: str | None,
        partner: str | None,
    ) -> None:
        if not app_key.strip():
            raise InvalidConfiguration("app_key", app_key, "must not be blank")
        if not app_secret.strip():
            # The value of a secret is never echoed, not even a wrong one.
            raise InvalidConfiguration("app_secret", "<hidden>", "must not be blank")
        if sign_method not in SIGN_METHODS:
            raise InvalidConfiguration("sign_method", sign_method, f"expected one of {', '.join(sorted(SIGN_METHODS))}")
        if format not in FORMATS:
            raise InvalidConfiguration("format", format, "expected 'json' or 'xml'")
        self.app_key = app_key
        self._app_secret = app_secret
        self.url = _check_url(url)
        self.sign_method = sign_method
        self.format = format
        self.simplify = simplify
        self.policy = policy
        self._clock: Clock = clock or _utc_now
        self._session = session
        self._target_app_key = target_app_key
        self._partner = partner
        self.headers = {"Content-Type": CONTENT_TYPE, "User-Agent": partner or partner_id()}

    def prepare(self, event: LoanChangeEvent) -> TopRequest:
        """Encode and sign ``event`` now (the clock gives the timestamp)."""
        return build_request(
            event,
            app_key=self.app_key,
            app_secret=self._app_secret,
            now=self._clock(),
            sign_method=self.sign_method,
            format=self.format,
            simplify=self.simplify,
            session=self._session,
            target_app_key=self._target_app_key,
            partner=self._partner,
        )

    def target(self, request: TopRequest) -> str:
        return f"{self.url}?{request.query_string()}"

    def interpret(self, event: LoanChangeEvent, response: httpx2.Response) -> Receipt:
        outcome = classify(
            response.status_code,
            response.content,
            content_type=response.headers.get("content-type"),
            retry_after=response.headers.get("retry-after"),
            policy=self.policy,
        )
        if outcome.ok:
            _log.debug(
                "delivered request_id=%s loan_apply_no=%s trace_id=%s%s",
                event.request_id,
                event.loan_apply_no,
                outcome.trace_id,
                " (already done)" if outcome.already_done else "",
            )
            return outcome.receipt(event.request_id, self._clock())
        error = outcome.error(event.request_id)
        self._log_failure(event, error)
        raise error

    def failed(self, event: LoanChangeEvent, exc: httpx2.HTTPError) -> DeliveryError:
        """The delivery error for a request that got no HTTP answer."""
        # Only the exception's type and text are kept: its request object holds
        # the signed body, so it is not chained as the cause.
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, httpx2.TimeoutException):
            error = transport_failure(f"no answer from the gateway in time ({what})").error(event.request_id)
        elif isinstance(exc, httpx2.UnsupportedProtocol):
            error = PermanentDeliveryError(f"cannot reach the gateway ({what})", request_id=event.request_id)
        else:
            error = transport_failure(f"connection to the gateway failed ({what})").error(event.request_id)
        self._log_failure(event, error)
        return error

    @staticmethod
    def _log_failure(event: LoanChangeEvent, error: DeliveryError) -> None:
        kind = "transient" if isinstance(error, TransientDeliveryError) else "permanent"
        _log.debug(
            "%s failure request_id=%s loan_apply_no=%s: %s",
            kind,
            event.request_id,
            event.loan_apply_no,
            error.message,
        )

    def describe(self, cls: str) -> str:
        return f"{cls}(app_key={self.app_key!r}, url={self.url!r}, sign_method={self.sign_method!r})"


class TopNotifier(BaseNotifier):
    """Sends change events to the open platform over HTTPS, synchronously.

    ``app_key``/``app_secret``: the app's credentials (the secret is kept
    private: it is in no repr, log or error). ``url``: the gateway (HTTPS, or
    HTTP to a loopback address such as a :class:`~loanstate.testing.FakeTopGateway`).
    ``sign_method``: ``hmac-sha256`` (default), ``hmac`` or ``md5``.
    ``timeout``: seconds or an ``httpx2.Timeout`` (default 5 s to connect, 10 s
    in all). ``clock``: gives the request ``timestamp`` and receipts'
    ``delivered_at``. ``format``/``simplify``: the reply shape asked for (all
    are understood). ``policy``: which business codes are retryable or mean
    "already done". ``proxy``, ``verify`` (CA bundle path, SSL context or
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
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
        format: str = "json",
        simplify: bool = False,
        policy: OutcomePolicy = DEFAULT_POLICY,
        session: str | None = None,
        target_app_key: str | None = None,
        partner: str | None = None,
        proxy: str | httpx2.Proxy | None = None,
        verify: VerifySetting = True,
        cert: str | tuple[str, str] | None = None,
        limits: httpx2.Limits | None = None,
        trust_env: bool = True,
        client: httpx2.Client | None = None,
    ) -> None:
        self._protocol = _TopProtocol(
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
        self._owns_client = client is None
        self._client = client or httpx2.Client(
            timeout=timeout,
            proxy=proxy,
            verify=verify,
            cert=cert,
            limits=limits or httpx2.Limits(max_connections=100, max_keepalive_connections=100),
            trust_env=trust_env,
        )
        self._timeout = timeout

    @property
    def url(self) -> str:
        """The gateway endpoint."""
        return self._protocol.url

    @property
    def app_key(self) -> str:
        """The app key requests are signed for."""
        return self._protocol.app_key

    def prepare(self, event: LoanChangeEvent) -> TopRequest:
        """The signed request ``send`` would POST now (for inspection; the signature is not in its repr)."""
        return self._protocol.prepare(event)

    def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError`` (see the outcome table)."""
        protocol = self._protocol
        request = protocol.prepare(event)
        try:
            response = self._client.post(
                protocol.target(request),
                content=request.body(),
                headers=protocol.headers,
                timeout=self._timeout,
            )
        except httpx2.HTTPError as exc:
            raise protocol.failed(event, exc) from None
        return protocol.interpret(event, response)

    def close(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return self._protocol.describe(type(self).__name__)


class AsyncTopNotifier(BaseAsyncNotifier):
    """The asyncio twin of :class:`TopNotifier`: same settings, ``await send(event)``, ``aclose()``."""

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        url: str,
        sign_method: str = "hmac-sha256",
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
        format: str = "json",
        simplify: bool = False,
        policy: OutcomePolicy = DEFAULT_POLICY,
        session: str | None = None,
        target_app_key: str | None = None,
        partner: str | None = None,
        proxy: str | httpx2.Proxy | None = None,
        verify: VerifySetting = True,
        cert: str | tuple[str, str] | None = None,
        limits: httpx2.Limits | None = None,
        trust_env: bool = True,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        self._protocol = _TopProtocol(
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
        self._owns_client = client is None
        self._client = client or httpx2.AsyncClient(
            timeout=timeout,
            proxy=proxy,
            verify=verify,
            cert=cert,
            limits=limits or httpx2.Limits(max_connections=100, max_keepalive_connections=100),
            trust_env=trust_env,
        )
        self._timeout = timeout

    @property
    def url(self) -> str:
        """The gateway endpoint."""
        return self._protocol.url

    @property
    def app_key(self) -> str:
        """The app key requests are signed for."""
        return self._protocol.app_key

    def prepare(self, event: LoanChangeEvent) -> TopRequest:
        """The signed request ``send`` would POST now (for inspection; the signature is not in its repr)."""
        return self._protocol.prepare(event)

    async def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError`` (see the outcome table)."""
        protocol = self._protocol
        request = protocol.prepare(event)
        try:
            response = await self._client.post(
                protocol.target(request),
                content=request.body(),
                headers=protocol.headers,
                timeout=self._timeout,
            )
        except httpx2.HTTPError as exc:
            raise protocol.failed(event, exc) from None
        return protocol.interpret(event, response)

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            await self._client.aclose()

    def __repr__(self) -> str:
        return self._protocol.describe(type(self).__name__)
