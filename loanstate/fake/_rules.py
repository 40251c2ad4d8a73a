"""What the fake gateway checks and how it answers: pure functions, no sockets.

Checks run in the real gateway's order (method, app key, timestamp, version,
format, signature, business parameter) and each failure answers the
``error_response`` the real platform sends for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final
from xml.sax.saxutils import escape

import attrs

from loanstate._errors import IllegalTransition, InvalidEvent
from loanstate._events import FIELDS, TOP_TIMEZONE, LoanChangeEvent
from loanstate._machine import LoanMachine
from loanstate.top import API_METHOD, BUSINESS_PARAM, FORMATS, SIGN_METHODS, Secret, verify

__all__ = ["SKEW", "Answer", "check_request", "error_answer", "render", "success_answer"]

#: How far the request's timestamp may be from the gateway's clock.
SKEW: Final = timedelta(minutes=10)
_WRAPPER: Final = API_METHOD.replace(".", "_") + "_response"
_TIME: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})", re.ASCII)  # ASCII digits only
_OPTIONAL: Final = frozenset({"customer_id", "institution_loan_no"})


@attrs.frozen
class Answer:
    """One answer of the gateway: ``error`` (an error_response) or ``result``, before rendering."""

    kind: str
    fields: Mapping[str, object]
    gateway_request_id: str

    @property
    def code(self) -> str | None:
        """The platform code of an error answer, as text."""
        code = self.fields.get("code")
        return None if code is None else str(code)

    @property
    def sub_code(self) -> str | None:
        """The ``sub_code`` of an error answer, or the ``response_code`` of a result."""
        value = self.fields.get("sub_code", self.fields.get("response_code"))
        return None if value is None else str(value)


def error_answer(
    gateway_request_id: str,
    code: int,
    msg: str,
    sub_code: str | None = None,
    sub_msg: str | None = None,
) -> Answer:
    """An ``error_response`` answer."""
    fields: dict[str, object] = {"code": code, "msg": msg}
    if sub_code is not None:
        fields["sub_code"] = sub_code
    if sub_msg is not None:
        fields["sub_msg"] = sub_msg
    return Answer("error", fields, gateway_request_id)


def success_answer(gateway_request_id: str, trace_id: str, *, success: bool = True, code: str = "SUCCESS") -> Answer:
    """A result answer; ``success=False`` with ``code`` is a business failure."""
    message = "成功" if success else "业务处理失败"
    fields = {"response_code": code, "response_message": message, "trace_id": trace_id, "success": success}
    return Answer("result", fields, gateway_request_id)


def _invalid(rid: str, detail: str) -> Answer:
    return error_answer(rid, 50, "Remote service error", "isv.invalid-parameter", f"非法参数: {detail}")


def _parse_timestamp(text: str) -> datetime | None:
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    try:
        # Built from the digits directly: strptime costs more than the rest of the check.
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=TOP_TIMEZONE)
    except ValueError:
        return None


def _check_business(raw: str, rid: str, machine: LoanMachine | None) -> LoanChangeEvent | Answer:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # a deeply nested value is as invalid as a broken one
        return error_answer(rid, 41, f"Invalid arguments:{BUSINESS_PARAM}")
    if not isinstance(data, dict):
        return error_answer(rid, 41, f"Invalid arguments:{BUSINESS_PARAM}")
    problems: list[str] = []
    for key, value in data.items():
        if key not in FIELDS:
            problems.append(f"unknown field {key!r}")
        elif not isinstance(value, str):
            problems.append(f"{key} must be a String, got {json.dumps(value, ensure_ascii=False)}")
    for key in FIELDS:
        if key not in _OPTIONAL and key not in data:
            problems.append(f"{key} is required")
    moment = None
    if isinstance(data.get("change_time"), str):
        moment = _parse_timestamp(data["change_time"])
        if moment is None:
            problems.append(f"change_time must be yyyy-MM-dd HH:mm:ss, got {data['change_time']!r}")
    if problems:
        return _invalid(rid, "; ".join(problems))
    try:
        event = LoanChangeEvent.from_dict({**data, "change_time": moment}, machine=machine)
    except InvalidEvent as exc:
        return _invalid(rid, "; ".join(f"{k}: {v}" for k, v in exc.errors.items()))
    except IllegalTransition as exc:
        return _invalid(rid, str(exc))
    return event


def check_request(
    params: Mapping[str, str],
    *,
    app_key: str,
    app_secret: str | Secret,
    now: datetime,
    gateway_request_id: str,
    machine: LoanMachine | None,
    sign_in_body: bool = False,
) -> LoanChangeEvent | Answer:
    """Check one request as the gateway does: the event it carries, or the error answer.

    ``params["sign"]`` is the query string's (the platform's clients send it
    there and nowhere else); ``sign_in_body``: a ``sign`` came in the body,
    which is refused. The signature must match exactly, in upper-case hex.
    """
    rid = gateway_request_id
    method = params.get("method", "").strip()
    if not method:
        return error_answer(rid, 21, "Missing Method")
    if method != API_METHOD:
        return error_answer(rid, 22, "Invalid Method")
    key = params.get("app_key", "").strip()
    if not key:
        return error_answer(rid, 28, "Missing App Key")
    if key != app_key:
        return error_answer(rid, 29, "Invalid App Key")
    stamp = params.get("timestamp", "").strip()
    if not stamp:
        return error_answer(rid, 30, "Missing Timestamp")
    moment = _parse_timestamp(stamp)
    if moment is None or abs(moment - now) > SKEW:
        return error_answer(rid, 31, "Invalid Timestamp", "isv.invalid-timestamp", f"时间戳错误: {stamp}")
    version = params.get("v", "").strip()
    if not version:
        return error_answer(rid, 40, "Missing required arguments:v")
    if version != "2.0":
        return error_answer(rid, 41, "Invalid arguments:v")
    if params.get("format", "xml") not in FORMATS:
        return error_answer(rid, 41, "Invalid arguments:format")
    if params.get("sign_method", "md5") not in SIGN_METHODS:
        return error_answer(rid, 25, "Invalid Signature", "isv.invalid-signature-method")
    if sign_in_body:
        return error_answer(rid, 25, "Invalid Signature", "isv.invalid-signature", "sign must be in the query string")
    if not params.get("sign", "").strip():
        return error_answer(rid, 24, "Missing Signature")
    if not verify(params, app_secret, exact=True):
        return error_answer(rid, 25, "Invalid Signature")
    raw = params.get(BUSINESS_PARAM, "")
    if not raw.strip():
        return error_answer(rid, 40, f"Missing required arguments:{BUSINESS_PARAM}")
    return _check_business(raw, rid, machine)


def render(answer: Answer, *, format: str, simplify: bool) -> tuple[bytes, str]:
    """The body and content type the gateway sends for ``answer`` in the requested format."""
    if format == "xml":
        return _render_xml(answer), "text/xml;charset=UTF-8"
    if answer.kind == "error":
        payload: dict[str, object] = {"error_response": {**answer.fields, "request_id": answer.gateway_request_id}}
    else:
        inner: dict[str, object] = {"result": dict(answer.fields), "request_id": answer.gateway_request_id}
        payload = inner if simplify else {_WRAPPER: inner}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    ), "application/json;charset=UTF-8"


def _xml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def _render_xml(answer: Answer) -> bytes:
    fields = "".join(f"<{k}>{_xml_value(v)}</{k}>" for k, v in answer.fields.items())
    rid = f"<request_id>{escape(answer.gateway_request_id)}</request_id>"
    if answer.kind == "error":
        text = f"<error_response>{fields}{rid}</error_response>"
    else:
        text = f"<{_WRAPPER}><result>{fields}</result>{rid}</{_WRAPPER}>"
    return ('<?xml version="1.0" encoding="utf-8" ?>' + text).encode("utf-8")
