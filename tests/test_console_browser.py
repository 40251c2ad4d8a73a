"""The console in a real browser: Debian's headless Chromium, driven through chromedriver (Selenium).

The console runs under uvicorn on 127.0.0.1. The tests click through the
overview, a parked group's retry after logging in with the token, a loan's
timeline and search; check that a loan number holding ``<script>`` is text;
that an action without the token is refused; and take the screenshots the docs
show (at 1280 px and at a phone's width). They are written into
docs/_static/console/ when ``LOANSTATE_UPDATE_SCREENSHOTS=1`` (so an ordinary
run leaves the tracked images alone), else into a temporary directory.

Nothing here downloads a browser: without /usr/bin/chromium and
/usr/bin/chromedriver (``apt-get install chromium chromium-driver``; scripts/test
does it as root) the tests skip with the reason, or fail under CI=true.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from test_console import ERROR_A, PARKED_A, SCRIPT_LOAN, TOKEN, build_book

from loanstate import Dispatcher, InMemoryNotifier
from loanstate.console import create_app
from loanstate.store import Change, SqlStore

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_SHOTS = Path(__file__).resolve().parent.parent / "docs" / "_static" / "console"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
DESKTOP = (1280, 900)
PHONE = (390, 844)


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install chromium chromium-driver (scripts/test does it as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, driven by Debian's chromedriver."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as patch:
        # Selenium Manager must not look anything up: both paths are given.
        patch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SqlStore]]:
    """The console over the test book, with actions on, under uvicorn on a free loopback port."""
    store = SqlStore(f"sqlite:///{tmp_path_factory.mktemp('browser') / 'console.db'}")
    store.create_schema()
    build_book(store)
    _recent_traffic(store)
    app = create_app(store, token=TOKEN, allow_actions=True, refresh_seconds=0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


def _recent_traffic(store: SqlStore) -> None:
    """Deliveries spread over the last three hours, and a worker holding a lease: what the overview draws."""
    now = datetime.now(UTC)
    names = [f"W-{i:04d}" for i in range(240)]
    with store.engine.begin() as conn:
        for name in names:
            store.open_loan(name, at=now - timedelta(hours=4), connection=conn)
    store.transition_many(Change(name, "OVERDUE", now - timedelta(hours=4)) for name in names)
    # A busy morning: more deliveries in some minutes than in others.
    minutes = [m for m in range(175, 0, -1) for _ in range(1 + (m // 7) % 4)]
    stamps = itertools.cycle(now - timedelta(minutes=m) for m in minutes[: len(names)])
    Dispatcher(store, InMemoryNotifier(clock=lambda: next(stamps)), concurrency=1).run_once()
    store.transition("W-0000", after="SETTLED", at=now)
    store.outbox.claim("dispatcher-1.lender.example:4242", limit=1, lease=timedelta(minutes=2))


def _by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def _shots() -> Path:
    if os.environ.get("LOANSTATE_UPDATE_SCREENSHOTS") == "1":
        return DOCS_SHOTS
    return Path(tempfile.gettempdir()) / "loanstate-console-screenshots"


def _shot(driver: Any, name: str, size: tuple[int, int]) -> None:
    driver.set_window_size(*size)
    folder = _shots()
    folder.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(folder / name))
    assert (folder / name).stat().st_size > 1000  # a real picture, not an empty file


def _log_in(driver: Any, base: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/parked")
    assert "/login" in driver.current_url
    driver.find_element(_by("ID"), "token").send_keys(TOKEN)
    driver.find_element(_by("CSS_SELECTOR"), "form.login button").click()
    assert "Logged in." in _wait(driver, ".notice", "Logged in.").text


def _wait(driver: Any, css: str, text: str = "") -> Any:
    """The element ``css`` (holding ``text``) once the page that has it has loaded."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    located = (_by("CSS_SELECTOR"), css)
    WebDriverWait(driver, 30).until(expected_conditions.text_to_be_present_in_element(located, text))
    return driver.find_element(*located)


def _fits(driver: Any) -> bool:
    return bool(driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


def test_click_through_overview_parked_retry_loan_and_search(browser: Any, served: tuple[str, SqlStore]) -> None:
    """Log in, read the overview, retry a parked group, open a loan's timeline, find a loan by request_id."""
    base, store = served
    driver = browser
    driver.set_window_size(*DESKTOP)
    _log_in(driver, base)

    driver.find_element(_by("LINK_TEXT"), "Overview").click()
    _wait(driver, ".cards", "lag of the oldest pending")
    cards = {
        c.find_element(_by("CLASS_NAME"), "l").text: c.find_element(_by("CLASS_NAME"), "n").text
        for c in driver.find_elements(_by("CLASS_NAME"), "card")
    }
    status = store.outbox_status()
    assert cards["parked"] == str(status.parked)
    assert cards["delivered"] == str(status.delivered)
    assert driver.find_element(_by("CSS_SELECTOR"), ".chart svg").is_displayed()
    assert _fits(driver)
    _shot(driver, "overview-1280.png", DESKTOP)

    driver.find_element(_by("LINK_TEXT"), "Parked").click()
    _wait(driver, "h1", "Parked loans")
    _shot(driver, "parked-1280.png", DESKTOP)
    row = next(r for r in driver.find_elements(_by("CSS_SELECTOR"), "table.groups tbody tr") if ERROR_A in r.text)
    row.find_element(_by("XPATH"), ".//button[starts-with(normalize-space(), 'Retry all')]").click()
    assert "Returned 3" in _wait(driver, ".notice", "Returned 3 parked event(s) to pending.").text
    assert not {p.loan_apply_no for p in store.outbox_status().parked_loans} & set(PARKED_A)

    sample = driver.find_element(_by("CSS_SELECTOR"), "table.groups tbody tr td:nth-child(6) a")
    loan = sample.text
    sample.click()
    assert _wait(driver, ".loan-no", loan).text == loan
    items = driver.find_elements(_by("CSS_SELECTOR"), "ol.timeline li")
    assert len(items) == len(store.history(loan))
    assert "OVERDUE" in items[-1].text
    _shot(driver, "loan-1280.png", DESKTOP)

    wanted = store.outbox_entries("L-0002")[0].request_id
    box = driver.find_element(_by("ID"), "q")
    box.clear()
    box.send_keys(wanted)
    driver.find_element(_by("CSS_SELECTOR"), "form.search button").click()
    _wait(driver, "main table", "L-0002")
    _shot(driver, "search-1280.png", DESKTOP)
    driver.find_element(_by("LINK_TEXT"), "L-0002").click()
    assert _wait(driver, ".loan-no", "L-0002").text == "L-0002"
    assert wanted in driver.find_element(_by("CSS_SELECTOR"), "table.outbox").text


def test_pages_fit_a_phone(browser: Any, served: tuple[str, SqlStore]) -> None:
    """At a phone's width, no page scrolls sideways; tables scroll inside their own box."""
    base, _ = served
    driver = browser
    _log_in(driver, base)
    for path, shot in (("/", "overview-phone.png"), ("/parked", "parked-phone.png"), ("/loans/P-A1", "loan-phone.png")):
        driver.set_window_size(*PHONE)
        driver.get(base + path)
        assert _fits(driver), path
        _shot(driver, shot, PHONE)


def test_a_loan_number_holding_script_is_shown_as_text(browser: Any, served: tuple[str, SqlStore]) -> None:
    """The browser shows a <script> loan number as its characters and runs nothing."""
    from selenium.common.exceptions import NoAlertPresentException

    base, _ = served
    driver = browser
    _log_in(driver, base)
    driver.get(f"{base}/loans/{quote(SCRIPT_LOAN, safe='')}")
    assert driver.find_element(_by("CSS_SELECTOR"), ".loan-no").text == SCRIPT_LOAN
    assert driver.execute_script("return document.querySelectorAll('main script').length") == 0
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    driver.get(f"{base}/search?q={quote(SCRIPT_LOAN, safe='')}")
    assert driver.find_element(_by("CSS_SELECTOR"), "main table a").text == SCRIPT_LOAN


def test_an_action_without_the_token_is_refused(browser: Any, served: tuple[str, SqlStore]) -> None:
    """A POST from a browser with no session is 401, and one from a session without its CSRF value is 403."""
    base, store = served
    driver = browser
    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    post = (
        "const done = arguments[arguments.length - 1]; fetch(arguments[0], {method: 'POST'}).then(r => done(r.status));"
    )
    assert driver.execute_async_script(post, f"{base}/loans/P-B1/retry") == 401
    _log_in(driver, base)
    assert driver.execute_async_script(post, f"{base}/loans/P-B1/retry") == 403
    assert "P-B1" in {p.loan_apply_no for p in store.outbox_status().parked_loans}


def test_a_paused_dispatcher_shows_its_cause_and_fix(browser: Any, served: tuple[str, SqlStore]) -> None:
    """A pause a dispatcher recorded heads the overview with its cause, the fix and the worker."""
    from loanstate.console import PauseRecorder
    from loanstate.dispatch import Pause

    base, store = served
    driver = browser
    _log_in(driver, base)
    recorder = PauseRecorder(store, "dispatcher-2.lender.example:5151")
    remedy = "the platform rejects our signature: check LOANSTATE_APP_SECRET"
    recorder.on_paused(Pause("signature", remedy, "code 25: Invalid signature", datetime.now(UTC)))
    try:
        driver.get(f"{base}/")
        banner = _wait(driver, ".alert", "Delivery is paused")
        assert remedy in banner.text
        assert "dispatcher-2.lender.example:5151" in banner.text
        _shot(driver, "paused-1280.png", DESKTOP)
    finally:
        recorder.on_resumed()
    driver.get(f"{base}/")
    assert "Delivery is running" in _wait(driver, ".ok", "Delivery is running").text
