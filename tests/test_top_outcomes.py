"""The one outcome table (loanstate.top.TABLE / classify): one case per documented row, and random replies."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loanstate import PermanentDeliveryError, SystemicDeliveryError, TransientDeliveryError
from loanstate.top import (
    REMEDIES,
    SYSTEMIC_CODES,
    TABLE,
    TOO_LARGE,
    UNREADABLE,
    OutcomeKind,
    OutcomePolicy,
    classify,
    decode_body,
    parse_response,
)

WRAPPER = "alibaba_finance_xfd_loan_change_notify_response"
POLICY = OutcomePolicy(retryable={"TRY_LATER"}, already_done={"DUPLICATE_REQUEST"})
ROWS = {row.case: row for row in TABLE}


def js(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def ok(**result: Any) -> bytes:
    return js({WRAPPER: {"result": result, "request_id": "gw-1"}})


def err(**fields: Any) -> bytes:
    return js({"error_response": {**fields, "request_id": "gw-1"}})


def row(prefix: str) -> str:
    """The TABLE row whose case starts with ``prefix`` (there must be exactly one)."""
    (case,) = [case for case in ROWS if case.startswith(prefix)]
    return case


# (name, TABLE row, status, body, expected kind, expected retry_after, expected cause)
CASES: list[tuple[Any, ...]] = [
    ("http 401", row("HTTP 401"), 401, b"", OutcomeKind.SYSTEMIC, None, "http_auth"),
    ("http 403", row("HTTP 401"), 403, b"", OutcomeKind.SYSTEMIC, None, "http_auth"),
    ("http 500", row("HTTP 429"), 500, b"oops", OutcomeKind.TRANSIENT, None, None),
    ("http 503", row("HTTP 429"), 503, b"", OutcomeKind.TRANSIENT, None, None),
    ("http 429", row("HTTP 429"), 429, b"", OutcomeKind.TRANSIENT, 1.0, None),
    ("redirect", row("HTTP 3xx"), 302, b"", OutcomeKind.TRANSIENT, None, None),
    ("http 404", row("other HTTP"), 404, b"", OutcomeKind.PERMANENT, None, None),
    ("http 405", row("other HTTP"), 405, ok(success=True), OutcomeKind.PERMANENT, None, None),
    ("unreadable", row("HTTP 200 or 400"), 200, b"<html>", OutcomeKind.TRANSIENT, None, None),
    ("empty", row("HTTP 200 or 400"), 200, b"", OutcomeKind.TRANSIENT, None, None),
    ("http 400 empty", row("HTTP 200 or 400"), 400, b"", OutcomeKind.TRANSIENT, None, None),
    ("bare result", row("result in another shape"), 200, js({"result": {"success": True}}), OutcomeKind.TRANSIENT),
    ("other wrapper", row("result in another shape"), 200, js({"x_response": {"result": {"success": True}}})),
    ("success", row("result.success true"), 200, ok(success=True, response_code="SUCCESS"), OutcomeKind.SUCCESS),
    ("success by code", row("result.success true"), 200, ok(response_code="SUCCESS"), OutcomeKind.SUCCESS),
    ("success on 400", row("result.success true"), 400, ok(success=True), OutcomeKind.SUCCESS),
    (
        "already done",
        row("business code in OutcomePolicy.already"),
        200,
        ok(success=False, response_code="DUPLICATE_REQUEST"),
        OutcomeKind.SUCCESS,
    ),
    (
        "retryable",
        row("business code in OutcomePolicy.retry"),
        200,
        ok(success=False, response_code="TRY_LATER"),
        OutcomeKind.TRANSIENT,
    ),
    (
        "business",
        row("result.success false"),
        200,
        ok(success=False, response_code="LOAN_NOT_FOUND"),
        OutcomeKind.PERMANENT,
    ),
    ("retryable sub_code", row("error sub_code"), 200, err(code=50, sub_code="TRY_LATER"), OutcomeKind.TRANSIENT),
    ("done sub_code", row("error sub_code"), 200, err(code=50, sub_code="DUPLICATE_REQUEST"), OutcomeKind.SUCCESS),
    (
        "code 7 ban",
        row("code 7"),
        200,
        err(
            code=7,
            msg="App Call Limited",
            sub_code="accesscontrol.limited-by-app-access-count",
            sub_msg="This ban will last for 31062 more seconds",
        ),
        OutcomeKind.TRANSIENT,
        31062.0,
    ),
    ("code 7 plain", row("code 7"), 200, err(code=7, msg="App Call Limited"), OutcomeKind.TRANSIENT, 1.0),
    (
        "code 7 on 400",
        row("code 7"),
        400,
        err(code=7, sub_msg="This ban will last for 3 more seconds"),
        OutcomeKind.TRANSIENT,
        3.0,
    ),
    *[(f"code {c}", row("code 7"), 200, err(code=c, msg="limit"), OutcomeKind.TRANSIENT, 1.0) for c in (4, 5, 6, 8)],
    (
        "isp on 15",
        row("sub_code starting isp"),
        200,
        err(code=15, sub_code="isp.remote-service-timeout"),
        OutcomeKind.TRANSIENT,
    ),
    ("isp on 50", row("sub_code starting isp"), 200, err(code=50, sub_code="isp.unknown-error"), OutcomeKind.TRANSIENT),
    *[
        (f"isp on {c}", row("sub_code starting isp"), 200, err(code=c, sub_code="isp.x"), OutcomeKind.TRANSIENT)
        for c in (*range(24, 32), 40, 41, 43, 11)
    ],
    ("code 10", row("code 10"), 200, err(code=10, msg="Service Currently Unavailable"), OutcomeKind.TRANSIENT),
    *[
        (
            f"code {c}",
            row(f"codes {'11' if c in '111213' else '21'}"),
            200,
            err(code=int(c)),
            OutcomeKind.SYSTEMIC,
            None,
            cause,
        )
        for c, cause in SYSTEMIC_CODES.items()
        if c not in ("25", "29", "31")
    ],
    ("code 25", row("code 25"), 200, err(code=25, msg="Invalid Signature"), OutcomeKind.SYSTEMIC, None, "signature"),
    ("code 25 on 400", row("code 25"), 400, err(code=25), OutcomeKind.SYSTEMIC, None, "signature"),
    ("code 29", row("code 29"), 200, err(code=29, msg="Invalid App Key"), OutcomeKind.SYSTEMIC, None, "app_key"),
    (
        "code 31",
        row("code 31"),
        200,
        err(code=31, sub_code="isv.invalid-timestamp"),
        OutcomeKind.SYSTEMIC,
        None,
        "timestamp",
    ),
    *[
        (f"code {c}", row("codes 24"), 200, err(code=c, msg="refused"), OutcomeKind.PERMANENT)
        for c in (24, 26, 27, 28, 30, 40, 41, 43)
    ],
    ("isv", row("sub_code starting isv"), 200, err(code=50, sub_code="isv.invalid-parameter"), OutcomeKind.PERMANENT),
    (
        "other error",
        row("any other error_response"),
        200,
        err(code=15, msg="Remote service error"),
        OutcomeKind.PERMANENT,
    ),
]
# Rows about transport (no HTTP reply) are covered in tests/test_top_notifier.py over real sockets.
TRANSPORT_ROWS = {row("timeout"), row("TLS failure"), row("DNS failure")}


def _case(entry: tuple[Any, ...]) -> tuple[int, bytes, OutcomeKind, float | None, str | None]:
    _name, _row, status, body, *rest = entry
    kind = rest[0] if rest else OutcomeKind.TRANSIENT
    wait = rest[1] if len(rest) > 1 else None
    cause = rest[2] if len(rest) > 2 else None
    return status, body, kind, wait, cause


def test_every_documented_row_has_a_case() -> None:
    """Each row of TABLE is exercised by at least one case below or by a transport test."""
    covered = {entry[1] for entry in CASES} | TRANSPORT_ROWS
    assert covered == set(ROWS)


@pytest.mark.parametrize("entry", CASES, ids=[entry[0] for entry in CASES])
def test_outcome_table(entry: tuple[Any, ...]) -> None:
    """Each documented case classifies as its row says, with the suggested wait and the systemic cause."""
    status, body, kind, wait, cause = _case(entry)
    outcome = classify(status, body, policy=POLICY)
    assert outcome.kind is kind
    assert outcome.retry_after == wait
    assert outcome.cause == cause
    if kind is OutcomeKind.SUCCESS:
        return
    error = outcome.error("rid-1")
    assert error.request_id == "rid-1"
    assert isinstance(error, TransientDeliveryError) == (kind is not OutcomeKind.PERMANENT)
    assert isinstance(error, PermanentDeliveryError) == (kind is OutcomeKind.PERMANENT)
    assert isinstance(error, SystemicDeliveryError) == (kind is OutcomeKind.SYSTEMIC)
    if isinstance(error, SystemicDeliveryError):
        assert cause is not None
        assert (error.cause, error.remedy) == (cause, REMEDIES[cause])


def test_remedies_name_the_fix() -> None:
    """The remedies say what to change: the secret for a signature, the clock for a timestamp."""
    assert "LOANSTATE_APP_SECRET" in REMEDIES["signature"]
    assert "clock" in REMEDIES["timestamp"]
    assert "10 minutes" in REMEDIES["timestamp"]
    assert "LOANSTATE_APP_KEY" in REMEDIES["app_key"]
    assert set(SYSTEMIC_CODES.values()) <= set(REMEDIES)


def test_simplify_accepts_the_unwrapped_result_only_when_asked() -> None:
    """A bare result confirms only when simplify was asked for; the wrapped one always does."""
    bare = js({"result": {"success": True, "response_code": "SUCCESS"}})
    assert classify(200, bare, simplify=True).ok
    assert not classify(200, bare).ok
    assert classify(200, ok(success=True), simplify=True).ok


def test_redirect_names_the_location_without_a_signature() -> None:
    """A 3xx outcome names where it pointed, with any signature in that URL masked."""
    outcome = classify(307, b"", location="http://other-host/router/rest?app_key=k&sign=ABCDEF0123")
    assert "other-host" in outcome.reason
    assert "ABCDEF0123" not in outcome.reason


def test_bodies_are_inflated_within_the_cap() -> None:
    """gzip and deflate bodies inflate; past the cap (raw or inflated) is the transient too_large error."""
    body = ok(success=True)
    assert decode_body(gzip.compress(body), "gzip") == body
    assert decode_body(zlib.compress(body), "deflate") == body
    assert decode_body(body, None) == body
    bomb = gzip.compress(b"\0" * (8 << 20))
    for raw, encoding in ((bomb, "gzip"), (b"x" * ((1 << 20) + 1), None)):
        with pytest.raises(TransientDeliveryError) as caught:
            decode_body(raw, encoding)
        assert caught.value.code == TOO_LARGE
    for raw, encoding in ((b"not gzip", "gzip"), (body, "br")):
        with pytest.raises(TransientDeliveryError) as caught:
            decode_body(raw, encoding)
        assert caught.value.code == UNREADABLE


XML_DTD = '<?xml version="1.0" encoding="{enc}"?><!DOCTYPE r [<!ENTITY a "x">]><error_response><code>&a;</code></error_response>'  # noqa: E501


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-16-be", "latin-1"])
def test_xml_with_a_dtd_is_unreadable_in_any_encoding(encoding: str) -> None:
    """A DTD is refused whatever the document's encoding, UTF-16 included."""
    body = XML_DTD.format(enc=encoding.removesuffix("-le").removesuffix("-be")).encode(encoding)
    with pytest.raises(TransientDeliveryError, match="DTD") as caught:
        parse_response(body)
    assert caught.value.code == UNREADABLE


@pytest.mark.parametrize("encoding", ["rot13", "no-such-codec", "utf-7", "idna"])
def test_xml_declaring_an_unknown_encoding_is_unreadable(encoding: str) -> None:
    """An encoding Python or expat cannot use is the transient 'unreadable' error, never a LookupError."""
    body = f'<?xml version="1.0" encoding="{encoding}"?><error_response><code>7</code></error_response>'.encode()
    with pytest.raises(TransientDeliveryError) as caught:
        parse_response(body)
    assert caught.value.code == UNREADABLE
    assert classify(200, body).kind is OutcomeKind.TRANSIENT


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
codes = st.one_of(st.integers(-5, 60), st.text(max_size=4), st.none())
sub_codes = st.one_of(st.none(), st.sampled_from(["isp.a", "isv.b", "TRY_LATER", "DUPLICATE_REQUEST", ""]), st.text())
error_bodies = st.builds(
    lambda code, sub, sub_msg: err(code=code, sub_code=sub, sub_msg=sub_msg),
    codes,
    sub_codes,
    st.none() | st.text(max_size=60) | st.integers().map(lambda n: f"This ban will last for {n} more seconds"),
)
result_bodies = st.builds(
    lambda wrapper, result: js({wrapper: {"result": result}} if wrapper else {"result": result}),
    st.sampled_from([WRAPPER, "other_response", ""]),
    st.fixed_dictionaries({}, optional={"success": json_values, "response_code": json_values, "sub_code": json_values}),
)
replies = error_bodies | result_bodies | st.binary(max_size=100) | json_values.map(js)


@given(status=st.integers(100, 599), body=replies, simplify=st.booleans(), header=st.none() | st.text(max_size=12))
def test_every_reply_gets_exactly_one_kind(status: int, body: bytes, simplify: bool, header: str | None) -> None:
    """Any status, body and header classify without raising into one kind whose error matches that kind."""
    outcome = classify(status, body, policy=POLICY, simplify=simplify, retry_after=header, location=header)
    assert outcome.kind in set(OutcomeKind)
    assert (outcome.cause is not None) == (outcome.kind is OutcomeKind.SYSTEMIC)
    if outcome.retry_after is not None:
        assert outcome.retry_after >= 0
    if outcome.kind is OutcomeKind.SUCCESS:
        assert 200 <= status < 300 or status == 400
        return
    error = outcome.error("r")
    kinds = [isinstance(error, SystemicDeliveryError), isinstance(error, PermanentDeliveryError)]
    assert kinds == [outcome.kind is OutcomeKind.SYSTEMIC, outcome.kind is OutcomeKind.PERMANENT]


@given(code=st.integers(-5, 60) | st.text(max_size=3), rest=st.text(max_size=20))
def test_an_isp_sub_code_is_never_permanent(code: int | str, rest: str) -> None:
    """Whatever the code, a sub_code starting 'isp.' is transient (the platform's fault)."""
    outcome = classify(200, err(code=code, sub_code="isp." + rest))
    assert outcome.kind is OutcomeKind.TRANSIENT


def test_the_docs_show_the_same_table() -> None:
    """docs/delivering.md shows every row of TABLE, in order, word for word (one table in code and docs)."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "delivering.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    shown = [line for line in lines if any(line.startswith(f"| {r.case} |") for r in TABLE)]
    expected = [f"| {r.case} | {r.outcome} | {r.wait} | {r.source} |".replace("|  |", "| |") for r in TABLE]
    normalise = [line.replace("**", "") for line in shown]
    assert normalise == expected
