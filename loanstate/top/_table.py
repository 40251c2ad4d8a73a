"""The outcome table as data: one row per case, with where the row comes from.

:func:`loanstate.top.classify` implements these rows in this order; the docs
render them (``docs/delivering.md``) and ``tests/test_top_outcomes.py`` checks
one reply per row. The sources: the Java taobao-sdk (``DefaultTaobaoClient``,
``WebV2Utils``, ``AutoRetryFeature``), the Python SDK (``top/api/base.py``),
the PHP SDK (``TopClient.php``), the platform's published error codes
("API错误码") and this project's own decisions, named as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

__all__ = ["REMEDIES", "SYSTEMIC_CODES", "TABLE", "Row"]


@attrs.frozen
class Row:
    """One row: ``case`` (what happened), ``outcome`` (success, transient, systemic, permanent),
    ``wait`` (the ``retry_after`` it suggests, or ""), ``source`` (why this row says so)."""

    case: str
    outcome: str
    wait: str
    source: str


#: cause -> what a person must fix; the ``remedy`` of a SystemicDeliveryError.
REMEDIES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "signature": "the platform rejects our signature: check LOANSTATE_APP_SECRET (the app secret) and sign_method",
        "app_key": "the platform does not know our app key: check LOANSTATE_APP_KEY",
        "permission": (
            "the app lacks permission for alibaba.finance.xfd.loan.change.notify: "
            "ask Alibaba to grant it to this app key"
        ),
        "method": (
            "the platform does not offer alibaba.finance.xfd.loan.change.notify to this app: "
            "check the gateway URL and ask Alibaba to open the API to this app key"
        ),
        "timestamp": (
            "the platform refuses our timestamp: the local clock is off by more than ~10 minutes; synchronise it (NTP)"
        ),
        "http_auth": "the gateway refuses us (HTTP 401/403): check the URL, the proxy and any credentials it needs",
        "tls": "the TLS handshake with the gateway fails: check the URL, the CA bundle (verify=) and the clock",
        "unreachable": "the gateway cannot be reached (DNS failure, connection refused): check the URL and the network",
    }
)

#: Platform codes that would fail every event alike -> their cause.
SYSTEMIC_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "11": "permission",
        "12": "permission",
        "13": "permission",
        "21": "method",
        "22": "method",
        "25": "signature",
        "29": "app_key",
        "31": "timestamp",
    }
)

_JAVA = "Java SDK (DefaultTaobaoClient/WebV2Utils)"
_RETRY = "Java SDK AutoRetryFeature"
_CODES = "published error codes"
_OURS = "loanstate's decision"

#: The outcome table, in the order the rows are tried.
TABLE: Final[tuple[Row, ...]] = (
    Row("HTTP 401 or 403", "systemic (http_auth)", "", f"{_OURS}: no event can pass a gateway that refuses us"),
    Row("HTTP 429, HTTP 5xx", "transient", "Retry-After header (429: rate_limit_wait)", f"{_JAVA}, {_RETRY}"),
    Row("HTTP 3xx", "transient (not followed; names the Location)", "", f"{_JAVA}: no SDK follows a redirect"),
    Row("other HTTP 1xx/4xx", "permanent", "", f"{_OURS}: the URL is wrong"),
    Row("HTTP 200 or 400: body unreadable, too large or of unknown shape", "transient", "", f"{_JAVA} (reads 400s)"),
    Row("result in another shape than asked (no wrapper without simplify)", "transient", "", f"{_OURS}: issue 10"),
    Row("result.success true (or response_code SUCCESS)", "success", "", "API doc (XfdExternalResponse)"),
    Row("business code in OutcomePolicy.already_done", "success (already done)", "", _OURS),
    Row("business code in OutcomePolicy.retryable", "transient", "", _OURS),
    Row("result.success false, any other code", "permanent", "", f"{_OURS}: nothing public lists the codes"),
    Row("error sub_code in OutcomePolicy.already_done / retryable", "success / transient", "", _OURS),
    Row(
        "code 7 (app call limited), 4, 5, 6, 8 (other call limits)",
        "transient",
        "'This ban will last for N more seconds' in sub_msg, else rate_limit_wait",
        _CODES,
    ),
    Row("sub_code starting isp. (whatever the code)", "transient", "", f"{_RETRY}, {_CODES}"),
    Row("code 10 (service unavailable)", "transient", "unavailable_wait", _CODES),
    Row("codes 11, 12, 13 (insufficient permissions)", "systemic (permission)", "", f"{_CODES}, {_OURS}"),
    Row("codes 21, 22 (method missing/invalid)", "systemic (method)", "", f"{_CODES}, {_OURS}"),
    Row("code 25 (invalid signature)", "systemic (signature)", "", f"{_CODES}, {_OURS}"),
    Row("code 29 (invalid app key)", "systemic (app_key)", "", f"{_CODES}, {_OURS}"),
    Row("code 31 (invalid timestamp: our clock)", "systemic (timestamp)", "", f"{_CODES}, {_OURS}"),
    Row("codes 24, 26, 27, 28, 30, 40, 41, 43 (missing or invalid arguments)", "permanent", "", _CODES),
    Row("sub_code starting isv.", "permanent", "", _CODES),
    Row("any other error_response (code 15 or 50 without isp.)", "permanent", "", _CODES),
    Row("timeout, reset, dropped, deadline passed", "transient", "", f"{_JAVA}, {_RETRY}"),
    Row("TLS failure (certificate, handshake)", "systemic (tls)", "", _OURS),
    Row("DNS failure, connection refused", "systemic (unreachable)", "", _OURS),
)
