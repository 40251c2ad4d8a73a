"""What both TOP notifiers share: settings checks, request preparation, reply interpretation.

The HTTP clients differ (``httpx2`` for :class:`~loanstate.TopNotifier`,
aiohttp for :class:`~loanstate.AsyncTopNotifier`); everything that decides
what is sent and what a reply means lives here, once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from loanstate._errors import DeliveryError, InvalidConfiguration, TransientDeliveryError
from loanstate._events import LoanChangeEvent, Receipt
from loanstate.top import (
    CONTENT_TYPE,
    FORMATS,
    SIGN_METHODS,
    OutcomePolicy,
    TopRequest,
    build_request,
    classify,
    partner_id,
    transport_failure,
)

__all__ = [
    "PRODUCTION_URL",
    "Clock",
    "TopNotifierCommon",
    "TopProtocol",
    "check_url",
    "no_answer",
    "tls_context",
    "tls_settings_error",
]

#: The platform's production gateway.
PRODUCTION_URL: Final = "https://gw.api.taobao.com/router/rest"

Clock = Callable[[], datetime]

log = logging.getLogger("loanstate.notifiers.top")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """``url`` if it is HTTPS, or HTTP to a loopback address, without query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConfiguration("url", url, "expected an http(s) URL such as " + PRODUCTION_URL)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise InvalidConfiguration("url", url, "HTTPS is required except for loopback addresses")
    if "?" in url or "#" in url:  # even an empty one: the query string is appended after a "?"
        raise InvalidConfiguration("url", url, "must not carry a query string or fragment")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise InvalidConfiguration("url", url, "the port must be a number from 0 to 65535") from None
    return url


def tls_context(verify: ssl.SSLContext | str | bool, cert: str | tuple[str, str] | None) -> ssl.SSLContext | bool:
    """The TLS setting for the client: ``verify`` as given, or a context with the CA bundle and certificate loaded.

    A CA path (file or directory) and a client certificate are loaded here, so
    neither client sees the deprecated string forms.
    """
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is False:
        if cert is not None:
            raise InvalidConfiguration("cert", cert, "a client certificate needs verify= left on or a context")
        return False
    elif isinstance(verify, str):
        context = (
            ssl.create_default_context(capath=verify)
            if os.path.isdir(verify)
            else ssl.create_default_context(cafile=verify)
        )
    elif verify is True:
        if cert is None:
            return True  # the client's own default trust store
        context = ssl.create_default_context()
    else:
        raise InvalidConfiguration("verify", verify, "expected a bool, a CA bundle path or an ssl.SSLContext")
    if cert is not None:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        context.load_cert_chain(certfile, keyfile)
    return context


def tls_settings_error(verify: object, cert: object, exc: OSError) -> InvalidConfiguration:
    """The configuration error for a CA bundle or client certificate that cannot be loaded."""
    # Name the file that is at fault: a CA path that is no file, else the certificate.
    setting, value = ("cert", cert) if cert is not None else ("verify", verify)
    if isinstance(verify, str) and not os.path.exists(verify):
        setting, value = "verify", verify
    return InvalidConfiguration(setting, value, f"cannot be loaded ({type(exc).__name__}: {exc.strerror or exc})")


def log_failure(event: LoanChangeEvent, error: DeliveryError) -> None:
    """One DEBUG line per failed attempt: ids and the reason, never credentials."""
    kind = "transient" if isinstance(error, TransientDeliveryError) else "permanent"
    log.debug(
        "%s failure request_id=%s loan_apply_no=%s: %s", kind, event.request_id, event.loan_apply_no, error.message
    )


def no_answer(event: LoanChangeEvent, exc: BaseException, *, timed_out: bool) -> DeliveryError:
    """The transient error for a request that got no HTTP answer (timeout, refused, reset, dropped)."""
    # Only the exception's type and text are kept: the client's exception may
    # reference the signed request, so it is never chained as the cause.
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    reason = "no answer from the gateway in time" if timed_out else "connection to the gateway failed"
    error = transport_failure(f"{reason} ({what})").error(event.request_id)
    log_failure(event, error)
    return error


class TopProtocol:
    """The settings of one notifier; prepares signed requests and interprets replies."""

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
        if not isinstance(app_key, str) or not app_key.strip():
            raise InvalidConfiguration("app_key", app_key, "must be a non-blank string")
        if not isinstance(app_secret, str) or not app_secret.strip():
            # The value of a secret is never echoed, not even a wrong one.
            raise InvalidConfiguration("app_secret", "<hidden>", "must be a non-blank string")
        for setting, text in (("app_key", app_key), ("app_secret", app_secret)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate; the error would carry the whole text
                shown = "<hidden>" if setting == "app_secret" else ascii(text)
                raise InvalidConfiguration(setting, shown, "must be text that UTF-8 can encode") from None
        if sign_method not in SIGN_METHODS:
            raise InvalidConfiguration("sign_method", sign_method, f"expected one of {', '.join(sorted(SIGN_METHODS))}")
        if format not in FORMATS:
            raise InvalidConfiguration("format", format, "expected 'json' or 'xml'")
        self.app_key = app_key
        self._app_secret = app_secret
        self.url = check_url(url)
        self.sign_method = sign_method
        self.format = format
        self.simplify = simplify
        self.policy = policy
        self.clock: Clock = clock or _utc_now
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
            now=self.clock(),
            sign_method=self.sign_method,
            format=self.format,
            simplify=self.simplify,
            session=self._session,
            target_app_key=self._target_app_key,
            partner=self._partner,
        )

    def target(self, request: TopRequest) -> str:
        """The URL to POST ``request`` to: the gateway with the system parameters (no signature)."""
        return f"{self.url}?{request.query_string()}"

    def interpret(
        self,
        event: LoanChangeEvent,
        status: int,
        body: bytes,
        *,
        content_type: str | None,
        retry_after: str | None,
    ) -> Receipt:
        """The receipt for a reply that says the change took effect; raises the delivery error otherwise."""
        outcome = classify(status, body, content_type=content_type, retry_after=retry_after, policy=self.policy)
        if outcome.ok:
            log.debug(
                "delivered request_id=%s loan_apply_no=%s trace_id=%s%s",
                event.request_id,
                event.loan_apply_no,
                outcome.trace_id,
                " (already done)" if outcome.already_done else "",
            )
            return outcome.receipt(event.request_id, self.clock())
        error = outcome.error(event.request_id)
        log_failure(event, error)
        raise error

    def describe(self, cls: str) -> str:
        """The notifier's repr: app key, URL and sign method, never the secret."""
        return f"{cls}(app_key={self.app_key!r}, url={self.url!r}, sign_method={self.sign_method!r})"


class TopNotifierCommon:
    """The members both TOP notifiers expose alike, read from their :class:`TopProtocol`."""

    _protocol: TopProtocol

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

    def __repr__(self) -> str:
        return self._protocol.describe(type(self).__name__)
