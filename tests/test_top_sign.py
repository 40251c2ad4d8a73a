"""Signing open-platform requests: the public vector, derived vectors, and the properties of sign/verify."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from loanstate import InvalidConfiguration
from loanstate.top import SIGN_METHODS, Secret, sign, signing_string, verify

# The public md5 vector from the reference (a public Q&A thread, verified there).
PUBLIC_PARAMS = {
    "app_key": "test",
    "fields": "nick",
    "format": "xml",
    "method": "taobao.user.seller.get",
    "session": "test",
    "sign_method": "md5",
    "timestamp": "2013-05-06 13:52:03",
    "v": "2.0",
}

# Derived vectors, cross-checked with `openssl dgst -md5|-sha256 -hmac KEY` over the
# concatenated string: Chinese text in the secret and in a business value.
DERIVED_SECRET = "密钥secret"
DERIVED_PARAMS = {
    "app_key": "12345678",
    "format": "json",
    "method": "alibaba.finance.xfd.loan.change.notify",
    "param_xfd_loan_change_external_request": (
        '{"after_status":"OVERDUE","before_status":"NEW","change_time":"2024-01-01 00:00:00",'
        '"institution_loan_no":"借据-001","loan_apply_no":"FI123123121","request_id":"123123131"}'
    ),
    "sign_method": "hmac",
    "timestamp": "2024-01-01 08:00:00",
    "v": "2.0",
}
DERIVED = {
    "md5": "2FF3DD499951591000AA1F4771D9E12B",
    "hmac": "6CE07D46E3EA01E75306FB0A877133E3",
    "hmac-sha256": "F52AC4E92732229C24ED1937534AE63D5A0097FDC064A5528219D3B8999DD5A9",
}

keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda k: k.strip() != "" and k != "sign"
)
values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30).filter(
    lambda v: v.strip() != ""
)
param_sets = st.dictionaries(keys, values, min_size=1, max_size=8)
methods = st.sampled_from(sorted(SIGN_METHODS))
secrets = st.text(min_size=1, max_size=20)


def test_public_md5_vector() -> None:
    """The published md5 example signs to 72CB4D809B375A54502C09360D879C64."""
    assert sign(PUBLIC_PARAMS, "test", "md5") == "72CB4D809B375A54502C09360D879C64"


@pytest.mark.parametrize("method", sorted(DERIVED))
def test_derived_vectors_with_chinese_text(method: str) -> None:
    """md5, HMAC-MD5 and HMAC-SHA256 match independently computed digests, UTF-8 throughout."""
    assert sign(DERIVED_PARAMS, DERIVED_SECRET, method) == DERIVED[method]


def test_blank_parameters_and_sign_are_not_signed() -> None:
    """Empty and whitespace-only values, blank keys and an existing sign leave the signature unchanged."""
    noisy = {**PUBLIC_PARAMS, "partner_id": "", "target_app_key": "  \t", " ": "x", "sign": "ABC"}
    assert sign(noisy, "test", "md5") == "72CB4D809B375A54502C09360D879C64"
    assert signing_string(noisy) == signing_string(PUBLIC_PARAMS)


def test_unknown_sign_method_is_refused() -> None:
    """An unsupported sign method raises InvalidConfiguration naming it."""
    with pytest.raises(InvalidConfiguration, match="sha1"):
        sign(PUBLIC_PARAMS, "test", "sha1")


@given(params=param_sets, secret=secrets, method=methods, data=st.data())
def test_parameter_order_never_changes_the_signature(
    params: dict[str, str], secret: str, method: str, data: st.DataObject
) -> None:
    """The same parameters in any insertion order sign the same."""
    shuffled = dict(data.draw(st.permutations(list(params.items()))))
    assert sign(shuffled, secret, method) == sign(params, secret, method)


@given(params=param_sets)
def test_signing_string_is_byte_wise_sorted_utf8(params: dict[str, str]) -> None:
    """The signed bytes are key+value pairs sorted by the keys' UTF-8 bytes ('B' before 'a', ASCII before 'é')."""
    expected = b"".join(k.encode() + params[k].encode() for k in sorted(params, key=str.encode))
    assert signing_string(params) == expected


def test_signing_order_example() -> None:
    """Upper case sorts before lower case and ASCII before non-ASCII, as bytes do."""
    assert signing_string({"é": "3", "a": "2", "B": "1", "_": "x"}) == "B1_xa2é3".encode()


@given(params=param_sets, secret=secrets, method=methods, data=st.data())
def test_any_changed_character_changes_the_signature(
    params: dict[str, str], secret: str, method: str, data: st.DataObject
) -> None:
    """Changing one character of one value changes the signature."""
    key = data.draw(st.sampled_from(sorted(params)))
    value = params[key]
    at = data.draw(st.integers(0, len(value) - 1))
    replacement = data.draw(st.characters(codec="utf-8", exclude_categories=["Cs"]).filter(lambda c: c != value[at]))
    changed = value[:at] + replacement + value[at + 1 :]
    assume(changed.strip())
    assert sign({**params, key: changed}, secret, method) != sign(params, secret, method)


@given(params=param_sets, secret=secrets, other=secrets, method=methods)
def test_verify_accepts_what_sign_produced(params: dict[str, str], secret: str, other: str, method: str) -> None:
    """verify() accepts a request signed with the same secret (any letter case) and refuses another secret."""
    signed = {**params, "sign_method": method}
    signed["sign"] = sign(signed, secret, method)
    assert verify(signed, secret)
    assert verify({**signed, "sign": signed["sign"].lower()}, secret)
    if other != secret:
        assert not verify(signed, other)


@given(params=param_sets, secret=secrets, method=methods, data=st.data())
def test_verify_rejects_every_single_field_tamper(
    params: dict[str, str], secret: str, method: str, data: st.DataObject
) -> None:
    """Changing, adding or removing any one signed field makes verification fail."""
    signed = {**params, "sign_method": method}
    signed["sign"] = sign(signed, secret, method)
    for key in [k for k in signed if k != "sign"]:
        tampered = dict(signed)
        tampered[key] = signed[key] + data.draw(values, label=f"suffix for {key}")
        assert not verify(tampered, secret), key
        removed = {k: v for k, v in signed.items() if k != key}
        if key != "sign_method" or method != "md5":  # an absent sign_method means md5
            assert not verify(removed, secret), key
    extra = data.draw(keys.filter(lambda k: k not in signed), label="extra key")
    assert not verify({**signed, extra: "x"}, secret)


def test_verify_refuses_missing_or_unknown_method_or_sign() -> None:
    """No sign, an unknown sign_method or a non-hex sign never verify."""
    signed = {**PUBLIC_PARAMS, "sign": "72CB4D809B375A54502C09360D879C64"}
    assert verify(signed, "test")
    assert not verify(PUBLIC_PARAMS, "test")
    assert not verify({**signed, "sign_method": "sha1"}, "test")
    assert not verify({**signed, "sign": "签名"}, "test")


def test_a_secret_utf8_cannot_encode_is_refused_without_showing_it() -> None:
    """A secret with a lone surrogate raises InvalidConfiguration that neither shows nor chains the secret."""
    secret = "s3cr3t-\ud800-tail"
    for call in (lambda: sign(PUBLIC_PARAMS, secret, "md5"), lambda: verify({**PUBLIC_PARAMS, "sign": "AB"}, secret)):
        with pytest.raises(InvalidConfiguration) as info:
            call()
        error = info.value
        assert error.value == "<hidden>"
        assert "s3cr3t" not in str(error)
        assert error.__cause__ is None
        assert error.__suppress_context__


def test_exact_verification_refuses_a_lower_case_signature() -> None:
    """As the platform compares: exact upper-case hex passes, the same digest in lower case does not."""
    signed = {**PUBLIC_PARAMS, "sign": "72CB4D809B375A54502C09360D879C64"}
    lower = {**PUBLIC_PARAMS, "sign": "72cb4d809b375a54502c09360d879c64"}
    assert verify(signed, "test", exact=True)
    assert not verify(lower, "test", exact=True)
    assert verify(lower, "test")  # the lenient default


@given(tail=st.text(), method=st.sampled_from(sorted(SIGN_METHODS)))
def test_a_secret_object_signs_like_its_text_and_never_renders(tail: str, method: str) -> None:
    """Secret(text) signs exactly as the text does, and its repr, str and format never show the text."""
    secret = "s3cr3t-" + tail
    try:
        secret.encode("utf-8")
    except UnicodeEncodeError:
        assume(False)
    wrapped = Secret(secret)
    assert sign(PUBLIC_PARAMS, wrapped, method) == sign(PUBLIC_PARAMS, secret, method)
    assert Secret(wrapped) == wrapped
    assert wrapped.reveal() == secret
    for shown in (repr(wrapped), str(wrapped), f"{wrapped}", repr([wrapped]), repr({"k": wrapped})):
        assert "Secret('***')" in shown
        assert secret not in shown


def test_a_secret_refuses_blank_or_non_text_values_and_pickling() -> None:
    """Blank, non-text or unencodable secrets raise InvalidConfiguration without the value; pickling refuses."""
    import pickle

    for bad in ("", "   ", None, 123, b"bytes", "x\ud800"):
        with pytest.raises(InvalidConfiguration) as info:
            Secret(bad)  # type: ignore[arg-type]
        assert info.value.value == "<hidden>"
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(Secret("s3cr3t"))
