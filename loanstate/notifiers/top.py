"""Delivering change events to Alibaba's open platform: :class:`TopNotifier` and :class:`AsyncTopNotifier`.

Each ``send`` encodes and signs one event (:func:`loanstate.top.build_request`),
POSTs it over a pooled httpx2 connection, and classifies the reply with the
one outcome table (:func:`loanstate.top.classify`): a
:class:`~loanstate.notifiers.Receipt`, or a
:class:`~loanstate.TransientDeliveryError` (a
:class:`~loanstate.SystemicDeliveryError` when every event would fail alike) /
:class:`~loanstate.PermanentDeliveryError` carrying ``request_id``,
``trace_id`` and the gateway's codes. A retry of the same event carries the
same ``request_id``. HTTPS is required except for loopback addresses; no
redirect is followed; a whole send ends within ``deadline`` seconds; replies
are capped (:data:`~loanstate.top.MAX_REPLY_BYTES`, raw and inflated). The
app secret is a :class:`~loanstate.top.Secret`, and neither it nor a
signature appears in a repr, a log record or an exception.

Both notifiers run on ``httpx2`` and share one :class:`TopSettings` and every
decision (``loanstate.notifiers._top_common``); they differ in ``await``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2

from loanstate._errors import DeliveryError, InvalidConfiguration
from loanstate._events import LoanChangeEvent
from loanstate.notifiers._base import BaseAsyncNotifier, BaseNotifier, Receipt
from loanstate.notifiers._deadline import deadline, install_client
from loanstate.notifiers._top_common import TopNotifierCommon, failure, headers, interpret, prepare, read_capped, target
from loanstate.notifiers._top_common import too_large as _too_large
from loanstate.notifiers._top_settings import (
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    PRODUCTION_URL,
    TopSettings,
    tls_context,
    tls_settings_error,
)
from loanstate.top import DEFAULT_POLICY, MAX_REPLY_BYTES, OutcomePolicy

__all__ = ["DEFAULT_DEADLINE", "DEFAULT_TIMEOUT", "PRODUCTION_URL", "AsyncTopNotifier", "TopNotifier", "TopSettings"]

# What a send catches: the client's errors, a passed deadline, a reply past the cap.
_FAILURES = (httpx2.HTTPError, TimeoutError, DeliveryError)


def _client_options(settings: TopSettings) -> dict[str, Any]:
    try:
        # A CA path and a client certificate are loaded into a context here:
        # httpx2 deprecates its string forms (a warning) and refuses the two together.
        tls = tls_context(settings.verify, settings.cert)
    except OSError as exc:  # includes ssl.SSLError: a CA bundle or certificate that does not load
        raise tls_settings_error(settings.verify, settings.cert, exc) from None
    return {
        "timeout": settings.timeout,
        "proxy": settings.proxy,
        "verify": tls,
        "limits": settings.limits,
        "trust_env": settings.trust_env,
        "follow_redirects": False,
    }


class TopNotifier(TopNotifierCommon, BaseNotifier):
    """Sends change events to the open platform over HTTPS, synchronously, on ``httpx2``.

    ``app_key``/``app_secret``: the app's credentials (the secret, text or a
    :class:`~loanstate.top.Secret`, is kept masked). ``url``: the gateway
    (HTTPS, or HTTP to a loopback address such as a
    :class:`~loanstate.fake.FakeTopGateway`). ``sign_method``: ``hmac-sha256``
    (default), ``hmac`` or ``md5``. ``timeout``: seconds for every step or an
    ``httpx2.Timeout`` (default as the Java SDK: 15 s to connect, 30 s to read).
    ``deadline``: seconds one whole ``send()`` may take (default 45).
    ``clock``: gives the request ``timestamp`` and receipts' ``delivered_at``.
    ``format``/``simplify``: the reply shape asked for. ``policy``: which
    business codes are retryable or mean "already done".
    ``session``/``target_app_key``/``partner``: optional system parameters.
    ``proxy``, ``verify`` (CA bundle path, SSL context or bool), ``cert``,
    ``limits``, ``trust_env`` go to ``httpx2.Client``, or pass your own
    ``client`` (then it is not closed here, and the deadline is checked between
    reads only). Every setting is checked here (``InvalidConfiguration``).
    Thread-safe; the pool reuses connections.
    """

    def __init__(
        self,
        app_key: str,
        app_secret: Any,
        *,
        url: str,
        sign_method: str = "hmac-sha256",
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        clock: Any = None,
        format: str = "json",
        simplify: bool = False,
        policy: OutcomePolicy | None = None,
        session: str | None = None,
        target_app_key: str | None = None,
        partner: str | None = None,
        proxy: str | httpx2.Proxy | None = None,
        verify: Any = True,
        cert: str | tuple[str, str] | None = None,
        limits: httpx2.Limits | None = None,
        trust_env: bool = True,
        client: httpx2.Client | None = None,
    ) -> None:
        settings = TopSettings(
            app_key=app_key,
            app_secret=app_secret,
            url=url,
            sign_method=sign_method,
            timeout=timeout,
            deadline=deadline,
            clock=clock,
            format=format,
            simplify=simplify,
            policy=DEFAULT_POLICY if policy is None else policy,
            session=session,
            target_app_key=target_app_key,
            partner=partner,
            proxy=proxy,
            verify=verify,
            cert=cert,
            limits=limits,
            trust_env=trust_env,
        )
        self.__init_from(settings, client)

    @classmethod
    def from_settings(cls, settings: TopSettings, *, client: httpx2.Client | None = None) -> TopNotifier:
        """A notifier with these settings (and your own ``client``, if given)."""
        notifier = cls.__new__(cls)
        notifier.__init_from(settings, client)
        return notifier

    def __init_from(self, settings: TopSettings, client: httpx2.Client | None) -> None:
        if not isinstance(settings, TopSettings):
            raise InvalidConfiguration("settings", settings, "expected a TopSettings")
        if client is not None and not isinstance(client, httpx2.Client):
            raise InvalidConfiguration("client", client, "expected an httpx2.Client or None")
        self.settings = settings
        self._owns_client = client is None
        self._client = client if client is not None else httpx2.Client(**_client_options(settings))
        if self._owns_client:
            install_client(self._client)
        self._timeout = settings.request_timeout()
        self._headers = headers(settings)

    def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError`` (see the outcome table)."""
        settings = self.settings
        request = prepare(settings, event)
        end = time.monotonic() + settings.deadline
        # The error is raised after the except clause, so it has no __context__:
        # the client's exception holds the request, whose URL carries the signature.
        error: DeliveryError | None = None
        try:
            with (
                deadline(settings.deadline),
                self._client.stream(
                    "POST",
                    target(settings, request),
                    content=request.body(),
                    headers=self._headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                ) as response,
            ):
                raw = bytearray()
                for chunk in response.iter_raw():
                    raw += chunk
                    if len(raw) > MAX_REPLY_BYTES:
                        raise _too_large()
                    if time.monotonic() > end:
                        raise TimeoutError("the send's deadline has passed")
                reply = read_capped(bytes(raw), response)
        except _FAILURES as exc:
            error = failure(settings, event, exc)
        if error is not None:
            raise error
        return interpret(settings, event, reply)

    def close(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            self._client.close()


class AsyncTopNotifier(TopNotifierCommon, BaseAsyncNotifier):
    """The asyncio twin of :class:`TopNotifier`: same settings, same outcomes, ``await send(event)``.

    On ``httpx2.AsyncClient``; ``client`` is your own ``httpx2.AsyncClient``
    (then not closed here). ``asyncio.timeout`` bounds a whole send to
    ``deadline``. Use one notifier within one event loop.
    """

    def __init__(
        self,
        app_key: str,
        app_secret: Any,
        *,
        url: str,
        sign_method: str = "hmac-sha256",
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        clock: Any = None,
        format: str = "json",
        simplify: bool = False,
        policy: OutcomePolicy | None = None,
        session: str | None = None,
        target_app_key: str | None = None,
        partner: str | None = None,
        proxy: str | httpx2.Proxy | None = None,
        verify: Any = True,
        cert: str | tuple[str, str] | None = None,
        limits: httpx2.Limits | None = None,
        trust_env: bool = True,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        settings = TopSettings(
            app_key=app_key,
            app_secret=app_secret,
            url=url,
            sign_method=sign_method,
            timeout=timeout,
            deadline=deadline,
            clock=clock,
            format=format,
            simplify=simplify,
            policy=DEFAULT_POLICY if policy is None else policy,
            session=session,
            target_app_key=target_app_key,
            partner=partner,
            proxy=proxy,
            verify=verify,
            cert=cert,
            limits=limits,
            trust_env=trust_env,
        )
        self.__init_from(settings, client)

    @classmethod
    def from_settings(cls, settings: TopSettings, *, client: httpx2.AsyncClient | None = None) -> AsyncTopNotifier:
        """A notifier with these settings (and your own ``client``, if given)."""
        notifier = cls.__new__(cls)
        notifier.__init_from(settings, client)
        return notifier

    def __init_from(self, settings: TopSettings, client: httpx2.AsyncClient | None) -> None:
        if not isinstance(settings, TopSettings):
            raise InvalidConfiguration("settings", settings, "expected a TopSettings")
        if client is not None and not isinstance(client, httpx2.AsyncClient):
            raise InvalidConfiguration("client", client, "expected an httpx2.AsyncClient or None")
        self.settings = settings
        self._owns_client = client is None
        self._client = client if client is not None else httpx2.AsyncClient(**_client_options(settings))
        self._timeout = settings.request_timeout()
        self._headers = headers(settings)

    async def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError`` (see the outcome table)."""
        settings = self.settings
        request = prepare(settings, event)
        # Raised after the except clause, so without a __context__ that holds the signed request.
        error: DeliveryError | None = None
        try:
            async with (
                asyncio.timeout(settings.deadline),
                self._client.stream(
                    "POST",
                    target(settings, request),
                    content=request.body(),
                    headers=self._headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                ) as response,
            ):
                raw = bytearray()
                async for chunk in response.aiter_raw():
                    raw += chunk
                    if len(raw) > MAX_REPLY_BYTES:
                        raise _too_large()
                reply = read_capped(bytes(raw), response)
        except _FAILURES as exc:
            error = failure(settings, event, exc)
        if error is not None:
            raise error
        return interpret(settings, event, reply)

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            await self._client.aclose()
