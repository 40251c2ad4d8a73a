"""One classification of every delivery outcome: success, transient, systemic or permanent.

:data:`TABLE` is the table, row by row, with the source of each row; the docs
(docs/delivering.md) show it and a test checks one case per row. Rows are
tried top to bottom; codes in the :class:`OutcomePolicy` match the business
``response_code`` and the error ``sub_code`` and take precedence over the
platform rows. Pure functions; notifiers, the dispatcher and the docs all use
this one table.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import attrs

from loanstate._errors import (
    DeliveryError,
    InvalidConfiguration,
    PermanentDeliveryError,
    SystemicDeliveryError,
    TransientDeliveryError,
)
from loanstate._events import Receipt
from loanstate.top._request import API_METHOD, redact
from loanstate.top._response import UNREADABLE, TopResponse, parse_response
from loanstate.top._table import REMEDIES, SYSTEMIC_CODES, TABLE, Row

__all__ = [
    "DEFAULT_POLICY",
    "PERMANENT_PLATFORM_CODES",
    "REMEDIES",
    "SYSTEMIC_CODES",
    "TABLE",
    "TRANSIENT_PLATFORM_CODES",
    "Outcome",
    "OutcomeKind",
    "OutcomePolicy",
    "Row",
    "classify",
    "classify_response",
    "systemic_failure",
    "transport_failure",
]

#: Platform codes that mean "later": call limits (4-8) and service unavailable (10).
TRANSIENT_PLATFORM_CODES: Final = frozenset({"4", "5", "6", "7", "8", "10"})
#: Platform codes that mean "this request is wrong" (missing signature, session,
#: app key or timestamp; argument errors): 24, 26-28, 30, 40, 41, 43.
PERMANENT_PLATFORM_CODES: Final = frozenset({"24", "26", "27", "28", "30", "40", "41", "43"})
_CALL_LIMITS: Final = frozenset({"4", "5", "6", "7", "8"})
_BAN_SECONDS: Final = re.compile(r"(\d+(?:\.\d+)?)\s*more\s*second", re.IGNORECASE | re.ASCII)
_WRAPPER: Final = API_METHOD.replace(".", "_") + "_response"


class OutcomeKind(enum.Enum):
    """The four things a delivery attempt can come to.

    ``SYSTEMIC`` is a transient failure that says nothing about the event and
    everything about the setup (a wrong secret, a clock off): every event
    would fail alike, so a dispatcher pauses instead of parking.
    """

    SUCCESS = "success"
    TRANSIENT = "transient"
    SYSTEMIC = "systemic"
    PERMANENT = "permanent"


def _codes(values: Iterable[str]) -> frozenset[str]:
    # A bare string would become a set of its letters, matching no real code.
    codes = frozenset() if isinstance(values, str) else frozenset(values)
    if isinstance(values, str) or not all(isinstance(v, str) for v in codes):
        raise InvalidConfiguration("business codes", values, "expected a collection of code strings, e.g. {'CODE'}")
    return codes


def _wait(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None and attribute.name == "unavailable_wait":
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value >= 0):
        raise InvalidConfiguration(attribute.name, value, "must be a finite number of seconds, 0 or more")


@attrs.frozen
class OutcomePolicy:
    """The configurable part of the classification.

    Nothing public says which business codes this API may answer, so by
    default every business failure is permanent (park it, a person looks).
    ``retryable``: business ``response_code``/``sub_code`` values to retry.
    ``already_done``: codes meaning "applied before", counted as success.
    ``rate_limit_wait``: seconds to suggest after a call limit when the platform
    names no wait. ``unavailable_wait``: seconds after code 10 (``None``: the
    caller's backoff).
    """

    retryable: frozenset[str] = attrs.field(default=frozenset(), converter=_codes)
    already_done: frozenset[str] = attrs.field(default=frozenset(), converter=_codes)
    rate_limit_wait: float = attrs.field(default=1.0, validator=_wait)
    unavailable_wait: float | None = attrs.field(default=None, validator=_wait)


#: The policy used when none is given.
DEFAULT_POLICY: Final = OutcomePolicy()


@attrs.frozen
class Outcome:
    """How one delivery attempt ended, with everything the gateway said.

    ``reason`` is a sentence for people; the other fields are the gateway's
    own values (``None`` when absent). ``retry_after`` is the wait in
    seconds the platform implies, if any.
    """

    kind: OutcomeKind
    reason: str
    http_status: int | None = None
    code: str | None = None
    message: str | None = None
    sub_code: str | None = None
    sub_message: str | None = None
    response_code: str | None = None
    response_message: str | None = None
    trace_id: str | None = None
    gateway_request_id: str | None = None
    retry_after: float | None = None
    already_done: bool = False
    cause: str | None = None
    remedy: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the change is known to have taken effect."""
        return self.kind is OutcomeKind.SUCCESS

    def receipt(self, request_id: str, delivered_at: datetime) -> Receipt:
        """The receipt for a successful outcome."""
        return Receipt(
            request_id=request_id,
            trace_id=self.trace_id,
            response_code=self.response_code,
            response_message=self.response_message,
            delivered_at=delivered_at,
        )

    def error(self, request_id: str | None) -> DeliveryError:
        """The error to raise for a failed outcome: transient, systemic (with cause and remedy) or permanent."""
        details: dict[str, Any] = {}
        cls: type[DeliveryError] = PermanentDeliveryError
        if self.kind is OutcomeKind.TRANSIENT:
            cls = TransientDeliveryError
        elif self.kind is OutcomeKind.SYSTEMIC:
            cls = SystemicDeliveryError
            details = {"cause": self.cause or "unknown", "remedy": self.remedy or "check the notifier's settings"}
        return cls(
            self.reason,
            **details,
            request_id=request_id,
            trace_id=self.trace_id,
            code=self.code,
            code_message=self.message,
            sub_code=self.sub_code,
            sub_message=self.sub_message,
            response_code=self.response_code,
            response_message=self.response_message,
            http_status=self.http_status,
            gateway_request_id=self.gateway_request_id,
            retry_after=self.retry_after,
        )


def _ban_wait(response: TopResponse, policy: OutcomePolicy) -> float:
    for text in (response.sub_message, response.message):
        if text:
            match = _BAN_SECONDS.search(text)
            if match and math.isfinite(seconds := float(match.group(1))):
                return seconds
    return policy.rate_limit_wait


def _said(response: TopResponse) -> str:
    parts = [f"code {response.code}" if response.code else "no code"]
    if response.message:
        parts.append(repr(response.message))
    if response.sub_code:
        parts.append(f"sub_code {response.sub_code!r}")
    if response.sub_message:
        parts.append(repr(response.sub_message))
    return ", ".join(parts)


def classify_response(
    response: TopResponse, *, policy: OutcomePolicy = DEFAULT_POLICY, http_status: int = 200, simplify: bool = False
) -> Outcome:
    """Classify a parsed reply (see :data:`TABLE`).

    ``simplify``: whether the request asked for the reply without its wrapper.
    """
    fields: dict[str, Any] = {
        "http_status": http_status,
        "code": response.code,
        "message": response.message,
        "sub_code": response.sub_code,
        "sub_message": response.sub_message,
        "response_code": response.response_code,
        "response_message": response.response_message,
        "trace_id": response.trace_id,
        "gateway_request_id": response.gateway_request_id,
    }
    if response.kind == "result":
        return _classify_result(response, policy, fields, simplify)
    return _classify_error(response, policy, fields)


def _classify_result(response: TopResponse, policy: OutcomePolicy, fields: dict[str, Any], simplify: bool) -> Outcome:
    code = response.response_code
    # Only the shape asked for confirms a delivery: a bare {"result": ...} when
    # the wrapper was asked for (say, from a host a redirect led to) is unknown.
    if response.wrapper != _WRAPPER and not (simplify and response.wrapper is None):
        shape = response.wrapper or "no wrapper"
        return Outcome(OutcomeKind.TRANSIENT, f"unknown reply shape ({shape}): not a confirmation", **fields)
    succeeded = response.success if response.success is not None else (code or "").upper() == "SUCCESS"
    if succeeded:
        return Outcome(OutcomeKind.SUCCESS, "accepted", **fields)
    said = f"business failure {code!r}" + (f" {response.response_message!r}" if response.response_message else "")
    if code in policy.already_done:
        return Outcome(OutcomeKind.SUCCESS, f"already done: {said}", already_done=True, **fields)
    if code in policy.retryable:
        return Outcome(OutcomeKind.TRANSIENT, f"retryable {said}", **fields)
    return Outcome(OutcomeKind.PERMANENT, said, **fields)


def _classify_error(response: TopResponse, policy: OutcomePolicy, fields: dict[str, Any]) -> Outcome:
    said = _said(response)
    sub = response.sub_code or ""
    code = response.code or ""
    if sub in policy.already_done:
        return Outcome(OutcomeKind.SUCCESS, f"already done: {said}", already_done=True, **fields)
    if sub in policy.retryable:
        return Outcome(OutcomeKind.TRANSIENT, f"retryable platform error: {said}", **fields)
    if code in _CALL_LIMITS:
        wait = _ban_wait(response, policy)
        return Outcome(OutcomeKind.TRANSIENT, f"call limit: {said}", retry_after=wait, **fields)
    if sub.startswith("isp."):  # the platform's fault, whatever the code says
        return Outcome(OutcomeKind.TRANSIENT, f"platform-side error: {said}", **fields)
    if code == "10":
        return Outcome(
            OutcomeKind.TRANSIENT, f"platform unavailable: {said}", retry_after=policy.unavailable_wait, **fields
        )
    if code in SYSTEMIC_CODES:
        cause, remedy = SYSTEMIC_CODES[code], REMEDIES[SYSTEMIC_CODES[code]]
        return Outcome(OutcomeKind.SYSTEMIC, f"{remedy} ({said})", cause=cause, remedy=remedy, **fields)
    if code in PERMANENT_PLATFORM_CODES:
        return Outcome(OutcomeKind.PERMANENT, f"request refused: {said}", **fields)
    if sub.startswith("isv."):
        return Outcome(OutcomeKind.PERMANENT, f"request rejected: {said}", **fields)
    return Outcome(OutcomeKind.PERMANENT, f"platform error: {said}", **fields)


def _header_wait(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP-date; rare enough to leave to the caller's backoff
    # "inf" and "nan" parse as floats; a wait must be a real, finite number of seconds.
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def classify(
    http_status: int,
    body: bytes,
    *,
    content_type: str | None = None,
    retry_after: str | None = None,
    location: str | None = None,
    policy: OutcomePolicy = DEFAULT_POLICY,
    simplify: bool = False,
) -> Outcome:
    """Classify an HTTP reply: its status, body and ``Content-Type``, ``Retry-After`` and ``Location`` headers.

    ``simplify``: whether the request asked for the reply without its
    wrapper. Never raises: an unreadable body is a transient outcome.
    """
    if http_status in (401, 403):
        cause = "http_auth"
        reason = f"HTTP {http_status} from the gateway: {REMEDIES[cause]}"
        return Outcome(OutcomeKind.SYSTEMIC, reason, http_status, cause=cause, remedy=REMEDIES[cause])
    if http_status == 429 or http_status >= 500:
        wait = _header_wait(retry_after)
        if wait is None and http_status == 429:
            wait = policy.rate_limit_wait
        return Outcome(OutcomeKind.TRANSIENT, f"HTTP {http_status} from the gateway", http_status, retry_after=wait)
    if 300 <= http_status < 400:  # never followed: the signed request goes to the configured host only
        where = repr(redact(location)[:200]) if location else "no Location"
        return Outcome(OutcomeKind.TRANSIENT, f"HTTP {http_status} redirect to {where} not followed", http_status)
    if not (200 <= http_status < 300 or http_status == 400):  # 1xx, other 4xx: the URL is wrong
        return Outcome(OutcomeKind.PERMANENT, f"HTTP {http_status} from the gateway", http_status)
    try:
        response = parse_response(body, content_type=content_type)
    except TransientDeliveryError as exc:
        return Outcome(OutcomeKind.TRANSIENT, exc.message, http_status, code=exc.code or UNREADABLE)
    return classify_response(response, policy=policy, http_status=http_status, simplify=simplify)


def transport_failure(reason: str) -> Outcome:
    """The outcome of a request that got no reply: timeout, reset, dropped (transient)."""
    return Outcome(OutcomeKind.TRANSIENT, reason)


def systemic_failure(cause: str, reason: str) -> Outcome:
    """The outcome of a failure that would hit every event alike (``cause`` a key of :data:`REMEDIES`)."""
    remedy = REMEDIES[cause]
    return Outcome(OutcomeKind.SYSTEMIC, f"{remedy} ({reason})", cause=cause, remedy=remedy)
