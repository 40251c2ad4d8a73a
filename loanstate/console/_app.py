"""The console as an ASGI application: pages, actions, login, ``/metrics``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlencode

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from loanstate._errors import InvalidConfiguration, LoanStateError
from loanstate.console import _actions
from loanstate.console._auth import COOKIE, SESSION_SECONDS, Auth
from loanstate.console._render import chart, environment, render
from loanstate.console.metrics import StoreCollector
from loanstate.store import _inspect as inspect

if TYPE_CHECKING:
    from loanstate.store import SqlStore

__all__ = ["create_app"]

_log = logging.getLogger("loanstate.console")

# What an action's redirect may say: fixed words and a number, never text from the request.
_NOTICES: Final = {
    "retry": "Returned {count} parked event(s) to pending.",
    "skip": "Skipped {count} event(s).",
    "login": "Logged in.",
}
# Headers on every response: nothing loads from elsewhere, nothing runs inline, no framing.
_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
_MAX_FORM: Final = 16 * 1024
_MIN_TOKEN: Final = 16


@attrs.define
class _Console:
    store: SqlStore
    auth: Auth
    allow_actions: bool
    refresh: int
    page_size: int
    hours: int
    env: Any = attrs.field(factory=environment)
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)

    # -- rendering --------------------------------------------------------------

    def page(self, request: Request, name: str, *, status: int = 200, refresh: bool = False, **ctx: Any) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        caller = self.auth.caller(request)
        params = dict(request.query_params)
        notice = None
        if params.get("done") in _NOTICES:
            count = params.get("count", "0")
            notice = _NOTICES[params["done"]].format(count=int(count) if count.isdigit() else 0)
        refreshing = refresh and self.refresh > 0 and params.get("refresh") != "off"
        context = {
            "base": base,
            "caller": caller,
            "has_token": self.auth.token is not None,
            "allow_actions": self.allow_actions and caller.authenticated,
            "refresh": self.refresh if refreshing else 0,
            "norefresh_query": urlencode(
                {**{k: v for k, v in params.items() if k not in ("done", "count")}, "refresh": "off"}
            ),
            "notice": notice,
            "now": self.store.now(),
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "query": params.get("q", ""),
            "page": "",
            **ctx,
        }
        return HTMLResponse(render(self.env, name, context), status_code=status, headers=_HEADERS)

    def message(self, request: Request, status: int, heading: str, message: str) -> Response:
        if "text/html" not in request.headers.get("accept", "") or request.headers.get("authorization"):
            return JSONResponse({"error": heading, "detail": message}, status_code=status, headers=_HEADERS)
        return self.page(request, "message.html", status=status, heading=heading, message=message)

    # -- reading ----------------------------------------------------------------

    def guard(self, request: Request) -> Response | None:
        """Refuse an unauthenticated reader when the console has a token; ``None`` lets the request in."""
        if self.auth.token is None or self.auth.caller(request).authenticated:
            return None
        if request.url.path.endswith("/metrics") or request.headers.get("authorization"):
            return Response("authentication required\n", 401, {"www-authenticate": "Bearer", **_HEADERS})
        base = request.scope.get("root_path", "").rstrip("/")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{base}/login?{urlencode({'next': target})}", 303, headers=_HEADERS)

    async def overview(self, request: Request) -> Response:
        ov = await run_in_threadpool(inspect.overview, self.store.engine, self.store.now(), hours=self.hours)
        return self.page(
            request,
            "overview.html",
            refresh=True,
            page="overview",
            ov=ov,
            states=inspect.STATES,
            hours=self.hours,
            chart=chart(ov.per_minute, ov.window_start),
        )

    async def parked(self, request: Request) -> Response:
        groups = await run_in_threadpool(inspect.parked_groups, self.store.engine)
        number = _page_number(request)
        start = (number - 1) * self.page_size
        return self.page(
            request,
            "parked.html",
            refresh=True,
            page="parked",
            groups=groups[start : start + self.page_size],
            **_pages(request, number, more=len(groups) > start + self.page_size),
        )

    async def group(self, request: Request) -> Response:
        group = await run_in_threadpool(inspect.parked_group, self.store.engine, request.path_params["key"])
        if group is None:
            return self.message(request, 404, "No such group", "Nothing is parked with that error any more.")
        number = _page_number(request)
        items = await run_in_threadpool(
            lambda: inspect.parked_items(
                self.store.engine, error=group.error, offset=(number - 1) * self.page_size, limit=self.page_size + 1
            )
        )
        return self.page(
            request,
            "group.html",
            refresh=True,
            page="parked",
            group=group,
            items=items[: self.page_size],
            **_pages(request, number, more=len(items) > self.page_size),
        )

    async def loans(self, request: Request) -> Response:
        after = request.query_params.get("after")
        found = await run_in_threadpool(
            lambda: inspect.list_loans(self.store.engine, after=after, limit=self.page_size)
        )
        base = request.url.path
        return self.page(
            request,
            "loans.html",
            page="loans",
            page_=found,
            prev_url=base if after else None,
            next_url=f"{base}?{urlencode({'after': found.next_after})}" if found.next_after else None,
        )

    async def loan(self, request: Request) -> Response:
        loan_apply_no = request.path_params["loan_apply_no"]
        found = await run_in_threadpool(inspect.loan_detail, self.store.engine, loan_apply_no)
        if found is None:
            return self.message(request, 404, "No such loan", f"The store holds no loan {loan_apply_no!r}.")
        loan, timeline, entries = found
        return self.page(
            request,
            "loan.html",
            refresh=True,
            page="loans",
            loan=loan,
            timeline=timeline,
            entries=entries,
            parked=any(e.state == "parked" for e in entries),
        )

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "")[:200]
        hits = await run_in_threadpool(inspect.search, self.store.engine, query)
        number = _page_number(request)
        start = (number - 1) * self.page_size
        return self.page(
            request,
            "search.html",
            hits=hits[start : start + self.page_size],
            total=len(hits),
            **_pages(request, number, more=len(hits) > start + self.page_size),
        )

    async def metrics(self, request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, headers={"content-type": CONTENT_TYPE_LATEST, "cache-control": "no-store"})

    # -- login ------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if self.auth.token is None:
            return self.message(request, 404, "No login", "This console has no token: it is read-only.")
        return self.page(request, "login.html", next=_safe_next(request.query_params.get("next")), error=None)

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        target = _safe_next(form.get("next"))
        if self.auth.token is None:
            return self.message(request, 404, "No login", "This console has no token: it is read-only.")
        if not self.auth.same_origin(request):
            # Another site posting our login form would log the browser into a session of its choosing.
            return self.message(request, 403, "Refused", "A login must come from the console's own page.")
        if not self.auth.token_matches(form.get("token", "")):
            _log.warning("console login refused from %s: wrong token", _client(request))
            return self.page(request, "login.html", status=403, next=target, error="That is not the console's token.")
        cookie, _ = self.auth.new_session()
        _log.info("console login from %s", _client(request))
        response = RedirectResponse(_with_notice(target, "login", 0), 303, headers=_HEADERS)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            path=request.scope.get("root_path", "") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        caller = self.auth.caller(request)
        form = await _form(request)
        if caller.how == "session" and not self.auth.csrf_ok(caller, request, form.get("csrf")):
            return self.message(request, 403, "Refused", "The form's CSRF value does not match this session.")
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/", 303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path=request.scope.get("root_path", "") or "/")
        return response

    # -- actions ----------------------------------------------------------------

    async def act(
        self, request: Request, action: str, targets: Callable[[], Awaitable[tuple[str, list[str]] | Response]]
    ) -> Response:
        """Run ``action`` on what ``targets`` names, once the caller proved the token (and CSRF)."""
        if not self.allow_actions:
            return self.message(request, 403, "Read-only", "Actions are off: start the console with --allow-actions.")
        caller = self.auth.caller(request)
        if not caller.authenticated:
            _log.warning("console %s refused from %s: no token", action, _client(request))
            return Response("the console token is required\n", 401, {"www-authenticate": "Bearer", **_HEADERS})
        form = await _form(request)
        if not self.auth.csrf_ok(caller, request, form.get("csrf")):
            _log.warning("console %s refused from %s: CSRF check failed", action, _client(request))
            return self.message(request, 403, "Refused", "The form's CSRF value does not match this session.")
        found = await targets()
        if isinstance(found, Response):
            return found
        what, names = found
        run = _actions.retry_loans if action == "retry" else _actions.skip_events
        try:
            count = await run_in_threadpool(run, self.store, names) if names else 0
        except LoanStateError as exc:
            _log.warning("console %s by %s failed on %s %s: %s", action, caller.label, what, json.dumps(names), exc)
            return self.message(request, 409, f"Could not {action}", str(exc))
        _log.info(
            "console %s by %s from %s: %d event(s); %s %s",
            action,
            caller.label,
            _client(request),
            count,
            what,
            json.dumps(names, ensure_ascii=False),
        )
        if caller.how == "bearer":
            return JSONResponse({"action": action, "count": count, what: names}, headers=_HEADERS)
        return RedirectResponse(_with_notice(_safe_next(form.get("next")), action, count), 303, headers=_HEADERS)

    async def loan_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        loan_apply_no = request.path_params["loan_apply_no"]

        async def targets() -> tuple[str, list[str]] | Response:
            if action == "retry":
                return "loans", [loan_apply_no]
            ids = await run_in_threadpool(inspect.parked_request_ids, self.store.engine, [loan_apply_no])
            if not ids:
                return self.message(request, 409, "Nothing to skip", f"Loan {loan_apply_no!r} has no parked event.")
            return "request_ids", ids

        return await self.act(request, action, targets)

    async def group_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        key = request.path_params["key"]

        async def targets() -> tuple[str, list[str]] | Response:
            group = await run_in_threadpool(inspect.parked_group, self.store.engine, key)
            if group is None:
                return self.message(request, 404, "No such group", "Nothing is parked with that error any more.")
            items = await run_in_threadpool(lambda: inspect.parked_items(self.store.engine, error=group.error))
            if action == "retry":
                return "loans", sorted({i.loan_apply_no for i in items})
            return "request_ids", [i.request_id for i in items]

        return await self.act(request, action, targets)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return max(int(raw), 1) if raw.isdigit() and len(raw) < 9 else 1


def _pages(request: Request, number: int, *, more: bool) -> dict[str, Any]:
    params = {k: v for k, v in request.query_params.items() if k not in ("page", "done", "count")}

    def url(n: int) -> str:
        return f"{request.url.path}?{urlencode({**params, 'page': n})}"

    return {"prev_url": url(number - 1) if number > 1 else None, "next_url": url(number + 1) if more else None}


def _safe_next(target: str | None) -> str:
    """A redirect target from a form: a path on this site only (never ``//host`` or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _with_notice(target: str, action: str, count: int) -> str:
    path, _, query = target.partition("?")
    params = [(k, v) for k, v in parse_qs(query).items() if k not in ("done", "count")]
    flat = [(k, item) for k, values in params for item in values]
    return f"{path}?{urlencode([*flat, ('done', action), ('count', str(count))])}"


async def _form(request: Request) -> dict[str, str]:
    """The posted form (URL-encoded; first value of each field), bounded in size."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items()}


def create_app(
    store: SqlStore,
    *,
    token: str | None = None,
    allow_actions: bool = False,
    refresh_seconds: int = 15,
    page_size: int = 50,
    hours: int = 3,
) -> Starlette:
    """The console for ``store``, as an ASGI app to serve or mount (``Mount("/ops", create_app(store))``).

    Read-only unless ``allow_actions``; actions need ``token`` (a bearer header,
    or a browser session opened with it at ``/login``). With a token, every
    page but ``/login`` and the stylesheet needs it too. Pages refresh every
    ``refresh_seconds`` (0: never); lists show ``page_size`` rows a page; the
    chart covers the last ``hours``. Raises
    :class:`~loanstate.InvalidConfiguration` for actions without a token, a
    token shorter than 16 characters, or a bad number.
    """
    if token is not None and len(token) < _MIN_TOKEN:
        raise InvalidConfiguration("token", f"<{len(token)} characters>", f"must be at least {_MIN_TOKEN} characters")
    if allow_actions and token is None:
        raise InvalidConfiguration("allow_actions", True, "actions need a token (set LOANSTATE_CONSOLE_TOKEN)")
    for name, value, low in (("refresh_seconds", refresh_seconds, 0), ("page_size", page_size, 1), ("hours", hours, 1)):
        if not isinstance(value, int) or value < low:
            raise InvalidConfiguration(name, value, f"must be an integer of at least {low}")
    console = _Console(store, Auth(token), allow_actions, refresh_seconds, page_size, hours)
    console.registry.register(StoreCollector(store))

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return console.guard(request) or await handler(request)

        return endpoint

    routes = [
        Route("/", guarded(console.overview), name="overview"),
        Route("/parked", guarded(console.parked), name="parked"),
        Route("/parked/{key:str}", guarded(console.group), name="group"),
        Route("/parked/{key:str}/{action:str}", _only(console.group_action), methods=["POST"]),
        Route("/loans", guarded(console.loans), name="loans"),
        Route("/loans/{loan_apply_no:path}/{action:str}", _only(console.loan_action), methods=["POST"]),
        Route("/loans/{loan_apply_no:path}", guarded(console.loan), name="loan"),
        Route("/search", guarded(console.search), name="search"),
        Route("/metrics", guarded(console.metrics), name="metrics"),
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", console.logout, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("loanstate.console", "static")]), name="static"),
    ]
    return Starlette(routes=routes)


def _only(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Actions are ``retry`` and ``skip``; any other word is not found."""

    async def endpoint(request: Request) -> Response:
        if request.path_params["action"] not in ("retry", "skip"):
            return Response("not found\n", 404, headers=_HEADERS)
        return await handler(request)

    return endpoint
