"""One classification of every delivery outcome: success, transient or permanent.

The table (also in the docs, "Deliver to Alibaba"):

========================================================  ============  ==========================
what happened                                             outcome       suggested wait
========================================================  ============  ==========================
``result.success`` true (or ``response_code`` SUCCESS)    success
business code in ``OutcomePolicy.already_done``           success       (``already_done`` is set)
business code in ``OutcomePolicy.retryable``              transient
``result.success`` false, any other code                  permanent
HTTP 5xx, HTTP 429                                        transient     ``Retry-After`` header
timeout, connection refused/reset/dropped                 transient
unreadable body                                           transient
platform code 7 (app call limited)                        transient     "ban will last N seconds",
                                                                        else ``rate_limit_wait``
platform codes 4, 5, 6, 8 (other call limits)             transient     as for 7
platform code 10 (service unavailable)                    transient     ``unavailable_wait``
platform codes 24-31, 40, 41, 43                          permanent
``sub_code`` ``isp.*``                                    transient
``sub_code`` ``isv.*``                                    permanent
other HTTP 1xx, 3xx, 4xx; any other error                 permanent
========================================================  ============  ==========================

Codes in the policy's sets are matched against the business ``response_code``
and the error ``sub_code`` and take precedence over the rest of the table.
Pure functions; notifiers, the dispatcher and the docs all use this one table.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import attrs

from loanstate._errors import DeliveryError, InvalidConfiguration, PermanentDeliveryError, TransientDeliveryError
from loanstate._events import Receipt
from loanstate.top._response import UNREADABLE, TopResponse, parse_response

__all__ = [
    "DEFAULT_POLICY",
    "PERMANENT_PLATFORM_CODES",
    "TRANSIENT_PLATFORM_CODES",
    "Outcome",
    "OutcomeKind",
    "OutcomePolicy",
    "classify",
    "classify_response",
    "transport_failure",
]

#: Platform codes that mean "later": call limits (4-8) and service unavailable (10).
TRANSIENT_PLATFORM_CODES: Final = frozenset({"4", "5", "6", "7", "8", "10"})
#: Platform codes that mean "this request is wrong": signature, session, app key,
#: timestamp (24-31) and argument errors (40, 41, 43).
PERMANENT_PLATFORM_CODES: Final = frozenset({*(str(c) for c in range(24, 32)), "40", "41", "43"})
_CALL_LIMITS: Final = frozenset({"4", "5", "6", "7", "8"})
_BAN_SECONDS: Final = re.compile(r"(\d+(?:\.\d+)?)\s*more\s*second", re.IGNORECASE)


class OutcomeKind(enum.Enum):
    """The three things a delivery attempt can come to."""

    SUCCESS = "success"
    TRANSIENT = "transient"
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
        """The error to raise for a failed outcome (transient or permanent)."""
        cls = TransientDeliveryError if self.kind is OutcomeKind.TRANSIENT else PermanentDeliveryError
        return cls(
            self.reason,
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
    response: TopResponse, *, policy: OutcomePolicy = DEFAULT_POLICY, http_status: int = 200
) -> Outcome:
    """Classify a parsed reply (see the module's table)."""
    fields = {
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
        code = response.response_code
        succeeded = response.success if response.success is not None else (code or "").upper() == "SUCCESS"
        if succeeded:
            return Outcome(OutcomeKind.SUCCESS, "accepted", **fields)  # type: ignore[arg-type]
        said = f"business failure {code!r}" + (f" {response.response_message!r}" if response.response_message else "")
        if code in policy.already_done:
            return Outcome(OutcomeKind.SUCCESS, f"already done: {said}", already_done=True, **fields)  # type: ignore[arg-type]
        if code in policy.retryable:
            return Outcome(OutcomeKind.TRANSIENT, f"retryable {said}", **fields)  # type: ignore[arg-type]
        return Outcome(OutcomeKind.PERMANENT, said, **fields)  # type: ignore[arg-type]
    said = _said(response)
    sub = response.sub_code or ""
    code = response.code or ""
    if sub in policy.already_done:
        return Outcome(OutcomeKind.SUCCESS, f"already done: {said}", already_done=True, **fields)  # type: ignore[arg-type]
    if sub in policy.retryable:
        return Outcome(OutcomeKind.TRANSIENT, f"retryable platform error: {said}", **fields)  # type: ignore[arg-type]
    if code in _CALL_LIMITS:
        wait = _ban_wait(response, policy)
        return Outcome(OutcomeKind.TRANSIENT, f"call limit: {said}", retry_after=wait, **fields)  # type: ignore[arg-type]
    if code in TRANSIENT_PLATFORM_CODES:
        return Outcome(
            OutcomeKind.TRANSIENT,
            f"platform unavailable: {said}",
            retry_after=policy.unavailable_wait,
            **fields,  # type: ignore[arg-type]
        )
    if code in PERMANENT_PLATFORM_CODES:
        return Outcome(OutcomeKind.PERMANENT, f"request refused: {said}", **fields)  # type: ignore[arg-type]
    if sub.startswith("isp."):
        return Outcome(OutcomeKind.TRANSIENT, f"platform-side error: {said}", **fields)  # type: ignore[arg-type]
    if sub.startswith("isv."):
        return Outcome(OutcomeKind.PERMANENT, f"request rejected: {said}", **fields)  # type: ignore[arg-type]
    return Outcome(OutcomeKind.PERMANENT, f"platform error: {said}", **fields)  # type: ignore[arg-type]


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
    policy: OutcomePolicy = DEFAULT_POLICY,
) -> Outcome:
    """Classify an HTTP reply: its status, body, ``Content-Type`` and ``Retry-After`` header.

    Never raises: an unreadable body is a transient outcome.
    """
    if http_status == 429 or http_status >= 500:
        wait = _header_wait(retry_after)
        if wait is None and http_status == 429:
            wait = policy.rate_limit_wait
        return Outcome(OutcomeKind.TRANSIENT, f"HTTP {http_status} from the gateway", http_status, retry_after=wait)
    if not 200 <= http_status < 300:  # 1xx, 3xx (redirects are not followed: a wrong URL), 4xx
        return Outcome(OutcomeKind.PERMANENT, f"HTTP {http_status} from the gateway", http_status)
    try:
        response = parse_response(body, content_type=content_type)
    except TransientDeliveryError as exc:
        return Outcome(OutcomeKind.TRANSIENT, exc.message, http_status, code=UNREADABLE)
    return classify_response(response, policy=policy, http_status=http_status)


def transport_failure(reason: str) -> Outcome:
    """The outcome of a request that got no reply: timeout, refused, reset, dropped (transient)."""
    return Outcome(OutcomeKind.TRANSIENT, reason)
