"""Reading the gateway's replies and classifying every outcome (loanstate.top.parse_response / classify)."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loanstate import InvalidConfiguration, TransientDeliveryError
from loanstate.top import (
    UNREADABLE,
    OutcomeKind,
    OutcomePolicy,
    TopResponse,
    classify,
    parse_response,
)

WRAPPER = "alibaba_finance_xfd_loan_change_notify_response"
RESULT = {"response_code": "SUCCESS", "response_message": "成功", "trace_id": "tr-1", "success": True}
EXPECTED_RESULT = TopResponse(
    kind="result",
    success=True,
    response_code="SUCCESS",
    response_message="成功",
    trace_id="tr-1",
    gateway_request_id="gw-1",
)


def js(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def error_json(**fields: Any) -> bytes:
    return js({"error_response": {**fields, "request_id": "gw-1"}})


def test_json_result_wrapped_and_simplified() -> None:
    """The result parses the same with the <method>_response wrapper and without it (simplify)."""
    wrapped = js({WRAPPER: {"result": RESULT, "request_id": "gw-1"}})
    simplified = js({"result": RESULT, "request_id": "gw-1"})
    assert parse_response(wrapped) == attrs.evolve(EXPECTED_RESULT, wrapper=WRAPPER)
    assert parse_response(simplified) == EXPECTED_RESULT


def test_sub_code_result_shape() -> None:
    """The sibling APIs' sub_code/sub_msg result shape is read as response_code/response_message."""
    body = js({WRAPPER: {"result": {"sub_code": "SUCCESS", "sub_msg": "成功", "trace_id": "tr-1", "success": True}}})
    parsed = parse_response(body)
    assert (parsed.response_code, parsed.response_message, parsed.success) == ("SUCCESS", "成功", True)


def test_xml_result_and_error() -> None:
    """XML replies parse into the same values as JSON, booleans and codes included."""
    result = (
        f'<?xml version="1.0" encoding="utf-8" ?><{WRAPPER}><result><response_code>SUCCESS</response_code>'
        f"<response_message>成功</response_message><trace_id>tr-1</trace_id><success>true</success></result>"
        f"<request_id>gw-1</request_id></{WRAPPER}>"
    ).encode()
    assert parse_response(result) == attrs.evolve(EXPECTED_RESULT, wrapper=WRAPPER)
    error = (
        b"<error_response><code>50</code><msg>Remote service error</msg><sub_code>isv.invalid-parameter</sub_code>"
        b"<request_id>gw-2</request_id></error_response>"
    )
    parsed = parse_response(error, content_type="text/xml;charset=UTF-8")
    assert (parsed.kind, parsed.code, parsed.sub_code, parsed.gateway_request_id) == (
        "error",
        "50",
        "isv.invalid-parameter",
        "gw-2",
    )


def test_error_response() -> None:
    """error_response fields are read with codes as text."""
    parsed = parse_response(error_json(code=50, msg="Remote service error", sub_code="isv.x", sub_msg="非法参数"))
    assert parsed == TopResponse(
        kind="error",
        code="50",
        message="Remote service error",
        sub_code="isv.x",
        sub_message="非法参数",
        gateway_request_id="gw-1",
    )


def ok(**result: Any) -> bytes:
    return js({WRAPPER: {"result": result, "request_id": "gw-1"}})


def test_retry_after_header_and_code_10_wait() -> None:
    """A Retry-After header sets the wait on 503/429; unavailable_wait sets it for code 10."""
    assert classify(503, b"", retry_after="7").retry_after == 7.0
    assert classify(429, b"", retry_after="Wed, 21 Oct 2015 07:28:00 GMT").retry_after == 1.0
    for header in ("inf", "nan", "-5"):  # not a wait: the 503 falls back to the caller's backoff
        assert classify(503, b"", retry_after=header).retry_after is None
    endless = error_json(code=7, sub_msg="This ban will last for " + "9" * 400 + " more seconds")
    assert classify(200, endless).retry_after == 1.0  # an overflowing figure is no wait either
    policy = OutcomePolicy(unavailable_wait=30.0)
    assert classify(200, error_json(code=10), policy=policy).retry_after == 30.0


def test_errors_keep_every_gateway_value() -> None:
    """The delivery error carries request_id, trace_id, codes and messages from the reply."""
    outcome = classify(
        200, ok(success=False, response_code="LOAN_NOT_FOUND", response_message="借据不存在", trace_id="t9")
    )
    error = outcome.error("rid-9")
    assert (error.request_id, error.trace_id, error.response_code, error.response_message, error.http_status) == (
        "rid-9",
        "t9",
        "LOAN_NOT_FOUND",
        "借据不存在",
        200,
    )
    platform = classify(200, error_json(code=50, msg="Remote service error", sub_code="isv.x", sub_msg="非法")).error(
        "r"
    )
    assert (
        platform.code,
        platform.code_message,
        platform.sub_code,
        platform.sub_message,
        platform.gateway_request_id,
    ) == (
        "50",
        "Remote service error",
        "isv.x",
        "非法",
        "gw-1",
    )
    assert "isv.x" in str(platform)


def test_xml_with_a_dtd_is_refused() -> None:
    """An XML reply declaring entities (a billion-laughs bomb) is unreadable, not expanded."""
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(f'<!ENTITY a{i} "{"&a;" * 10}">' for i in range(5))
    bomb = f'<?xml version="1.0"?><!DOCTYPE r [{entities}]><error_response><code>&a4;</code></error_response>'
    with pytest.raises(TransientDeliveryError, match="DTD"):
        parse_response(bomb.encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "error_response": json_values,
        WRAPPER: st.fixed_dictionaries({}, optional={"result": json_values, "request_id": json_values}),
        "result": json_values,
        "code": json_values,
    },
)
xml_docs = st.builds(
    lambda root, children: f"<{root}>" + "".join(f"<{t}>{v}</{t}>" for t, v in children) + f"</{root}>",
    st.sampled_from(["error_response", WRAPPER, "result", "x"]),
    st.lists(
        st.tuples(
            st.sampled_from(["result", "code", "success", "response_code", "sub_code", "request_id"]),
            st.text(alphabet="<>&ab1 /", max_size=8),
        ),
        max_size=5,
    ),
)
bodies = st.binary(max_size=200) | json_values.map(js) | shaped.map(js) | xml_docs.map(str.encode)


@given(body=bodies, content_type=st.none() | st.sampled_from(["application/json", "text/xml", "text/html"]))
def test_parser_is_total(body: bytes, content_type: str | None) -> None:
    """Any bytes parse to a TopResponse or raise the transient 'unreadable' error, nothing else."""
    seen: str | None
    try:
        seen = parse_response(body, content_type=content_type).kind
    except TransientDeliveryError as exc:
        seen = exc.code
    assert seen in ("result", "error", UNREADABLE)


@given(body=bodies, status=st.integers(100, 599))
def test_classify_never_raises(body: bytes, status: int) -> None:
    """classify() turns any HTTP status and body into one of the four outcomes."""
    assert classify(status, body).kind in set(OutcomeKind)


@pytest.mark.parametrize(
    "body",
    [b"<a>" * 5000 + b"</a>" * 5000, b"[" * 100_000 + b"]" * 100_000],
    ids=["xml", "json"],
)
def test_deeply_nested_reply_is_unreadable(body: bytes) -> None:
    """A reply nested deeper than Python's recursion limit is the transient 'unreadable' error, not a crash."""
    with pytest.raises(TransientDeliveryError) as caught:
        parse_response(body)
    assert caught.value.code == UNREADABLE
    assert classify(200, body).kind is OutcomeKind.TRANSIENT


def test_policy_settings_are_checked() -> None:
    """A bare string of codes (a set of its letters), non-text codes or a wait that is no finite time are refused."""
    with pytest.raises(InvalidConfiguration, match="'TRY_LATER'"):
        OutcomePolicy(retryable="TRY_LATER")
    with pytest.raises(InvalidConfiguration, match="business codes"):
        OutcomePolicy(already_done={7})  # type: ignore[arg-type]
    for wait in (-1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidConfiguration, match="rate_limit_wait"):
            OutcomePolicy(rate_limit_wait=wait)
        with pytest.raises(InvalidConfiguration, match="unavailable_wait"):
            OutcomePolicy(unavailable_wait=wait)
    assert OutcomePolicy(retryable=["A", "B"]).retryable == frozenset({"A", "B"})
