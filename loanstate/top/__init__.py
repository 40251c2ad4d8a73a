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
)
from loanstate.top._response import UNREADABLE, TopResponse, parse_response
from loanstate.top._sign import SIGN_METHODS, SignMethod, sendable, sign, signing_string, verify

__all__ = [
    "API_METHOD",
    "BUSINESS_PARAM",
    "CONTENT_TYPE",
    "DEFAULT_POLICY",
    "FORMATS",
    "PERMANENT_PLATFORM_CODES",
    "SIGN_METHODS",
    "TRANSIENT_PLATFORM_CODES",
    "UNREADABLE",
    "Outcome",
    "OutcomeKind",
    "OutcomePolicy",
    "SignMethod",
    "TopRequest",
    "TopResponse",
    "build_request",
    "classify",
    "classify_response",
    "encode_form",
    "parse_response",
    "partner_id",
    "sendable",
    "sign",
    "signing_string",
    "transport_failure",
    "verify",
]
