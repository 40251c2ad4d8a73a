"""Encoding one change event as a signed open-platform request (pure: the time is passed in).

Every system parameter, ``sign`` included, goes in the URL query string and
the business parameter in the form-encoded body, exactly as the platform's
Java, Python and PHP SDKs send them. A URL therefore carries a signature:
:func:`redact` masks it wherever a URL is shown (reprs, log records).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Final

import attrs

from loanstate._errors import InvalidConfiguration
from loanstate._events import LoanChangeEvent, format_top_time
from loanstate.top._sign import SIGN_METHODS, Secret, sendable, sign

__all__ = [
    "API_METHOD",
    "BUSINESS_PARAM",
    "CONTENT_TYPE",
    "FORMATS",
    "TopRequest",
    "build_request",
    "encode_form",
    "partner_id",
    "redact",
]

#: The API every change notification calls.
API_METHOD: Final = "alibaba.finance.xfd.loan.change.notify"
#: The form field holding the event as compact JSON.
BUSINESS_PARAM: Final = "param_xfd_loan_change_external_request"
#: The body's content type, as the platform's SDKs send it.
CONTENT_TYPE: Final = "application/x-www-form-urlencoded;charset=UTF-8"
#: Reply formats the platform offers.
FORMATS: Final[frozenset[str]] = frozenset({"json", "xml"})


@functools.cache
def partner_id() -> str:
    """The ``partner_id`` naming this SDK to the platform: ``loanstate-<version>``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"loanstate-{version('loanstate')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "loanstate"


_SIGN_IN_QUERY: Final = re.compile(r"(?<![A-Za-z0-9_.~%-])sign=[^&\s\"'#]*")


def redact(text: str) -> str:
    """``text`` with every ``sign=...`` query parameter masked as ``sign=<hidden>``."""
    return _SIGN_IN_QUERY.sub("sign=<hidden>", text) if "sign=" in text else text


_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
# Byte -> its form-encoded text, applied to the UTF-8 bytes seen as Latin-1
# characters: one C-level str.translate instead of urllib's per-byte loop
# (this runs for every parameter of every request). Same output as
# urllib.parse.quote(text, safe="").
_PERCENT: Final = {b: chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256)}
_PLAIN: Final = re.compile(r"[A-Za-z0-9_.~-]*")


def _quote(text: str) -> str:
    # A space becomes %20 rather than "+"; servers decode both the same way.
    if _PLAIN.fullmatch(text):
        return text
    return text.encode("utf-8").decode("latin-1").translate(_PERCENT)


# Parameter names and most system values (app key, method, this second's
# timestamp) repeat from one request to the next: remember their encoding.
_quote_short = functools.lru_cache(maxsize=512)(_quote)
_SHORT: Final = 64


def _pair(key: str, value: str) -> str:
    return f"{_quote_short(key)}={_quote_short(value) if len(value) <= _SHORT else _quote(value)}"


def encode_form(params: Mapping[str, str]) -> str:
    """``key=value&...`` percent-encoded as UTF-8, skipping parameters that are not sent."""
    return "&".join([_pair(k, v) for k, v in params.items() if sendable(k, v)])


@attrs.frozen(repr=False)
class TopRequest:
    """One signed request, ready to POST: ``query`` goes in the URL, ``form`` in the body.

    ``query`` holds every system parameter and ``sign``; ``form`` the business
    parameter. ``request_id`` is the event's idempotency key. The repr never
    shows the signature.
    """

    query: Mapping[str, str]
    form: Mapping[str, str]
    request_id: str

    def query_string(self) -> str:
        """The URL query string (no leading ``?``): the system parameters and ``sign``."""
        return encode_form(self.query)

    def body(self) -> bytes:
        """The form-encoded body: the business parameter."""
        return encode_form(self.form).encode("ascii")

    def params(self) -> dict[str, str]:
        """Every parameter sent, query and body merged, as the gateway sees them."""
        return {**self.query, **self.form}

    def __repr__(self) -> str:
        method = self.query.get("method", "?")
        return f"TopRequest(method={method!r}, request_id={self.request_id!r}, sign=<hidden>)"


def build_request(
    event: LoanChangeEvent,
    *,
    app_key: str,
    app_secret: str | Secret,
    now: datetime,
    sign_method: str = "hmac-sha256",
    format: str = "json",
    simplify: bool = False,
    session: str | None = None,
    target_app_key: str | None = None,
    partner: str | None = None,
) -> TopRequest:
    """Encode and sign ``event`` for ``alibaba.finance.xfd.loan.change.notify``.

    ``now`` (an aware datetime, from the caller's clock) becomes ``timestamp``
    in GMT+8. ``partner`` overrides the ``partner_id`` (default
    ``loanstate-<version>``). Blank optional values are neither signed nor
    sent. Raises :class:`~loanstate.InvalidConfiguration` for an unknown
    ``sign_method`` or ``format``, or a naive ``now``.
    """
    if sign_method not in SIGN_METHODS:
        raise InvalidConfiguration("sign_method", sign_method, f"expected one of {', '.join(sorted(SIGN_METHODS))}")
    if format not in FORMATS:
        raise InvalidConfiguration("format", format, "expected 'json' or 'xml'")
    if now.utcoffset() is None:
        raise InvalidConfiguration("clock", now, "must return timezone-aware datetimes")
    query: dict[str, str] = {
        "app_key": app_key,
        "format": format,
        "method": API_METHOD,
        "partner_id": partner if partner is not None else partner_id(),
        "sign_method": sign_method,
        "timestamp": format_top_time(now),
        "v": "2.0",
    }
    if simplify:
        query["simplify"] = "true"
    if session:
        query["session"] = session
    if target_app_key:
        query["target_app_key"] = target_app_key
    query = {k: v for k, v in query.items() if sendable(k, v)}
    business = event.to_top_param()
    query["sign"] = sign({**query, BUSINESS_PARAM: business}, app_secret, sign_method)
    return TopRequest(query=query, form={BUSINESS_PARAM: business}, request_id=event.request_id)
