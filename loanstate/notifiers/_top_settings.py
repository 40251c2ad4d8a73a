"""The one settings object of both TOP notifiers: :class:`TopSettings`, checked at construction.

Every setting is checked for type and value here, so a notifier that was
built can send: a wrong one raises :class:`~loanstate.InvalidConfiguration`
naming it (the secret's value is never shown). ``str`` subclasses such as
``StrEnum`` members are taken as their plain string value.
"""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import httpx2

from loanstate._errors import InvalidConfiguration
from loanstate.top import DEFAULT_POLICY, FORMATS, SIGN_METHODS, OutcomePolicy, Secret

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "PRODUCTION_URL",
    "Clock",
    "TopSettings",
    "check_url",
    "tls_context",
    "tls_settings_error",
]

#: The platform's production gateway.
PRODUCTION_URL: Final = "https://gw.api.taobao.com/router/rest"
#: As the platform's Java SDK: 15 s to connect, 30 s for each read (and write, and a free connection).
DEFAULT_TIMEOUT: Final = httpx2.Timeout(30.0, connect=15.0)
#: Seconds that bound one whole ``send()``: connect, write and every read together.
DEFAULT_DEADLINE: Final = 45.0

Clock = Callable[[], datetime]
_MAX_TEXT: Final = 512


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain(value: str) -> str:
    # A str subclass (a StrEnum member) is taken as its string value.
    return value if type(value) is str else str.__str__(value)


def check_url(url: object) -> str:
    """``url`` if it is HTTPS, or HTTP to a loopback address, without query, fragment, spaces or control characters."""
    if not isinstance(url, str):
        raise InvalidConfiguration("url", url, "expected a string such as " + PRODUCTION_URL)
    url = _plain(url)
    if len(url) > 2048 or any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidConfiguration("url", url[:100], "must not hold spaces, newlines or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise InvalidConfiguration("url", url, "not a valid URL (the port must be a number from 0 to 65535)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConfiguration("url", url, "expected an http(s) URL such as " + PRODUCTION_URL)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise InvalidConfiguration("url", url, "HTTPS is required except for loopback addresses")
    if "?" in url or "#" in url:  # even an empty one: the query string is appended after a "?"
        raise InvalidConfiguration("url", url, "must not carry a query string or fragment")
    if parts.username is not None or parts.password is not None:
        raise InvalidConfiguration("url", parts.hostname, "must not carry credentials")
    return url


def _text(setting: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidConfiguration(setting, value, "must be a non-blank string" + (" or None" if optional else ""))
    value = _plain(value)
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise InvalidConfiguration(setting, value[:60], f"must be printable text of at most {_MAX_TEXT} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        raise InvalidConfiguration(setting, ascii(value[:60]), "must be text that UTF-8 can encode") from None
    return value


def _seconds(setting: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise InvalidConfiguration(setting, value, "must be a positive, finite number of seconds")
    return float(value)


def _timeout(value: object) -> httpx2.Timeout:
    if isinstance(value, httpx2.Timeout):
        for step, seconds in value.as_dict().items():
            if seconds is not None:
                _seconds(f"timeout.{step}", seconds)
        return value
    return httpx2.Timeout(_seconds("timeout", value))


def _choice(setting: str, value: object, choices: frozenset[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidConfiguration(setting, value, f"expected one of {', '.join(sorted(choices))}")
    return _plain(value)


def _sign_method(value: object) -> str:
    return _choice("sign_method", value, SIGN_METHODS)


def _format(value: object) -> str:
    return _choice("format", value, FORMATS)


def _app_key(value: object) -> str:
    return _text("app_key", value, optional=False) or ""  # never "": a blank key is refused


def _session(value: object) -> str | None:
    return _text("session", value, optional=True)


def _target_app_key(value: object) -> str | None:
    return _text("target_app_key", value, optional=True)


def _partner(value: object) -> str | None:
    return _text("partner", value, optional=True)


def _deadline(value: object) -> float:
    return _seconds("deadline", value)


def _instance(setting: str, kinds: tuple[type, ...], what: str) -> Callable[[Any, Any, Any], None]:
    def check(_inst: Any, _attribute: Any, value: Any) -> None:
        if not isinstance(value, kinds):
            raise InvalidConfiguration(setting, value, f"expected {what}")

    return check


def _clock(value: object) -> Clock | None:
    if value is not None and not callable(value):
        raise InvalidConfiguration("clock", value, "expected a function returning an aware datetime, or None")
    return value


def _verify(value: object) -> ssl.SSLContext | str | bool:
    if isinstance(value, str):
        return _plain(value)
    if not isinstance(value, ssl.SSLContext | bool):
        raise InvalidConfiguration("verify", value, "expected a bool, a CA bundle path or an ssl.SSLContext")
    return value


def _cert(value: object) -> str | tuple[str, str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value
    raise InvalidConfiguration("cert", value, "expected a certificate file, (certfile, keyfile) or None")


def _proxy(value: object) -> str | httpx2.Proxy | None:
    if value is None or isinstance(value, httpx2.Proxy):
        return value
    if not isinstance(value, str) or not value.isprintable() or any(c.isspace() for c in value) or "://" not in value:
        raise InvalidConfiguration("proxy", value, "expected a proxy URL such as http://proxy:3128, or None")
    return _plain(value)


def _limits(value: object) -> httpx2.Limits:
    if value is None:
        return httpx2.Limits(max_connections=100, max_keepalive_connections=100)
    if not isinstance(value, httpx2.Limits):
        raise InvalidConfiguration("limits", value, "expected an httpx2.Limits or None")
    if value.max_connections is not None and value.max_connections < 1:
        raise InvalidConfiguration("limits.max_connections", value.max_connections, "must be at least 1")
    return value


@attrs.frozen(kw_only=True)
class TopSettings:
    """Everything a TOP notifier is configured with; the sync and async notifiers share it.

    ``app_secret`` is a :class:`~loanstate.top.Secret` (masked in every repr);
    ``timeout`` an ``httpx2.Timeout`` (connect, read, write, pool); ``deadline``
    the seconds one whole ``send()`` may take. See
    :class:`~loanstate.TopNotifier` for the meaning of each setting.
    """

    app_key: str = attrs.field(converter=_app_key)
    app_secret: Secret = attrs.field(converter=Secret)
    url: str = attrs.field(converter=check_url)
    sign_method: str = attrs.field(default="hmac-sha256", converter=_sign_method)
    timeout: httpx2.Timeout = attrs.field(default=DEFAULT_TIMEOUT, converter=_timeout)
    deadline: float = attrs.field(default=DEFAULT_DEADLINE, converter=_deadline)
    clock: Clock | None = attrs.field(default=None, converter=_clock)
    format: str = attrs.field(default="json", converter=_format)
    simplify: bool = attrs.field(default=False, validator=_instance("simplify", (bool,), "True or False"))
    policy: OutcomePolicy = attrs.field(
        default=DEFAULT_POLICY, validator=_instance("policy", (OutcomePolicy,), "a loanstate.top.OutcomePolicy")
    )
    session: str | None = attrs.field(default=None, converter=_session)
    target_app_key: str | None = attrs.field(default=None, converter=_target_app_key)
    partner: str | None = attrs.field(default=None, converter=_partner)
    proxy: str | httpx2.Proxy | None = attrs.field(default=None, converter=_proxy)
    verify: ssl.SSLContext | str | bool = attrs.field(default=True, converter=_verify)
    cert: str | tuple[str, str] | None = attrs.field(default=None, converter=_cert)
    limits: httpx2.Limits = attrs.field(default=None, converter=_limits)
    trust_env: bool = attrs.field(default=True, validator=_instance("trust_env", (bool,), "True or False"))

    def request_timeout(self) -> httpx2.Timeout:
        """The per-step timeouts, none longer than the deadline."""
        steps = self.timeout.as_dict().items()
        return httpx2.Timeout(**{step: min(s if s is not None else math.inf, self.deadline) for step, s in steps})


def tls_context(verify: ssl.SSLContext | str | bool, cert: str | tuple[str, str] | None) -> ssl.SSLContext | bool:
    """The TLS setting for the client: ``verify`` as given, or a context with the CA bundle and certificate loaded.

    A CA path (file or directory) and a client certificate are loaded here, so
    the client never sees the deprecated string forms.
    """
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is False:
        if cert is not None:
            raise InvalidConfiguration("cert", cert, "a client certificate needs verify= left on or a context")
        return False
    elif isinstance(verify, str):
        context = (
            ssl.create_default_context(capath=verify)
            if os.path.isdir(verify)
            else ssl.create_default_context(cafile=verify)
        )
    else:
        if cert is None:
            return True  # the client's own default trust store
        context = httpx2.create_ssl_context()
    if cert is not None:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        context.load_cert_chain(certfile, keyfile)
    return context


def tls_settings_error(verify: object, cert: object, exc: OSError) -> InvalidConfiguration:
    """The configuration error for a CA bundle or client certificate that cannot be loaded."""
    # Name the file that is at fault: a CA path that is no file, else the certificate.
    setting, value = ("cert", cert) if cert is not None else ("verify", verify)
    if isinstance(verify, str) and not os.path.exists(verify):
        setting, value = "verify", verify
    return InvalidConfiguration(setting, value, f"cannot be loaded ({type(exc).__name__}: {exc.strerror or exc})")
