"""Both TOP notifiers against hostile servers on loopback: redirects, drip feeds, bombs, DTDs, bad settings."""

from __future__ import annotations

import asyncio
import gzip
import socket
import socketserver
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loanstate import (
    AsyncTopNotifier,
    DeliveryError,
    InvalidConfiguration,
    InvalidEvent,
    PermanentDeliveryError,
    SystemicDeliveryError,
    TopNotifier,
    TransientDeliveryError,
    default_machine,
)
from loanstate.notifiers._top_common import failure
from loanstate.notifiers.top import TopSettings
from loanstate.top import TOO_LARGE, UNREADABLE, Secret

SECRET = "hostile-test-s3cr3t-密钥"
EVENT = default_machine().change(
    loan_apply_no="FI-hostile", before="NEW", after="OVERDUE", at=datetime(2024, 1, 1, tzinfo=UTC), sequence=1
)
WRAPPER = "alibaba_finance_xfd_loan_change_notify_response"
OK = f'{{"{WRAPPER}":{{"result":{{"success":true,"response_code":"SUCCESS"}},"request_id":"g"}}}}'.encode()

# A reply is a list of (bytes, seconds to wait before sending them).
Script = list[tuple[bytes, float]]


def response(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Any = self.server
        data = b""
        self.request.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
        )
        while len(body) < length:
            body += self.request.recv(65536)
        server.seen.append(head.split(b"\r\n")[0].decode())
        try:
            for part, wait in server.script(head.split(b"\r\n")[0].decode()):
                if wait:
                    time.sleep(wait)
                self.request.sendall(part)
        except OSError:
            pass  # the client gave up: that is the point of several tests


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def hostile(script: Callable[[str], Script]) -> Iterator[Any]:
    """A loopback HTTP server answering each request line with ``script(line)``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.script = script  # type: ignore[attr-defined]
    server.seen = []  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}/router/rest"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def send_both(url: str, **options: Any) -> list[BaseException | None]:
    """Send EVENT with the sync and the async notifier; what each raised (None: delivered)."""
    outcomes: list[BaseException | None] = []
    with TopNotifier("k", SECRET, url=url, **options) as notifier:
        try:
            notifier.send(EVENT)
            outcomes.append(None)
        except DeliveryError as exc:
            outcomes.append(exc)

    async def run() -> None:
        async with AsyncTopNotifier("k", SECRET, url=url, **options) as notifier:
            try:
                await notifier.send(EVENT)
                outcomes.append(None)
            except DeliveryError as exc:
                outcomes.append(exc)

    asyncio.run(run())
    return outcomes


def test_no_redirect_is_followed_and_a_bare_result_confirms_nothing() -> None:
    """A 307 to another host is a transient failure naming the Location; that host never hears of the event."""
    with hostile(lambda line: [(response("200 OK", b'{"result":{"success":true}}'), 0)]) as other:
        location = f"Location: {other.url}?app_key=k&sign=DEADBEEF"
        with hostile(lambda line: [(response("307 Temporary Redirect", b"", location), 0)]) as first:
            outcomes = send_both(first.url)
            for error in outcomes:
                assert isinstance(error, TransientDeliveryError)
                assert not isinstance(error, SystemicDeliveryError)
                assert "307" in str(error)
                assert str(other.server_address[1]) in str(error)
                assert "DEADBEEF" not in str(error)
            assert len(first.seen) == 2
        assert other.seen == []
        # Sent straight to it, the bare {"result": ...} (no wrapper, no simplify asked) is no confirmation.
        for error in send_both(other.url):
            assert isinstance(error, TransientDeliveryError)
            assert "unknown reply shape" in str(error)


def test_the_wrapped_reply_delivers_and_simplify_accepts_the_bare_one() -> None:
    """The scripted server's wrapped success delivers; a bare result delivers only with simplify=True."""
    with hostile(lambda line: [(response("200 OK", OK), 0)]) as server:
        assert send_both(server.url) == [None, None]
    bare = b'{"result":{"success":true,"response_code":"SUCCESS"}}'
    with hostile(lambda line: [(response("200 OK", bare), 0)]) as server:
        assert send_both(server.url, simplify=True) == [None, None]


def drip(line: str) -> Script:
    """Headers at once, then a body of 200 bytes, one every 0.5 s."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\nContent-Type: application/json\r\n\r\n"
    return [(head, 0), *[(b" ", 0.5) for _ in range(200)]]


def drip_headers(line: str) -> Script:
    """The status line and headers themselves, one byte every 0.5 s."""
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 400 + b"\r\n\r\n"
    return [(bytes([b]), 0.5) for b in head]


@pytest.mark.parametrize("script", [drip, drip_headers], ids=["body", "headers"])
def test_a_drip_feed_cannot_hold_a_send_past_its_deadline(script: Callable[[str], Script]) -> None:
    """A byte every 0.5 s never trips a read timeout, but the whole send ends at its deadline, as a transient error."""
    with hostile(script) as server:
        started = time.monotonic()
        outcomes = send_both(server.url, timeout=5.0, deadline=2.0)
        elapsed = time.monotonic() - started
    for error in outcomes:
        assert isinstance(error, TransientDeliveryError)
        assert not isinstance(error, SystemicDeliveryError)
        assert "in time" in str(error)
    # Left uncut, a send would take 100 s (body) or 200 s (headers).
    assert elapsed < 60


def test_a_gzip_bomb_is_a_typed_transient_error() -> None:
    """A small gzip body that inflates past the cap is TransientDeliveryError(code='too_large'), not memory."""
    bomb = gzip.compress(b" " * (64 << 20))
    with hostile(lambda line: [(response("200 OK", bomb, "Content-Encoding: gzip"), 0)]) as server:
        outcomes = send_both(server.url)
    for error in outcomes:
        assert isinstance(error, TransientDeliveryError)
        assert error.code == TOO_LARGE


def test_an_oversized_body_is_refused_while_it_arrives() -> None:
    """A body larger than the cap is cut off as too_large, compressed or not."""
    big = b" " * (3 << 20)
    with hostile(lambda line: [(response("200 OK", big), 0)]) as server:
        outcomes = send_both(server.url)
    assert [getattr(e, "code", None) for e in outcomes] == [TOO_LARGE, TOO_LARGE]


def test_a_gzipped_reply_is_read() -> None:
    """A gzip-encoded reply within the cap is inflated and delivers."""
    with hostile(lambda line: [(response("200 OK", gzip.compress(OK), "Content-Encoding: gzip"), 0)]) as server:
        assert send_both(server.url) == [None, None]


XML_REPLIES = {
    "utf-16 DTD": '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE r [<!ENTITY a "x">]><r>&a;</r>'.encode("utf-16"),
    "unknown encoding": b'<?xml version="1.0" encoding="x-no-such"?><error_response><code>7</code></error_response>',
    "rot13": b'<?xml version="1.0" encoding="rot13"?><error_response><code>7</code></error_response>',
}


@pytest.mark.parametrize("name", sorted(XML_REPLIES))
def test_xml_with_a_dtd_or_an_unknown_encoding_is_unreadable(name: str) -> None:
    """Through send(), such XML is the transient 'unreadable' error: no LookupError escapes."""
    body = XML_REPLIES[name]
    with hostile(lambda line: [(response("200 OK", body, "Content-Type: text/xml"), 0)]) as server:
        outcomes = send_both(server.url, format="xml")
    assert [getattr(e, "code", None) for e in outcomes] == [UNREADABLE, UNREADABLE]


@pytest.mark.parametrize(("status", "cause"), [("401 Unauthorized", "http_auth"), ("403 Forbidden", "http_auth")])
def test_http_401_and_403_are_systemic(status: str, cause: str) -> None:
    """HTTP 401/403 would refuse every event: SystemicDeliveryError with a remedy."""
    with hostile(lambda line: [(response(status, b"no"), 0)]) as server:
        outcomes = send_both(server.url)
    for error in outcomes:
        assert isinstance(error, SystemicDeliveryError)
        assert error.cause == cause
        assert error.remedy


def test_an_http_400_body_is_classified_like_a_200s() -> None:
    """A 400 carrying an error_response is read: code 25 there is the systemic signature failure."""
    body = b'{"error_response":{"code":25,"msg":"Invalid Signature","request_id":"g"}}'
    with hostile(lambda line: [(response("400 Bad Request", body), 0)]) as server:
        outcomes = send_both(server.url)
    for error in outcomes:
        assert isinstance(error, SystemicDeliveryError)
        assert (error.code, error.cause, error.http_status) == ("25", "signature", 400)


def test_other_4xx_stay_permanent() -> None:
    """A 404 (a wrong path) stays a permanent failure."""
    with hostile(lambda line: [(response("404 Not Found", OK), 0)]) as server:
        outcomes = send_both(server.url)
    assert all(isinstance(e, PermanentDeliveryError) for e in outcomes)


def test_a_traceback_with_locals_never_shows_the_secret() -> None:
    """Rendered with every frame's locals, a failed send's traceback holds no secret."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rich_traceback = pytest.importorskip("rich.traceback")
    from rich.console import Console

    console = Console(record=True, width=200)
    with TopNotifier("k", SECRET, url=f"http://127.0.0.1:{port}/router/rest") as notifier:
        with pytest.raises(SystemicDeliveryError) as caught:
            notifier.send(EVENT)
        exc = caught.value
        rendered = "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
        console.print(rich_traceback.Traceback.from_exception(type(exc), exc, exc.__traceback__, show_locals=True))
        assert "settings" in rendered  # the locals were rendered
        assert "Secret('***')" in repr(notifier.settings)
        assert SECRET not in repr(notifier.settings)
    assert SECRET not in rendered
    assert SECRET not in console.export_text()


BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"url": "https://gw.api.taobao.com/router/rest\n"}, "url"),
    ({"url": "https://gw.api.taobao.com/router/rest "}, "url"),
    ({"url": "https://user:pw@gw.api.taobao.com/router/rest"}, "url"),
    ({"url": b"https://h/"}, "url"),
    ({"url": None}, "url"),
    ({"sign_method": 5}, "sign_method"),
    ({"format": None}, "format"),
    ({"timeout": "10"}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"deadline": 0}, "deadline"),
    ({"deadline": float("inf")}, "deadline"),
    ({"deadline": "45"}, "deadline"),
    ({"clock": "now"}, "clock"),
    ({"simplify": "true"}, "simplify"),
    ({"policy": {"retryable": []}}, "policy"),
    ({"session": 7}, "session"),
    ({"partner": "a\nb"}, "partner"),
    ({"target_app_key": ""}, "target_app_key"),
    ({"proxy": "not a url"}, "proxy"),
    ({"verify": 1}, "verify"),
    ({"cert": ["a", "b"]}, "cert"),
    ({"limits": 10}, "limits"),
    ({"trust_env": "yes"}, "trust_env"),
    ({"client": object()}, "client"),
]


@pytest.mark.parametrize("notifier", [TopNotifier, AsyncTopNotifier])
@pytest.mark.parametrize(("options", "setting"), BAD_SETTINGS, ids=[s for _, s in BAD_SETTINGS])
def test_wrong_settings_are_refused_at_construction(notifier: type[Any], options: dict[str, Any], setting: str) -> None:
    """Each wrong-typed or wrong-valued setting raises InvalidConfiguration naming it, never at a send."""
    kwargs = {"url": "https://gw.api.taobao.com/router/rest", **options}
    with pytest.raises(InvalidConfiguration) as info:
        notifier("k", SECRET, **kwargs)
    assert info.value.setting.split(".")[0] == setting
    assert SECRET not in str(info.value)


@settings(max_examples=60)
@given(
    app_key=st.one_of(st.text(max_size=8), st.integers(), st.none(), st.binary(max_size=4)),
    url=st.one_of(st.text(max_size=30), st.sampled_from(["https://h/r", "http://127.0.0.1:1/r", "https://h/r\n"])),
    deadline=st.one_of(st.floats(), st.integers(-2, 100), st.text(max_size=3)),
)
def test_any_settings_give_a_notifier_or_invalid_configuration(app_key: Any, url: Any, deadline: Any) -> None:
    """Hostile values for the key, URL and deadline give a working settings object or InvalidConfiguration."""
    made: TopSettings | InvalidConfiguration
    try:
        made = TopSettings(app_key=app_key, app_secret=Secret(SECRET), url=url, deadline=deadline)
    except InvalidConfiguration as exc:
        made = exc
    if isinstance(made, InvalidConfiguration):
        assert SECRET not in str(made)
    else:
        assert made.deadline > 0
        assert made.url == url.strip()
        assert made.app_key.strip()


def test_the_settings_object_is_shared_and_str_subclasses_are_plain() -> None:
    """One TopSettings builds both notifiers; a StrEnum value is taken as its plain string."""
    import enum

    class Method(enum.StrEnum):
        SHA = "hmac-sha256"

    shared = TopSettings(app_key="k", app_secret=SECRET, url="https://h/r", sign_method=Method.SHA, deadline=10)
    assert type(shared.sign_method) is str
    with TopNotifier.from_settings(shared) as sync_notifier:
        assert sync_notifier.settings is shared
        assert sync_notifier.deadline == 10.0
    notifier = AsyncTopNotifier.from_settings(shared)
    assert notifier.settings is shared
    asyncio.run(notifier.aclose())
    assert TopNotifier("k", SECRET, url="https://h/r").deadline == 45.0


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (socket.gaierror(-2, "Name or service not known"), "unreachable"),
        (ConnectionRefusedError(111, "Connection refused"), "unreachable"),
        (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "tls"),
        (ConnectionResetError(104, "Connection reset by peer"), None),
    ],
    ids=["dns", "refused", "tls", "reset"],
)
def test_transport_failures_name_their_systemic_cause(cause: OSError, expected: str | None) -> None:
    """A client error caused by DNS, a refusal or TLS is systemic with that cause; a reset stays plainly transient."""
    settings = TopSettings(app_key="k", app_secret=SECRET, url="https://h/r")
    try:
        try:
            raise cause
        except OSError as inner:
            raise httpx2.ConnectError("failed") from inner
    except httpx2.ConnectError as exc:
        error = failure(settings, EVENT, exc)
    assert isinstance(error, TransientDeliveryError)
    assert getattr(error, "cause", None) == expected
    assert error.request_id == EVENT.request_id
    assert (error.__cause__, error.__context__) == (None, None)


@pytest.mark.parametrize("wrong", [None, "FI1", {"loan_apply_no": "FI1"}, 7])
def test_sending_anything_but_an_event_is_invalid_event(wrong: Any) -> None:
    """Both notifiers refuse a non-event with InvalidEvent before any socket opens."""
    with TopNotifier("k", SECRET, url="http://127.0.0.1:9/r") as notifier, pytest.raises(InvalidEvent, match="event"):
        notifier.send(wrong)

    async def run() -> None:
        async with AsyncTopNotifier("k", SECRET, url="http://127.0.0.1:9/r") as notifier:
            with pytest.raises(InvalidEvent, match="event"):
                await notifier.send(wrong)

    asyncio.run(run())
