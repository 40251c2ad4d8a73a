"""Parsing the gateway's reply: JSON or XML, wrapped or ``simplify``-ed, result or ``error_response``.

The parser is total: any bytes either parse into a :class:`TopResponse` or
raise :class:`~loanstate.TransientDeliveryError` with ``code="unreadable"``
(a garbled reply says nothing about whether the change took effect, so the
safe move is to send it again with the same ``request_id``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final, Literal

import attrs

from loanstate._errors import TransientDeliveryError

__all__ = ["UNREADABLE", "TopResponse", "parse_response"]

#: The ``code`` of the error raised for a reply that cannot be read.
UNREADABLE: Final = "unreadable"
_MAX_SNIPPET: Final = 80


@attrs.frozen
class TopResponse:
    """What the gateway answered, in either shape.

    ``kind`` is ``"result"`` (the API's own answer, inside the
    ``<method>_response`` wrapper or simplified) or ``"error"`` (an
    ``error_response``). Result fields: ``success`` (``None`` when absent),
    ``response_code``/``response_message`` (also read from ``sub_code``/
    ``sub_msg``, the sibling APIs' names), ``trace_id``. Error fields:
    ``code``, ``message``, ``sub_code``, ``sub_message``. Both:
    ``gateway_request_id``, the platform's own id for the call.
    """

    kind: Literal["result", "error"]
    success: bool | None = None
    response_code: str | None = None
    response_message: str | None = None
    trace_id: str | None = None
    code: str | None = None
    message: str | None = None
    sub_code: str | None = None
    sub_message: str | None = None
    gateway_request_id: str | None = None


def _unreadable(why: str, body: bytes) -> TransientDeliveryError:
    snippet = body[:_MAX_SNIPPET].decode("utf-8", "replace")
    return TransientDeliveryError(f"unreadable reply from the gateway: {why}; body starts {snippet!r}", code=UNREADABLE)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _from_mapping(data: Mapping[str, object], body: bytes) -> TopResponse:
    error = data.get("error_response")
    if error is not None:
        if not isinstance(error, Mapping):
            raise _unreadable("error_response is not an object", body)
        return _error(error, None)
    wrappers = [key for key in data if isinstance(key, str) and key.endswith("_response")]
    inner: Mapping[str, object]
    if len(wrappers) == 1 and isinstance(data[wrappers[0]], Mapping):
        inner = data[wrappers[0]]  # type: ignore[assignment]
    elif wrappers:
        raise _unreadable(f"unexpected wrapper {', '.join(wrappers)}", body)
    else:
        inner = data  # simplify=true drops the wrapper
    gateway_request_id = _text(inner.get("request_id"))
    if "result" not in inner and "code" in inner:
        return _error(inner, gateway_request_id)
    result = inner.get("result")
    if not isinstance(result, Mapping):
        raise _unreadable("no result object", body)
    success = _flag(result.get("success"))
    code = _text(result.get("response_code")) or _text(result.get("sub_code"))
    if success is None and code is None:
        raise _unreadable("the result has neither success nor response_code", body)
    return TopResponse(
        kind="result",
        success=success,
        response_code=code,
        response_message=_text(result.get("response_message")) or _text(result.get("sub_msg")),
        trace_id=_text(result.get("trace_id")),
        gateway_request_id=gateway_request_id,
    )


def _error(error: Mapping[str, object], gateway_request_id: str | None) -> TopResponse:
    return TopResponse(
        kind="error",
        code=_text(error.get("code")),
        message=_text(error.get("msg")),
        sub_code=_text(error.get("sub_code")),
        sub_message=_text(error.get("sub_msg")),
        gateway_request_id=_text(error.get("request_id")) or gateway_request_id,
    )


def _xml_to_mapping(element: ET.Element) -> object:
    children = list(element)
    if not children:
        return element.text.strip() if element.text else ""
    return {child.tag: _xml_to_mapping(child) for child in children}


def parse_response(body: bytes, *, content_type: str | None = None) -> TopResponse:
    """Parse a reply body; JSON or XML is told from ``content_type`` or the first byte.

    Raises :class:`~loanstate.TransientDeliveryError` (``code="unreadable"``)
    for anything that is not a reply the platform could have sent; never
    raises anything else.
    """
    stripped = body.lstrip()
    is_xml = stripped.startswith(b"<") or (content_type is not None and "xml" in content_type.lower())
    if is_xml:
        # The platform never sends a DTD; refusing one up front rules out entity
        # expansion attacks whatever the XML parser's own limits are.
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise _unreadable("XML with a DTD", body)
        try:
            root = ET.fromstring(body)
            # expat nests without limit but the conversion recurses: a deeply
            # nested body must be "unreadable", not a RecursionError.
            tree = _xml_to_mapping(root)
        except (ET.ParseError, ValueError, RecursionError) as exc:
            raise _unreadable(f"bad XML ({type(exc).__name__})", body) from None
        data: object = {root.tag: tree} if root.tag.endswith("_response") else tree
    else:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _unreadable(f"bad JSON ({type(exc).__name__})", body) from None
    if not isinstance(data, Mapping):
        raise _unreadable("not an object", body)
    return _from_mapping(data, body)
