"""Parsing the gateway's reply: JSON or XML, wrapped or ``simplify``-ed, result or ``error_response``.

The parser is total: any bytes either parse into a :class:`TopResponse` or
raise :class:`~loanstate.TransientDeliveryError` with ``code="unreadable"``
(a garbled reply says nothing about whether the change took effect, so the
safe move is to send it again with the same ``request_id``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Final, Literal
from xml.parsers import expat

import attrs

from loanstate._errors import TransientDeliveryError

__all__ = ["MAX_REPLY_BYTES", "TOO_LARGE", "UNREADABLE", "TopResponse", "decode_body", "parse_response"]

#: The ``code`` of the error raised for a reply that cannot be read.
UNREADABLE: Final = "unreadable"
#: The ``code`` of the error raised for a reply larger than the cap.
TOO_LARGE: Final = "too_large"
#: The cap on a reply, as received and once inflated: a real one is under 1 kB.
MAX_REPLY_BYTES: Final = 1 << 20
_MAX_SNIPPET: Final = 80
_MAX_DEPTH: Final = 32


@attrs.frozen
class TopResponse:
    """What the gateway answered, in either shape.

    ``kind`` is ``"result"`` (the API's own answer, inside the
    ``<method>_response`` wrapper or simplified) or ``"error"`` (an
    ``error_response``). Result fields: ``success`` (``None`` when absent),
    ``response_code``/``response_message`` (also read from ``sub_code``/
    ``sub_msg``, the sibling APIs' names), ``trace_id``. Error fields:
    ``code``, ``message``, ``sub_code``, ``sub_message``. Both:
    ``gateway_request_id``, the platform's own id for the call, and
    ``wrapper``, the ``<method>_response`` key the reply came in (``None``
    when it had none, as with ``simplify``).
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
    wrapper: str | None = None


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
    wrapper = None
    if len(wrappers) == 1 and isinstance(data[wrappers[0]], Mapping):
        wrapper = wrappers[0]
        inner = data[wrapper]  # type: ignore[assignment]
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
        wrapper=wrapper,
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


class _Refused(Exception):
    """Raised inside the XML parser's callbacks: the document is not one the platform sends."""


def _refuse(*_: object) -> None:
    raise _Refused("XML with a DTD")


def _parse_xml(body: bytes) -> tuple[str, object]:
    """The root tag and the document as nested mappings (a leaf is its stripped text).

    Built on expat directly so that a DTD is refused whatever the document's
    encoding (UTF-16 included) and nesting is bounded without recursion.
    """
    parser = expat.ParserCreate()
    # The platform never sends a DTD; refusing one rules out entity expansion.
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    root: list[str] = []
    stack: list[tuple[str, dict[str, object], list[str]]] = [("", {}, [])]

    def start(tag: str, _attributes: object) -> None:
        if len(stack) > _MAX_DEPTH:
            raise _Refused("XML nested too deeply")
        if not root:
            root.append(tag)
        stack.append((tag, {}, []))

    def end(_tag: str) -> None:
        tag, children, text = stack.pop()
        stack[-1][1][tag] = children if children else "".join(text).strip()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = lambda data: stack[-1][2].append(data)  # noqa: PLW0108 - the top changes
    parser.Parse(body, True)
    return root[0], stack[0][1][root[0]]


def _load_xml(body: bytes) -> object:
    try:
        tag, tree = _parse_xml(body)
    except _Refused as exc:
        raise _unreadable(str(exc), body) from None
    except (expat.ExpatError, ValueError, LookupError, UnicodeError, IndexError, KeyError) as exc:
        # LookupError: an encoding Python does not know; IndexError: no root element.
        raise _unreadable(f"bad XML ({type(exc).__name__})", body) from None
    return {tag: tree} if tag.endswith("_response") else tree


def decode_body(raw: bytes, content_encoding: str | None = None, *, limit: int = MAX_REPLY_BYTES) -> bytes:
    """The reply body, inflated per its ``Content-Encoding`` (identity, gzip or deflate), at most ``limit`` bytes.

    Raises :class:`~loanstate.TransientDeliveryError`: ``code="too_large"``
    past the cap (raw or inflated: a gzip bomb never inflates beyond it),
    ``code="unreadable"`` for an unknown encoding or a corrupt stream.
    """
    if len(raw) > limit:
        raise TransientDeliveryError(f"reply from the gateway larger than {limit} bytes", code=TOO_LARGE)
    encodings = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
    data = raw
    for encoding in reversed(encodings):  # the last one applied is undone first
        if encoding == "identity":
            continue
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise _unreadable(f"unknown Content-Encoding {encoding[:20]!r}", raw)
        data = _inflate(data, encoding, limit)
    return data


def _inflate(data: bytes, encoding: str, limit: int) -> bytes:
    # gzip: header and trailer; deflate: zlib-wrapped, or raw as some servers send it.
    attempts = (16 + zlib.MAX_WBITS,) if encoding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise TransientDeliveryError(f"reply from the gateway inflates past {limit} bytes", code=TOO_LARGE)
        return out
    raise _unreadable(f"corrupt {encoding} body", data)


def parse_response(body: bytes, *, content_type: str | None = None) -> TopResponse:
    """Parse a reply body; JSON or XML is told from ``content_type`` or the first byte.

    Raises :class:`~loanstate.TransientDeliveryError` (``code="unreadable"``)
    for anything that is not a reply the platform could have sent: XML with a
    DTD (in any encoding) or an unknown encoding included; never raises
    anything else.
    """
    stripped = body.lstrip()
    is_xml = stripped.startswith((b"<", b"\x00<", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf<")) or (
        content_type is not None and "xml" in content_type.lower()
    )
    data: object
    if is_xml:
        data = _load_xml(body)
    else:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _unreadable(f"bad JSON ({type(exc).__name__})", body) from None
    if not isinstance(data, Mapping):
        raise _unreadable("not an object", body)
    return _from_mapping(data, body)
