"""Who may read and act on the console: the token, the browser session, CSRF.

A script sends ``Authorization: Bearer <token>``. A browser logs in once with
the token and gets a signed, HTTP-only session cookie that holds nothing but a
random CSRF value; every form the console renders carries that value back, and
a POST from the session counts only when the two match (and the request's
``Origin``, when the browser sends one, is the console's own). The cookie is
signed with a key derived from the token, so changing the token logs everyone
out, and nothing secret is ever written into a page, a log or a cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final, Literal
from urllib.parse import urlsplit

import attrs
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

__all__ = ["COOKIE", "Auth", "Caller"]

#: The session cookie's name (distinct from a host application's own ``session``).
COOKIE: Final = "loanstate_console"
#: How long a browser session lasts.
SESSION_SECONDS: Final = 8 * 3600


@attrs.frozen
class Caller:
    """Who a request comes from: ``how`` it proved the token (or ``none``), and its CSRF value."""

    how: Literal["bearer", "session", "none"]
    csrf: str | None = attrs.field(default=None, repr=False)

    @property
    def authenticated(self) -> bool:
        return self.how != "none"

    @property
    def label(self) -> str:
        """A name for the action log: never the token, never the whole CSRF value."""
        if self.how == "session" and self.csrf:
            return f"browser session {hashlib.sha256(self.csrf.encode()).hexdigest()[:8]}"
        return "bearer token" if self.how == "bearer" else "anonymous"


@attrs.define
class Auth:
    """The console's token check; ``token`` ``None`` means nobody can authenticate (read-only console)."""

    token: str | None = attrs.field(repr=False)
    _serializer: URLSafeTimedSerializer | None = attrs.field(init=False, repr=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.token is not None:
            # A key of its own, derived from the token: the cookie never carries the token itself.
            key = hmac.new(self.token.encode(), b"loanstate console session", hashlib.sha256).hexdigest()
            self._serializer = URLSafeTimedSerializer(key, salt="loanstate-console")

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def caller(self, request: Request) -> Caller:
        """How ``request`` is authenticated: bearer header first, then the session cookie."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return Caller("bearer")
        cookie = request.cookies.get(COOKIE)
        if cookie and self._serializer is not None:
            try:
                data = self._serializer.loads(cookie, max_age=SESSION_SECONDS)
            except BadSignature:
                return Caller("none")
            if isinstance(data, dict) and isinstance(data.get("csrf"), str):
                return Caller("session", data["csrf"])
        return Caller("none")

    def new_session(self) -> tuple[str, str]:
        """A fresh session: the cookie's value and its CSRF value."""
        assert self._serializer is not None, "no token: no session"
        csrf = secrets.token_urlsafe(24)
        return str(self._serializer.dumps({"csrf": csrf})), csrf

    @staticmethod
    def csrf_ok(caller: Caller, request: Request, form_csrf: str | None) -> bool:
        """Whether a session POST is the console's own form: same origin, matching CSRF value."""
        if caller.how == "bearer":
            return True  # a browser never adds an Authorization header on its own
        if caller.how != "session" or not caller.csrf or not form_csrf or not Auth.same_origin(request):
            return False
        return hmac.compare_digest(form_csrf.encode(), caller.csrf.encode())

    @staticmethod
    def same_origin(request: Request) -> bool:
        """Whether a browser's POST comes from the console's own pages (a request without ``Origin`` passes)."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", request.url.netloc)
