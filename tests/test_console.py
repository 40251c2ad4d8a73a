"""The web console through an ASGI test client: every page, every action, escaping, auth, CSRF, paging."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import markupsafe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from loanstate import Dispatcher, InMemoryNotifier, InvalidConfiguration, PermanentDeliveryError, UnknownLoan
from loanstate.console import create_app
from loanstate.console._auth import COOKIE
from loanstate.store import SqlStore
from loanstate.store._inspect import group_key

TOKEN = "console-token-0123456789abcdef"
ERROR_A = "isv.invalid-parameter: customer_id is not known to the platform"
ERROR_B = "isv.loan-closed: the platform holds this loan as closed"
SCRIPT_LOAN = '<script>alert("x")</script>'
ODD_LOAN = "a/b?c#d%e & <i>"
PARKED_A = ("P-A1", "P-A2", "P-A3")
PARKED_B = ("P-B1", "P-B2")


def build_book(store: SqlStore, *, delivered: int = 6) -> dict[str, Any]:
    """Loans in every outbox state: delivered, parked under two errors (one waiting behind), pending, odd names."""
    start = datetime.now(UTC) - timedelta(minutes=30)
    names = [f"L-{i:04d}" for i in range(delivered)]
    everyone = [*names, *PARKED_A, *PARKED_B, SCRIPT_LOAN, ODD_LOAN]
    for i, name in enumerate(everyone):
        customer = "C&<b>" if name == SCRIPT_LOAN else f"C-{i % 3}"
        store.open_loan(name, at=start, customer_id=customer)
        store.transition(name, after="OVERDUE", at=start + timedelta(minutes=1))
    # A later change waits behind the parked one.
    store.transition("P-A1", after="NEW", at=start + timedelta(minutes=2))
    notifier = InMemoryNotifier()
    notifier.fail_when(lambda e: e.loan_apply_no in PARKED_A, PermanentDeliveryError(ERROR_A))
    notifier.fail_when(lambda e: e.loan_apply_no in PARKED_B, PermanentDeliveryError(ERROR_B))
    Dispatcher(store, notifier, concurrency=4).run_once()
    # One change recorded after the dispatcher ran: pending.
    store.transition(names[0], after="SETTLED", at=start + timedelta(minutes=3))
    status = store.outbox_status()
    assert status.parked == len(PARKED_A) + len(PARKED_B)
    return {"names": names, "notifier": notifier}


@pytest.fixture
def book_store(tmp_path: Path) -> Iterator[SqlStore]:
    """An SQLite store holding the book above."""
    made = SqlStore(f"sqlite:///{tmp_path / 'console.db'}")
    made.create_schema()
    build_book(made)
    try:
        yield made
    finally:
        made.close()


def client_for(store: SqlStore, **kwargs: Any) -> TestClient:
    return TestClient(create_app(store, **kwargs), base_url="http://127.0.0.1:8470", follow_redirects=False)


def logged_in(store: SqlStore) -> tuple[TestClient, str]:
    """A browser-like client logged in with the token, and the CSRF value its pages carry."""
    client = client_for(store, token=TOKEN, allow_actions=True)
    response = client.post("/login", data={"token": TOKEN, "next": "/parked"})
    assert response.status_code == 303
    page = client.get("/parked", headers={"accept": "text/html"})
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return client, found.group(1)


def esc(text: str) -> str:
    """``text`` as the console's templates escape it."""
    return str(markupsafe.escape(text))


def loan_url(name: str) -> str:
    return "/loans/" + quote(name, safe="")


# -- pages -------------------------------------------------------------------------------


def test_overview_shows_the_store_s_own_counts(book_store: SqlStore) -> None:
    """The overview's cards are the outbox's counts per state, its parked loans and its loans."""
    page = client_for(book_store).get("/")
    assert page.status_code == 200
    status = book_store.outbox_status()
    for state in ("pending", "delivered", "parked", "skipped"):
        assert re.search(rf'<span class="n">{getattr(status, state)}</span><span class="l">{state}</span>', page.text)
    assert "Delivery is running" in page.text
    assert '<meta http-equiv="refresh" content="15">' in page.text
    assert "<svg" in page.text
    assert "deliveries from" in page.text


def test_overview_chart_counts_every_recent_delivery(book_store: SqlStore) -> None:
    """The chart's caption totals the deliveries of the window, which are all of this book's."""
    page = client_for(book_store).get("/")
    delivered = book_store.outbox_status().delivered
    assert f"{delivered} deliveries from" in page.text


def test_refresh_can_be_turned_off(book_store: SqlStore) -> None:
    """``?refresh=off`` renders the page without the meta refresh."""
    page = client_for(book_store).get("/?refresh=off")
    assert 'http-equiv="refresh"' not in page.text


def test_parked_page_groups_by_error(book_store: SqlStore) -> None:
    """Parked events are grouped by error, with counts of events and loans and a sample loan."""
    page = client_for(book_store).get("/parked")
    assert page.status_code == 200
    rows = re.findall(r"<tr>\s*<td class=\"error\">(.*?)</tr>", page.text, re.S)
    assert len(rows) == 2
    first, second = rows
    assert ERROR_A in html.unescape(first)
    assert "<td>3</td><td>3</td>" in first
    assert ERROR_B in html.unescape(second)
    assert "<td>2</td><td>2</td>" in second


def test_group_page_lists_its_parked_events(book_store: SqlStore) -> None:
    """A group's page lists each parked event with its loan and how many events wait behind it."""
    key = group_key(f"PermanentDeliveryError: {ERROR_A}")
    page = client_for(book_store).get(f"/parked/{key}")
    assert page.status_code == 200
    for name in PARKED_A:
        assert f'href="/loans/{name}"' in page.text
    assert page.text.count("<tr>") == 1 + len(PARKED_A)
    assert client_for(book_store).get("/parked/0000000000000000").status_code == 404


def test_loan_page_shows_status_timeline_and_outbox(book_store: SqlStore) -> None:
    """A loan's page: current status, every change in order, each outbox row with attempts and errors."""
    page = client_for(book_store).get(loan_url("P-A1"))
    assert page.status_code == 200
    assert '<dd class="status">NEW</dd>' in page.text
    history = book_store.history("P-A1")
    assert page.text.count("<li>") == len(history)
    positions = [page.text.index(e.request_id) for e in history]
    assert positions == sorted(positions)
    assert esc(f"PermanentDeliveryError: {ERROR_A}") in page.text
    assert 'class="state-parked"' in page.text
    assert 'class="state-pending"' in page.text


def test_delivered_loan_shows_trace_id_and_delivered_at(book_store: SqlStore) -> None:
    """A delivered event's row shows its trace_id and when it was delivered."""
    entry = book_store.outbox_entries("L-0001")[0]
    assert entry.trace_id is not None
    assert entry.delivered_at is not None
    page = client_for(book_store).get(loan_url("L-0001"))
    assert entry.trace_id in page.text
    assert entry.delivered_at.strftime("%Y-%m-%d %H:%M:%S UTC") in page.text


def test_unknown_loan_is_404(book_store: SqlStore) -> None:
    """A loan the store does not hold is a 404 page naming it, escaped."""
    page = client_for(book_store).get(loan_url("<nope>"), headers={"accept": "text/html"})
    assert page.status_code == 404
    assert "&lt;nope&gt;" in page.text
    assert "<nope>" not in page.text


@pytest.mark.parametrize(
    ("query", "field"),
    [("P-B1", "loan"), ("P-", "loan_apply_no prefix"), ("C-1", "customer_id")],
)
def test_search_finds_loans_by_field(book_store: SqlStore, query: str, field: str) -> None:
    """Search matches a loan number, its beginning, or a customer_id, and says which."""
    page = client_for(book_store).get("/search", params={"q": query})
    assert page.status_code == 200
    assert f"<td>{field}</td>" in page.text


def test_search_finds_a_loan_by_request_id_and_trace_id(book_store: SqlStore) -> None:
    """Search by an event's request_id or trace_id finds its loan."""
    entry = book_store.outbox_entries("L-0002")[0]
    client = client_for(book_store)
    for query, field in ((entry.request_id, "request_id"), (entry.trace_id, "trace_id")):
        page = client.get("/search", params={"q": query})
        assert 'href="/loans/L-0002"' in page.text
        assert f"<td>{field}</td>" in page.text
        assert "1 loan for" in page.text


def test_search_without_a_query_explains_itself(book_store: SqlStore) -> None:
    """An empty search lists nothing and says what can be searched."""
    page = client_for(book_store).get("/search")
    assert page.status_code == 200
    assert "Search by loan_apply_no" in page.text


def test_static_assets_are_shipped_in_the_package(book_store: SqlStore) -> None:
    """The stylesheet comes from the package, no page loads anything from another site or needs a script."""
    client = client_for(book_store)
    css = client.get("/static/console.css")
    assert css.status_code == 200
    assert "font" in css.text
    assert "url(" not in css.text
    for path in ("/", "/parked", "/loans", loan_url("P-A1"), "/search?q=P"):
        page = client.get(path)
        assert not re.search(r'(src|href)="(https?:)?//', page.text), path
        assert "<script" not in page.text, path  # readable with JavaScript off: there is none
        assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_mounted_under_a_prefix_links_stay_inside_it(book_store: SqlStore) -> None:
    """Mounted at /ops in a host app, every link and the stylesheet carry the prefix."""
    host = Starlette(routes=[Mount("/ops", create_app(book_store))])
    client = TestClient(host)
    page = client.get("/ops/")
    assert page.status_code == 200
    assert 'href="/ops/static/console.css"' in page.text
    assert 'href="/ops/parked"' in page.text
    assert client.get("/ops/static/console.css").status_code == 200
    assert client.get("/ops" + loan_url("P-B1")).status_code == 200


# -- escaping and URLs -------------------------------------------------------------------


def test_a_loan_number_holding_markup_is_shown_as_text(book_store: SqlStore) -> None:
    """A loan number with <script> and & is escaped on every page that shows it."""
    client = client_for(book_store)
    escaped = esc(SCRIPT_LOAN)
    for path in (loan_url(SCRIPT_LOAN), "/search?q=" + quote(SCRIPT_LOAN), "/loans"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert escaped in page.text, path
        assert "<script>" not in page.text, path
    assert "C&amp;&lt;b&gt;" in client.get(loan_url(SCRIPT_LOAN)).text


def test_a_loan_number_with_url_characters_round_trips(book_store: SqlStore) -> None:
    """/, ?, #, % and & in a loan number survive the link to its page and back."""
    client = client_for(book_store)
    listing = client.get("/loans").text
    link = f'href="{loan_url(ODD_LOAN)}"'
    assert link in listing
    page = client.get(loan_url(ODD_LOAN))
    assert page.status_code == 200
    assert esc(ODD_LOAN) in page.text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=64).filter(
        lambda s: s.isprintable() and not s.isspace()
    )
)
def test_any_loan_number_is_reachable_and_escaped(book_store: SqlStore, name: str) -> None:
    """Whatever a valid loan number holds, its page is found by its URL-encoded link and shows it escaped."""
    try:
        book_store.status(name)
    except UnknownLoan:
        book_store.open_loan(name, at=datetime.now(UTC))
    page = client_for(book_store).get(loan_url(name))
    assert page.status_code == 200
    assert f'<span class="loan-no">{esc(name)}</span>' in page.text


# -- actions, auth, CSRF -----------------------------------------------------------------


def test_read_only_console_refuses_actions_and_shows_no_buttons(book_store: SqlStore) -> None:
    """Without --allow-actions, a POST is refused even with the token, and no page offers a button."""
    client = client_for(book_store, token=TOKEN)
    refused = client.post(loan_url("P-B1") + "/retry", headers={"authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 403
    page = client.get("/parked", headers={"authorization": f"Bearer {TOKEN}"})
    assert "<button" not in page.text.split("<main>")[1]
    assert book_store.outbox_status().parked == 5


def test_an_action_without_the_token_is_refused(book_store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    """No token, or a wrong one: 401, the store untouched, and the refusal logged."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    with caplog.at_level(logging.WARNING, logger="loanstate.console"):
        assert client.post(loan_url("P-B1") + "/retry").status_code == 401
        wrong = client.post(loan_url("P-B1") + "/retry", headers={"authorization": "Bearer wrong-token-000000000"})
    assert wrong.status_code == 401
    assert book_store.outbox_status().parked == 5
    assert "refused" in caplog.text
    assert TOKEN not in caplog.text


def test_actions_are_post_only(book_store: SqlStore) -> None:
    """GET on an action's URL does nothing: the group's is 405, the loan's names no loan."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    key = group_key(f"PermanentDeliveryError: {ERROR_B}")
    assert client.get(f"/parked/{key}/retry", headers=bearer).status_code == 405
    assert client.get(loan_url("P-B1") + "/retry", headers=bearer).status_code == 404
    assert client.post(loan_url("P-B1") + "/delete", headers=bearer).status_code == 404
    assert book_store.outbox_status().parked == 5


def test_bearer_retry_of_a_loan(book_store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    """A script's retry with the bearer token returns its loan's event to pending and logs what it touched."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    with caplog.at_level(logging.INFO, logger="loanstate.console"):
        done = client.post(loan_url("P-B1") + "/retry", headers={"authorization": f"Bearer {TOKEN}"})
    assert done.status_code == 200
    assert done.json() == {"action": "retry", "count": 1, "loans": ["P-B1"]}
    assert [p.loan_apply_no for p in book_store.outbox_status().parked_loans].count("P-B1") == 0
    assert "console retry by bearer token" in caplog.text
    assert '["P-B1"]' in caplog.text


def test_bearer_skip_of_a_loan(book_store: SqlStore) -> None:
    """Skipping a loan sets its parked event aside, so the loan's later event is free to go."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    parked = next(p for p in book_store.outbox_status().parked_loans if p.loan_apply_no == "P-A1")
    done = client.post(loan_url("P-A1") + "/skip", headers={"authorization": f"Bearer {TOKEN}"})
    assert done.json() == {"action": "skip", "count": 1, "request_ids": [parked.request_id]}
    states = [e.state for e in book_store.outbox_entries("P-A1")]
    assert states == ["skipped", "pending"]
    again = client.post(loan_url("P-A1") + "/skip", headers={"authorization": f"Bearer {TOKEN}"})
    assert again.status_code == 409


def test_login_opens_a_session_whose_forms_can_retry_a_group(
    book_store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged in, a group's retry form (with its CSRF value) un-parks every loan of the group."""
    client, csrf = logged_in(book_store)
    key = group_key(f"PermanentDeliveryError: {ERROR_A}")
    with caplog.at_level(logging.INFO, logger="loanstate.console"):
        done = client.post(f"/parked/{key}/retry", data={"csrf": csrf, "next": "/parked"})
    assert done.status_code == 303
    assert done.headers["location"] == "/parked?done=retry&count=3"
    assert {p.loan_apply_no for p in book_store.outbox_status().parked_loans} == set(PARKED_B)
    notice = client.get(done.headers["location"])
    assert "Returned 3 parked event(s) to pending." in notice.text
    assert "console retry by browser session" in caplog.text
    assert all(name in caplog.text for name in PARKED_A)


def test_group_skip_skips_every_event_of_the_group(book_store: SqlStore) -> None:
    """A group's skip sets every parked event of that error aside, and only those."""
    client, csrf = logged_in(book_store)
    key = group_key(f"PermanentDeliveryError: {ERROR_B}")
    done = client.post(f"/parked/{key}/skip", data={"csrf": csrf, "next": "/parked"})
    assert done.status_code == 303
    status = book_store.outbox_status()
    assert status.skipped == 2
    assert {p.loan_apply_no for p in status.parked_loans} == set(PARKED_A)


def test_session_post_without_or_with_a_wrong_csrf_value_is_refused(book_store: SqlStore) -> None:
    """A session POST needs the CSRF value of its own session; a missing or different one is refused."""
    client, csrf = logged_in(book_store)
    url = loan_url("P-B2") + "/retry"
    assert client.post(url, data={"next": "/"}).status_code == 403
    assert client.post(url, data={"csrf": csrf[:-1] + "x"}).status_code == 403
    assert client.post(url, data={"csrf": csrf}, headers={"origin": "http://evil.example"}).status_code == 403
    assert book_store.outbox_status().parked == 5
    assert client.post(url, data={"csrf": csrf}, headers={"origin": "http://127.0.0.1:8470"}).status_code == 303


def test_a_forged_session_cookie_counts_for_nothing(book_store: SqlStore) -> None:
    """A cookie not signed by this console's key is no session: the action is refused."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    client.cookies.set(COOKIE, "eyJjc3JmIjoieCJ9.forged.signature")
    refused = client.post(loan_url("P-B1") + "/retry", data={"csrf": "x"})
    assert refused.status_code == 401


def test_login_with_a_wrong_token_or_from_another_site_is_refused(book_store: SqlStore) -> None:
    """A wrong token at the login form, or the right one posted from another site: 403, no cookie."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    refused = client.post("/login", data={"token": "not-the-token-at-all", "next": "/"})
    assert refused.status_code == 403
    assert COOKIE not in refused.cookies
    assert "That is not the console" in refused.text
    cross_site = client.post("/login", data={"token": TOKEN}, headers={"origin": "http://evil.example"})
    assert cross_site.status_code == 403
    assert COOKIE not in cross_site.cookies


def test_the_session_cookie_is_http_only_and_holds_no_secret(book_store: SqlStore) -> None:
    """The session cookie is HttpOnly and SameSite=strict, and neither it nor any page holds the token."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    response = client.post("/login", data={"token": TOKEN, "next": "/"})
    header = response.headers["set-cookie"]
    assert "httponly" in header.lower()
    assert "samesite=strict" in header.lower()
    assert TOKEN not in header
    for path in ("/", "/parked", loan_url("P-A1"), "/loans", "/metrics"):
        assert TOKEN not in client.get(path).text


def test_login_redirects_only_inside_the_console(book_store: SqlStore) -> None:
    """The login's ``next`` cannot send the browser to another site."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    for target in ("//evil.example/", "https://evil.example/", "\\\\evil"):
        response = client.post("/login", data={"token": TOKEN, "next": target})
        assert response.headers["location"].startswith("/?")


def test_logout_ends_the_session(book_store: SqlStore) -> None:
    """After logging out, the pages ask for the token again."""
    client, csrf = logged_in(book_store)
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    client.cookies.clear()
    assert client.get("/").status_code == 303


def test_with_a_token_every_page_needs_it(book_store: SqlStore) -> None:
    """A console with a token sends a browser to the login page and a script gets 401; the stylesheet is open."""
    client = client_for(book_store, token=TOKEN)
    page = client.get("/parked")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fparked"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/static/console.css").status_code == 200
    assert client.get("/login").status_code == 200


def test_without_a_token_there_is_no_login(book_store: SqlStore) -> None:
    """A token-less console is read-only: /login says so."""
    assert client_for(book_store).get("/login", headers={"accept": "text/html"}).status_code == 404


def test_create_app_refuses_unsafe_settings(book_store: SqlStore) -> None:
    """Actions without a token, a short token, or a nonsense number are configuration errors that hide the token."""
    with pytest.raises(InvalidConfiguration, match="allow_actions"):
        create_app(book_store, allow_actions=True)
    with pytest.raises(InvalidConfiguration, match="16 characters") as short:
        create_app(book_store, token="short-secret")
    assert "short-secret" not in str(short.value)
    with pytest.raises(InvalidConfiguration, match="page_size"):
        create_app(book_store, page_size=0)


def test_an_action_on_a_vanished_group_is_404(book_store: SqlStore) -> None:
    """Retrying a group that no longer exists changes nothing and says so."""
    client = client_for(book_store, token=TOKEN, allow_actions=True)
    gone = client.post("/parked/ffffffffffffffff/retry", headers={"authorization": f"Bearer {TOKEN}"})
    assert gone.status_code == 404
    assert book_store.outbox_status().parked == 5


# -- paging a large book -----------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_loans_page_through_in_order(tmp_path: Path) -> None:
    """A 10,000-loan store lists every loan exactly once, in order, page by page through the next links."""
    store = SqlStore(f"sqlite:///{tmp_path / 'big.db'}")
    store.create_schema()
    at = datetime.now(UTC)
    names = [f"BIG-{i:05d}" for i in range(10_000)]
    with store.engine.begin() as conn:
        for name in names:
            store.open_loan(name, at=at, connection=conn)
    client = client_for(store, page_size=100)
    seen: list[str] = []
    url: str | None = "/loans"
    pages = 0
    while url is not None:
        page = client.get(url)
        assert page.status_code == 200
        assert "(10000 in all)" in page.text
        seen += re.findall(r'<td><a href="/loans/[^"]+">([^<]+)</a></td>', page.text)
        found = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        url = html.unescape(found.group(1)) if found else None
        pages += 1
    assert seen == names
    assert pages == 100
    search = client.get("/search", params={"q": "BIG-0"})
    assert "1000 loans for" in search.text
    second = client.get("/search", params={"q": "BIG-0", "page": 2})
    assert "BIG-00100" in second.text
    assert "BIG-00099" not in second.text
    store.close()


# -- pure pieces, by property ------------------------------------------------------------


@given(st.one_of(st.none(), st.text(max_size=80)))
def test_a_redirect_target_never_leaves_the_console(target: str | None) -> None:
    """Whatever ``next`` a form posts, the redirect is a path on this site: one leading slash, no backslash."""
    from loanstate.console._app import _safe_next

    safe = _safe_next(target)
    assert safe.startswith("/")
    assert not safe.startswith("//")
    assert "\\" not in safe
    assert safe == target or safe == "/"


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=300))
def test_the_chart_draws_every_busy_minute_within_its_box(per_minute: list[int]) -> None:
    """One bar per minute with deliveries, none taller than the chart, the busiest exactly full height."""
    from loanstate.console._render import chart

    drawn = chart(tuple(per_minute), datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    assert len(drawn.bars) == sum(1 for n in per_minute if n)
    assert all(0 < bar.h <= drawn.height and bar.y >= 0 and bar.x < drawn.width for bar in drawn.bars)
    if drawn.bars:
        assert max(bar.h for bar in drawn.bars) == drawn.height
    assert drawn.summary.startswith(f"{sum(per_minute)} deliveries")


def test_parked_groups_and_their_loans_page(book_store: SqlStore) -> None:
    """With two rows a page, the groups and a group's loans continue on a next page, each row once."""
    client = client_for(book_store, page_size=2)
    key = group_key(f"PermanentDeliveryError: {ERROR_A}")
    first = client.get(f"/parked/{key}")
    assert first.text.count("<tr>") == 1 + 2
    found = re.search(r'<a rel="next" href="([^"]+)"', first.text)
    assert found is not None
    second = client.get(html.unescape(found.group(1)))
    assert second.text.count("<tr>") == 1 + 1
    assert 'rel="next"' not in second.text
    shown = re.findall(r'<td><a href="/loans/([^"]+)">', first.text + second.text)
    assert sorted(shown) == sorted(PARKED_A)
    one_a_page = client_for(book_store, page_size=1).get("/parked")
    assert one_a_page.text.count('<td class="error">') == 1
    assert 'rel="next" href="/parked?page=2"' in one_a_page.text
