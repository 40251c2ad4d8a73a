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
from typing import Any, Final, Literal, final

from loanstate._errors import InvalidConfiguration

__all__ = ["SIGN_METHODS", "Secret", "SignMethod", "sendable", "sign", "signing_string", "verify"]

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
#: The sign methods the platform accepts, by their ``sign_method`` value.
SIGN_METHODS: Final[frozenset[str]] = frozenset({"md5", "hmac", "hmac-sha256"})


@final
class Secret:
    """An app secret that never renders: ``repr``/``str`` show ``Secret('***')``.

    Hold credentials in one so that tracebacks rendered with locals,
    debuggers and loggers never show them; :func:`sign` unwraps it at the
    signing call only. Equal to another :class:`Secret` with the same text
    (compared in constant time); not picklable, so it never lands on disk by
    accident. Raises :class:`~loanstate.InvalidConfiguration` for a value that
    is not non-blank text UTF-8 can encode (without showing it).
    """

    __slots__ = ("_key",)

    def __init__(self, value: str | Secret, *, setting: str = "app_secret") -> None:
        if isinstance(value, Secret):
            self._key: bytes = value._key
            return
        if not isinstance(value, str) or not value.strip():
            raise InvalidConfiguration(setting, "<hidden>", "must be a non-blank string")
        try:
            self._key = value.encode("utf-8")
        except UnicodeEncodeError:
            # Not chained: a UnicodeEncodeError holds the whole secret in its .object.
            raise InvalidConfiguration(setting, "<hidden>", "must be text that UTF-8 can encode") from None

    def reveal(self) -> str:
        """The secret's text: call it only where the secret is used, never to show it."""
        return self._key.decode("utf-8")

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a Secret is not picklable")


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


def _secret_bytes(secret: str | Secret) -> bytes:
    if isinstance(secret, Secret):
        return secret._key  # the signing call is the one place a secret is unwrapped
    try:
        return secret.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        # Not chained: a UnicodeEncodeError holds the whole secret in its .object.
        raise InvalidConfiguration("secret", "<hidden>", "must be text that UTF-8 can encode") from None


def sign(params: Mapping[str, str], secret: str | Secret, sign_method: str) -> str:
    """The ``sign`` value for ``params``: upper-case hex, as the gateway expects.

    ``params`` holds every system and business parameter as text; a ``sign``
    key, blank keys and blank values are ignored. Raises
    :class:`~loanstate.InvalidConfiguration` for an unknown ``sign_method``
    or a secret that is not UTF-8-encodable text (its value is never shown).
    """
    _check_method(sign_method)
    return _digest(signing_string(params), _secret_bytes(secret), sign_method)


def verify(params: Mapping[str, str], secret: str | Secret, *, exact: bool = False) -> bool:
    """Whether ``params["sign"]`` is the signature of the other parameters under ``secret``.

    The method is ``params["sign_method"]`` (``md5`` when absent, as on the
    platform); an unknown method, a missing or wrong signature give ``False``.
    The comparison takes constant time and ignores the signature's letter
    case, unless ``exact`` (as the platform compares: upper-case hex only).
    """
    given = params.get("sign")
    method = params.get("sign_method") or "md5"
    if not given or method not in SIGN_METHODS:
        return False
    expected = _digest(signing_string(params), _secret_bytes(secret), method)
    shown = given if exact else given.upper()
    return hmac.compare_digest(expected.encode("ascii"), shown.encode("utf-8", "replace"))
