"""The asyncio TOP notifier, on aiohttp's client.

Measured on this project's machine with the AsyncDispatcher (concurrency 32,
a loopback gateway answering in 20 ms): httpx2's async client spent about
1.3-1.6 ms of CPU per delivered event and capped throughput at roughly a third
of what aiohttp's client reached with 0.55-0.6 ms; the client's CPU was what
held the dispatcher back, so this twin uses aiohttp (already a dependency, for
the fake gateway) while the sync :class:`~loanstate.TopNotifier` stays on httpx2.
"""

from __future__ import annotations

import ssl
from typing import Final, Self
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from yarl import URL

from loanstate._errors import DeliveryError, InvalidConfiguration
from loanstate._events import LoanChangeEvent
from loanstate.notifiers._base import BaseAsyncNotifier, Receipt
from loanstate.notifiers._top_common import (
    Clock,
    TopNotifierCommon,
    TopProtocol,
    no_answer,
    tls_context,
    tls_settings_error,
)
from loanstate.top import DEFAULT_POLICY, OutcomePolicy

__all__ = ["DEFAULT_ASYNC_TIMEOUT", "AsyncTopNotifier"]

#: 5 s to connect, 10 s to wait for a free connection or between bytes of the answer.
DEFAULT_ASYNC_TIMEOUT: Final = aiohttp.ClientTimeout(total=None, connect=10.0, sock_connect=5.0, sock_read=10.0)


def _timeout(value: float | aiohttp.ClientTimeout) -> aiohttp.ClientTimeout:
    if isinstance(value, aiohttp.ClientTimeout):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidConfiguration("timeout", value, "must be a positive number of seconds")
    # As for httpx2: one number bounds each step (pool wait, connect, each read).
    return aiohttp.ClientTimeout(total=None, connect=value, sock_connect=value, sock_read=value)


def _env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) names for ``url``, read once."""
    # aiohttp's own trust_env looks this up on every request, in a worker
    # thread; the GIL hand-offs that costs doubled the CPU per delivery.
    parts = urlsplit(url)
    if parts.hostname is None or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


class AsyncTopNotifier(TopNotifierCommon, BaseAsyncNotifier):
    """The asyncio twin of :class:`~loanstate.TopNotifier`: same protocol, same outcomes, ``await send(event)``.

    Settings as for :class:`~loanstate.TopNotifier`, with aiohttp's client
    underneath: ``timeout`` is seconds (each of pool wait, connect and every
    read) or an ``aiohttp.ClientTimeout``; ``proxy`` an HTTP proxy URL;
    ``verify`` a CA bundle path, an ``ssl.SSLContext`` or a bool; ``cert`` a
    client certificate file or ``(certfile, keyfile)``; ``max_connections``
    bounds the pool; ``trust_env`` takes the proxy from the environment
    (``HTTPS_PROXY``, ``NO_PROXY``, ...; read once, here) when ``proxy`` is not given.
    Or pass your own ``client`` (an ``aiohttp.ClientSession``; it is then not
    closed here). Use one notifier within one event loop; the session opens on
    first use.
    """

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        url: str,
        sign_method: str = "hmac-sha256",
        timeout: float | aiohttp.ClientTimeout = DEFAULT_ASYNC_TIMEOUT,
        clock: Clock | None = None,
        format: str = "json",
        simplify: bool = False,
        policy: OutcomePolicy = DEFAULT_POLICY,
        session: str | None = None,
        target_app_key: str | None = None,
        partner: str | None = None,
        proxy: str | None = None,
        verify: ssl.SSLContext | str | bool = True,
        cert: str | tuple[str, str] | None = None,
        max_connections: int = 100,
        trust_env: bool = True,
        client: aiohttp.ClientSession | None = None,
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
        if max_connections < 1:
            raise InvalidConfiguration("max_connections", max_connections, "must be at least 1")
        self._timeout = _timeout(timeout)
        try:
            self._ssl = tls_context(verify, cert)
        except OSError as exc:  # includes ssl.SSLError: a CA bundle or certificate that does not load
            raise tls_settings_error(verify, cert, exc) from None
        self._proxy = proxy if proxy is not None or not trust_env else _env_proxy(self._protocol.url)
        self._max_connections = max_connections
        self._owns_client = client is None
        self._client = client

    def _session(self) -> aiohttp.ClientSession:
        # Opened here, inside the running loop, as aiohttp requires.
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
            )
        return self._client

    async def __aenter__(self) -> Self:
        self._session()
        return self

    async def send(self, event: LoanChangeEvent) -> Receipt:
        """Deliver ``event``; return the receipt or raise a ``DeliveryError`` (see the outcome table)."""
        protocol = self._protocol
        request = protocol.prepare(event)
        # Raised after the except clause, so without a __context__ that holds the signed request.
        failure: DeliveryError | None = None
        try:
            async with self._session().post(
                # The query string is already percent-encoded: yarl must not re-quote it.
                URL(protocol.target(request), encoded=True),
                data=request.body(),
                headers=protocol.headers,
                proxy=self._proxy,
                ssl=self._ssl,
            ) as response:
                body = await response.read()
                status = response.status
                content_type = response.headers.get("Content-Type")
                retry_after = response.headers.get("Retry-After")
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError (some are also ClientError)
            failure = no_answer(event, exc, timed_out=True)
        except aiohttp.ClientError as exc:
            failure = no_answer(event, exc, timed_out=False)
        if failure is not None:
            raise failure
        return protocol.interpret(event, status, body, content_type=content_type, retry_after=retry_after)

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client and self._client is not None:
            await self._client.close()
            self._client = None
