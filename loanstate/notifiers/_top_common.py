"""What both TOP notifiers share: request preparation, reading a reply within its caps, interpretation, failures.

The two notifiers differ only in ``await``: both run on httpx2 (``Client``
and ``AsyncClient``), both take one :class:`TopSettings`, and everything that
decides what is sent and what a reply (or its absence) means lives here, once.
"""

from __future__ import annotations

import logging
import socket
import ssl
from datetime import UTC, datetime
from typing import Final

import attrs
import httpx2

from loanstate._errors import (
    DeliveryError,
    InvalidEvent,
    PermanentDeliveryError,
    SystemicDeliveryError,
    TransientDeliveryError,
)
from loanstate._events import LoanChangeEvent, Receipt
from loanstate.notifiers._top_settings import TopSettings
from loanstate.top import (
    CONTENT_TYPE,
    MAX_REPLY_BYTES,
    TOO_LARGE,
    TopRequest,
    build_request,
    classify,
    decode_body,
    partner_id,
    redact,
    systemic_failure,
    transport_failure,
)

__all__ = ["Reply", "TopNotifierCommon", "failure", "headers", "interpret", "prepare", "read_capped", "target"]

log = logging.getLogger("loanstate.notifiers.top")
_MAX_CAUSES: Final = 8


class _RedactSign(logging.Filter):
    """Masks ``sign=...`` in records of the HTTP client, whose request lines carry the signed URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "sign=" in text:
            record.msg, record.args = redact(text), None
        return True


# httpx2 logs "HTTP Request: POST <url> ..." at INFO: the URL holds the signature.
_REDACT: Final = _RedactSign()
for _name in ("httpx2", "httpcore2"):
    if _REDACT not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_REDACT)


@attrs.frozen
class Reply:
    """What came back: status, the (inflated, capped) body and the headers the table reads."""

    status: int
    body: bytes
    content_type: str | None
    retry_after: str | None
    location: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def headers(settings: TopSettings) -> dict[str, str]:
    """The request headers: the SDKs' content type, our name, and only the encodings we can cap."""
    return {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": settings.partner or partner_id(),
        "Accept-Encoding": "gzip, deflate",
    }


def prepare(settings: TopSettings, event: LoanChangeEvent) -> TopRequest:
    """Encode and sign ``event`` now (the clock gives the timestamp); anything but an event is InvalidEvent."""
    if not isinstance(event, LoanChangeEvent):
        shown = repr(event)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise InvalidEvent({"event": f"expected a LoanChangeEvent, got {type(event).__name__} {shown}"})
    return build_request(
        event,
        app_key=settings.app_key,
        app_secret=settings.app_secret,
        now=(settings.clock or _now)(),
        sign_method=settings.sign_method,
        format=settings.format,
        simplify=settings.simplify,
        session=settings.session,
        target_app_key=settings.target_app_key,
        partner=settings.partner,
    )


def target(settings: TopSettings, request: TopRequest) -> str:
    """The URL to POST ``request`` to: the gateway with every system parameter and the signature."""
    return f"{settings.url}?{request.query_string()}"


def read_capped(raw: bytes, response: httpx2.Response) -> Reply:
    """The reply from its raw (still encoded) body, inflated within :data:`~loanstate.top.MAX_REPLY_BYTES`."""
    get = response.headers.get
    body = decode_body(raw, get("content-encoding"), limit=MAX_REPLY_BYTES)
    return Reply(response.status_code, body, get("content-type"), get("retry-after"), get("location"))


def too_large() -> TransientDeliveryError:
    """The error for a reply whose raw body passed the cap while it was being read."""
    return TransientDeliveryError(f"reply from the gateway larger than {MAX_REPLY_BYTES} bytes", code=TOO_LARGE)


def log_failure(event: LoanChangeEvent, error: DeliveryError) -> None:
    """One DEBUG line per failed attempt: ids and the reason, never credentials."""
    kind = "transient" if isinstance(error, TransientDeliveryError) else "permanent"
    if isinstance(error, SystemicDeliveryError):
        kind = f"systemic ({error.cause})"
    log.debug(
        "%s failure request_id=%s loan_apply_no=%s: %s", kind, event.request_id, event.loan_apply_no, error.message
    )


def interpret(settings: TopSettings, event: LoanChangeEvent, reply: Reply) -> Receipt:
    """The receipt for a reply that says the change took effect; raises the delivery error otherwise."""
    outcome = classify(
        reply.status,
        reply.body,
        content_type=reply.content_type,
        retry_after=reply.retry_after,
        location=reply.location,
        policy=settings.policy,
        simplify=settings.simplify,
    )
    if outcome.ok:
        log.debug(
            "delivered request_id=%s loan_apply_no=%s trace_id=%s%s",
            event.request_id,
            event.loan_apply_no,
            outcome.trace_id,
            " (already done)" if outcome.already_done else "",
        )
        return outcome.receipt(event.request_id, (settings.clock or _now)())
    error = outcome.error(event.request_id)
    log_failure(event, error)
    raise error


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < _MAX_CAUSES:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _systemic_cause(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return "tls"
        if isinstance(cause, socket.gaierror | ConnectionRefusedError):
            return "unreachable"
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL:" in text:
        return "tls"
    if "Connection refused" in text or "Name or service not known" in text:
        return "unreachable"
    return None


def failure(settings: TopSettings, event: LoanChangeEvent, exc: BaseException) -> DeliveryError:
    """The delivery error for a request that got no usable HTTP answer.

    A timeout or a passed deadline, a reset or dropped connection are
    transient; a TLS failure or an unreachable host (DNS, refused) systemic.
    Only the exception's type and text are kept, the signed URL masked: the
    client's exception references the request, so it is never chained.
    """
    if isinstance(exc, DeliveryError):  # a body past the cap, or unreadable
        error: DeliveryError = type(exc)(exc.message, code=exc.code, request_id=event.request_id)
    elif isinstance(exc, httpx2.UnsupportedProtocol):
        error = PermanentDeliveryError(f"cannot reach the gateway ({redact(str(exc))})", request_id=event.request_id)
    else:
        what = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        cause = None if isinstance(exc, httpx2.TimeoutException | TimeoutError) else _systemic_cause(exc)
        if cause is not None:
            error = systemic_failure(cause, what).error(event.request_id)
        elif isinstance(exc, httpx2.TimeoutException | TimeoutError):
            reason = f"no answer from the gateway in time (timeout, or the {settings.deadline:g} s deadline: {what})"
            error = transport_failure(reason).error(event.request_id)
        else:
            error = transport_failure(f"connection to the gateway failed ({what})").error(event.request_id)
    log_failure(event, error)
    return error


class TopNotifierCommon:
    """The members both TOP notifiers expose alike, read from their :class:`TopSettings`."""

    settings: TopSettings

    @property
    def url(self) -> str:
        """The gateway endpoint."""
        return self.settings.url

    @property
    def app_key(self) -> str:
        """The app key requests are signed for."""
        return self.settings.app_key

    @property
    def deadline(self) -> float:
        """Seconds that bound one whole ``send()``: connect, write and every read."""
        return self.settings.deadline

    def prepare(self, event: LoanChangeEvent) -> TopRequest:
        """The signed request ``send`` would POST now (for inspection; the signature is not in its repr)."""
        return prepare(self.settings, event)

    def __repr__(self) -> str:
        s = self.settings
        return f"{type(self).__name__}(app_key={s.app_key!r}, url={s.url!r}, sign_method={s.sign_method!r})"
