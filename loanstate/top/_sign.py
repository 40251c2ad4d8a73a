"""Signing open-platform requests, exactly as the platform's SDKs do (``signTopRequest``).

Every parameter except ``sign`` whose key and value are both non-blank takes
part; the pairs are sorted by key (code-point order, which is UTF-8 byte
order), concatenated as ``key1value1key2value2...`` from the raw values and
encoded as UTF-8. ``md5`` digests ``secret + string + secret``, ``hmac`` is
HMAC-MD5 and ``hmac-sha256`` HMAC-SHA256, both keyed with the secret. The
signature is the digest in upper-case hex. Pure functions: no clock, no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final, Literal

from loanstate._errors import InvalidConfiguration

__all__ = ["SIGN_METHODS", "SignMethod", "sendable", "sign", "signing_string", "verify"]

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
#: The sign methods the platform accepts, by their ``sign_method`` value.
SIGN_METHODS: Final[frozenset[str]] = frozenset({"md5", "hmac", "hmac-sha256"})


def sendable(key: str, value: str) -> bool:
    """Whether a parameter is signed and sent: key and value both have a non-space character."""
    # str.isspace() is False for "", hence the explicit emptiness test.
    return bool(key) and bool(value) and not key.isspace() and not value.isspace()


@functools.lru_cache(maxsize=256)
def _signed_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The keys that take part, sorted; requests of one client repeat the same few key sets."""
    return tuple(sorted(k for k in keys if k and k != "sign" and not k.isspace()))


def signing_string(params: Mapping[str, str]) -> bytes:
    """The exact bytes the signature covers (without the secret)."""
    # The sorted key order is cached per key set and the blank-value test
    # inlined: this runs for every request, and sorting was a third of it.
    return "".join([k + v for k in _signed_order(tuple(params)) if (v := params[k]) and not v.isspace()]).encode(
        "utf-8"
    )


def _check_method(sign_method: str) -> None:
    if sign_method not in SIGN_METHODS:
        raise InvalidConfiguration("sign_method", sign_method, f"expected one of {', '.join(sorted(SIGN_METHODS))}")


def _digest(data: bytes, key: bytes, sign_method: str) -> str:
    if sign_method == "hmac-sha256":
        raw = hmac.digest(key, data, "sha256")
    elif sign_method == "hmac":
        raw = hmac.digest(key, data, "md5")
    else:
        raw = hashlib.md5(key + data + key, usedforsecurity=False).digest()
    return raw.hex().upper()


def _secret_bytes(secret: str) -> bytes:
    try:
        return secret.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        # Not chained: a UnicodeEncodeError holds the whole secret in its .object.
        raise InvalidConfiguration("secret", "<hidden>", "must be text that UTF-8 can encode") from None


def sign(params: Mapping[str, str], secret: str, sign_method: str) -> str:
    """The ``sign`` value for ``params``: upper-case hex, as the gateway expects.

    ``params`` holds every system and business parameter as text; a ``sign``
    key, blank keys and blank values are ignored. Raises
    :class:`~loanstate.InvalidConfiguration` for an unknown ``sign_method``
    or a secret that is not UTF-8-encodable text (its value is never shown).
    """
    _check_method(sign_method)
    return _digest(signing_string(params), _secret_bytes(secret), sign_method)


def verify(params: Mapping[str, str], secret: str) -> bool:
    """Whether ``params["sign"]`` is the signature of the other parameters under ``secret``.

    The method is ``params["sign_method"]`` (``md5`` when absent, as on the
    platform); an unknown method, a missing or wrong signature give ``False``.
    The comparison ignores the signature's letter case and takes constant time.
    """
    given = params.get("sign")
    method = params.get("sign_method") or "md5"
    if not given or method not in SIGN_METHODS:
        return False
    expected = _digest(signing_string(params), _secret_bytes(secret), method)
    return hmac.compare_digest(expected, given.upper().encode("ascii", "replace").decode("ascii"))
