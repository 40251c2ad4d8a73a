"""The open-platform (TOP) protocol, pure and I/O-free: signing, request encoding, reply parsing, classification.

:func:`sign` / :func:`verify` implement the platform's ``signTopRequest``;
:func:`build_request` turns a :class:`~loanstate.LoanChangeEvent` into a
signed :class:`TopRequest` (the time is passed in); :func:`parse_response`
reads a reply in any of its shapes; :func:`classify` maps an HTTP reply to an
:class:`Outcome` following the one table of outcomes. No function here opens a
socket or reads a clock.
"""

from __future__ import annotations

from loanstate.top._outcome import (
    DEFAULT_POLICY,
    PERMANENT_PLATFORM_CODES,
    TRANSIENT_PLATFORM_CODES,
    Outcome,
    OutcomeKind,
    OutcomePolicy,
    classify,
    classify_response,
    systemic_failure,
    transport_failure,
)
from loanstate.top._request import (
    API_METHOD,
    BUSINESS_PARAM,
    CONTENT_TYPE,
    FORMATS,
    TopRequest,
    build_request,
    encode_form,
    partner_id,
    redact,
)
from loanstate.top._response import MAX_REPLY_BYTES, TOO_LARGE, UNREADABLE, TopResponse, decode_body, parse_response
from loanstate.top._sign import SIGN_METHODS, Secret, SignMethod, sendable, sign, signing_string, verify
from loanstate.top._table import REMEDIES, SYSTEMIC_CODES, TABLE, Row

__all__ = [
    "API_METHOD",
    "BUSINESS_PARAM",
    "CONTENT_TYPE",
    "DEFAULT_POLICY",
    "FORMATS",
    "MAX_REPLY_BYTES",
    "PERMANENT_PLATFORM_CODES",
    "REMEDIES",
    "SIGN_METHODS",
    "SYSTEMIC_CODES",
    "TABLE",
    "TOO_LARGE",
    "TRANSIENT_PLATFORM_CODES",
    "UNREADABLE",
    "Outcome",
    "OutcomeKind",
    "OutcomePolicy",
    "Row",
    "Secret",
    "SignMethod",
    "TopRequest",
    "TopResponse",
    "build_request",
    "classify",
    "classify_response",
    "decode_body",
    "encode_form",
    "parse_response",
    "partner_id",
    "redact",
    "sendable",
    "sign",
    "signing_string",
    "systemic_failure",
    "transport_failure",
    "verify",
]
