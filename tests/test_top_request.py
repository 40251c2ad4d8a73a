"""Encoding a change event as a signed open-platform request (loanstate.top.build_request)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version
from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loanstate import InvalidConfiguration, LoanChangeEvent, default_machine
from loanstate.testing import change_events, change_times
from loanstate.top import (
    API_METHOD,
    BUSINESS_PARAM,
    SIGN_METHODS,
    build_request,
    encode_form,
    partner_id,
    redact,
    verify,
)

SECRET = "app-secret-秘密"
methods = st.sampled_from(sorted(SIGN_METHODS))


@given(event=change_events(), now=change_times(), method=methods, fmt=st.sampled_from(["json", "xml"]))
def test_request_shape_and_signature(event: LoanChangeEvent, now: datetime, method: str, fmt: str) -> None:
    """Every system parameter and the signature in the query, only the event's JSON in the body, all verifiable."""
    request = build_request(event, app_key="key", app_secret=SECRET, now=now, sign_method=method, format=fmt)
    query = dict(parse_qsl(request.query_string(), strict_parsing=True))
    body = dict(parse_qsl(request.body().decode("ascii"), strict_parsing=True))
    assert query == {
        "app_key": "key",
        "format": fmt,
        "method": API_METHOD,
        "partner_id": partner_id(),
        "sign_method": method,
        "timestamp": now.astimezone(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S"),
        "v": "2.0",
        "sign": query["sign"],
    }
    assert set(body) == {BUSINESS_PARAM}
    assert body[BUSINESS_PARAM] == event.to_top_param()
    assert verify({**query, **body}, SECRET, exact=True)
    assert query["sign"] == query["sign"].upper()
    assert request.params() == {**query, **body}
    assert request.request_id == event.request_id


@given(key=st.text(min_size=1), value=st.text(min_size=1))
def test_form_encoding_matches_urllib(key: str, value: str) -> None:
    """encode_form percent-encodes exactly like urllib.parse.quote(safe=""), and skips blank parameters."""
    expected = f"{quote(key, safe='')}={quote(value, safe='')}" if key.strip() and value.strip() else ""
    assert encode_form({key: value}) == expected


def test_timestamp_is_beijing_time() -> None:
    """The timestamp is the injected instant written in UTC+8."""
    event = default_machine().change(
        loan_apply_no="FI1", before="NEW", after="OVERDUE", at=datetime(2024, 1, 1, tzinfo=UTC)
    )
    request = build_request(event, app_key="k", app_secret="s", now=datetime(2023, 12, 31, 20, 30, 5, 999, tzinfo=UTC))
    assert request.query["timestamp"] == "2024-01-01 04:30:05"
    assert request.query["sign_method"] == "hmac-sha256"
    assert request.query["format"] == "json"


def test_partner_id_names_loanstate_and_its_version() -> None:
    """partner_id is loanstate-<installed version>; an explicit partner overrides it."""
    assert partner_id() == f"loanstate-{version('loanstate')}"
    event = default_machine().change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=datetime.now(UTC))
    assert (
        build_request(event, app_key="k", app_secret="s", now=datetime.now(UTC), partner="acme-1").query["partner_id"]
        == "acme-1"
    )


def test_optional_system_parameters() -> None:
    """session, target_app_key and simplify are sent when set; blank ones are neither signed nor sent."""
    event = default_machine().change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=datetime.now(UTC))
    now = datetime.now(UTC)
    with_all = build_request(
        event, app_key="k", app_secret="s", now=now, session="sess", target_app_key="t", simplify=True
    )
    assert {"session": "sess", "target_app_key": "t", "simplify": "true"}.items() <= with_all.query.items()
    blank = build_request(event, app_key="k", app_secret="s", now=now, session="  ", target_app_key="", partner=" ")
    assert not {"session", "target_app_key", "partner_id", "simplify"} & set(blank.query)
    assert "sign" in blank.query
    assert verify(blank.params(), "s")


def test_repr_never_shows_the_signature() -> None:
    """A request's repr names the method and request_id but not the signature; redact() masks it in a URL."""
    event = default_machine().change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=datetime.now(UTC))
    request = build_request(event, app_key="k", app_secret="s", now=datetime.now(UTC))
    signature = request.query["sign"]
    assert signature not in repr(request)
    assert event.request_id in repr(request)
    assert signature in request.query_string()
    assert "sign" not in request.form
    url = f"https://gw/router/rest?{request.query_string()}"
    assert signature not in redact(url)
    assert "sign=<hidden>" in redact(url)
    assert redact("partner_sign=X&design=Y") == "partner_sign=X&design=Y"


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"sign_method": "sha1"}, "sign_method"),
        ({"format": "yaml"}, "format"),
        ({"now": datetime(2024, 1, 1)}, "clock"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, object], setting: str) -> None:
    """An unknown sign method or format, or a naive clock reading, raise InvalidConfiguration."""
    event = default_machine().change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=datetime.now(UTC))
    kwargs: dict[str, object] = {"app_key": "k", "app_secret": "s", "now": datetime.now(UTC), **options}
    with pytest.raises(InvalidConfiguration) as info:
        build_request(event, **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting
