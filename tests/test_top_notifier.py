"""TopNotifier and AsyncTopNotifier against the fake gateway over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
import trustme

from loanstate import (
    AsyncTopNotifier,
    DeliveryError,
    InvalidConfiguration,
    LoanChangeEvent,
    PermanentDeliveryError,
    SystemicDeliveryError,
    TopNotifier,
    TransientDeliveryError,
    default_machine,
)
from loanstate.testing import FakeTopGateway, Fault, FaultPlan
from loanstate.top import BUSINESS_PARAM, SYSTEMIC_CODES, OutcomePolicy, redact

MACHINE = default_machine()
SECRET = "test-app-secret"
EVENT = MACHINE.change(
    loan_apply_no="FI123123121",
    before="NEW",
    after="OVERDUE",
    at=datetime(2024, 1, 1, tzinfo=UTC),
    institution_loan_no="借据-7",
)

# fault -> (exception class on the first attempt, whether that attempt took effect)
FAULTS: dict[Fault, tuple[type[DeliveryError], bool]] = {
    Fault.HTTP_500: (TransientDeliveryError, False),
    Fault.HTTP_503: (TransientDeliveryError, False),
    Fault.TIMEOUT: (TransientDeliveryError, True),
    Fault.DROP: (TransientDeliveryError, True),
    Fault.ISP_ERROR: (TransientDeliveryError, False),
    Fault.RATE_LIMIT: (TransientDeliveryError, False),
    Fault.MALFORMED: (TransientDeliveryError, True),
    Fault.ISV_ERROR: (PermanentDeliveryError, False),
    Fault.BUSINESS_FAILURE: (PermanentDeliveryError, False),
}


# Only a Fault.TIMEOUT attempt is meant to time out: it gets a short client
# timeout against a hang far longer; every other attempt gets a generous one,
# so a loaded machine cannot turn an ordinary answer into a timeout.
SHORT_TIMEOUT = 1.0
HANG = 60.0
GENEROUS_TIMEOUT = 30.0


def first_timeout(fault: Fault) -> float:
    return SHORT_TIMEOUT if fault is Fault.TIMEOUT else GENEROUS_TIMEOUT


def wait_for_requests(gateway: FakeTopGateway, count: int) -> None:
    """Block until the gateway has recorded ``count`` requests (a client may give up before the server reads)."""
    deadline = time.monotonic() + GENEROUS_TIMEOUT
    while len(gateway.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)


async def await_requests(gateway: FakeTopGateway, count: int) -> None:
    """The asyncio form of :func:`wait_for_requests`."""
    deadline = time.monotonic() + GENEROUS_TIMEOUT
    while len(gateway.requests) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def sent_request_ids(gateway: FakeTopGateway) -> list[str]:
    """The request_id inside the business parameter of every request the gateway received."""
    return [json.loads(r.params[BUSINESS_PARAM])["request_id"] for r in gateway.requests]


def test_success_receipt() -> None:
    """A delivered event returns the gateway's trace_id and response code, stamped by the clock."""
    moment = datetime.now(UTC)
    with FakeTopGateway(machine=MACHINE) as gw, TopNotifier(gw.app_key, SECRET, url=gw.url, clock=lambda: moment) as n:
        receipt = n.send(EVENT)
        assert (receipt.request_id, receipt.response_code, receipt.delivered_at) == (
            EVENT.request_id,
            "SUCCESS",
            moment,
        )
        assert receipt.trace_id is not None
        assert receipt.trace_id.startswith("trace-")
        assert gw.delivered() == [EVENT]


@pytest.mark.parametrize("fault", list(FAULTS), ids=[f.value for f in FAULTS])
def test_every_fault_class_then_a_retry_with_the_same_request_id(fault: Fault) -> None:
    """Each injected fault raises its documented class; the retry carries the same request_id and lands once."""
    expected, took_effect = FAULTS[fault]
    plan = FaultPlan.sequence(fault, hang=HANG, retry_after=4)
    with (
        FakeTopGateway(faults=plan) as gw,
        TopNotifier(gw.app_key, SECRET, url=gw.url, timeout=first_timeout(fault)) as first,
        TopNotifier(gw.app_key, SECRET, url=gw.url, timeout=GENEROUS_TIMEOUT) as notifier,
    ):
        with pytest.raises(expected) as info:
            first.send(EVENT)
        assert type(info.value) is expected
        assert info.value.request_id == EVENT.request_id
        if fault is Fault.TIMEOUT:
            assert "in time" in str(info.value)
        wait_for_requests(gw, 1)
        assert gw.effects[EVENT.request_id] == int(took_effect)
        if fault is Fault.RATE_LIMIT:
            assert (info.value.code, info.value.retry_after) == ("7", 4.0)
        if fault is Fault.HTTP_503:
            assert (info.value.http_status, info.value.retry_after) == (503, 1.0)
        if fault is Fault.ISP_ERROR:
            assert (info.value.sub_code or "").startswith("isp.")
        if fault is Fault.BUSINESS_FAILURE:
            assert info.value.response_code == "FAKE_BUSINESS_FAILURE"
            assert info.value.trace_id is not None
        notifier.send(EVENT)
        assert sent_request_ids(gw) == [EVENT.request_id, EVENT.request_id]
        assert {r.params[BUSINESS_PARAM] for r in gw.requests} == {EVENT.to_top_param()}
        assert gw.effects == {EVENT.request_id: 1}


@pytest.mark.parametrize("fault", list(FAULTS), ids=[f.value for f in FAULTS])
async def test_async_twin_classifies_faults_alike(fault: Fault) -> None:
    """The async notifier raises the same class for each fault and its retry lands exactly once."""
    expected, took_effect = FAULTS[fault]
    async with (
        FakeTopGateway(faults=FaultPlan.sequence(fault, hang=HANG)) as gw,
        AsyncTopNotifier(gw.app_key, SECRET, url=gw.url, timeout=first_timeout(fault)) as first,
        AsyncTopNotifier(gw.app_key, SECRET, url=gw.url, timeout=GENEROUS_TIMEOUT) as notifier,
    ):
        with pytest.raises(expected) as info:
            await first.send(EVENT)
        assert type(info.value) is expected
        assert info.value.request_id == EVENT.request_id
        await await_requests(gw, 1)
        assert gw.effects[EVENT.request_id] == int(took_effect)
        receipt = await notifier.send(EVENT)
        assert receipt.request_id == EVENT.request_id
        assert sent_request_ids(gw) == [EVENT.request_id, EVENT.request_id]
        assert gw.effects == {EVENT.request_id: 1}


def test_latency_is_not_a_failure() -> None:
    """Added latency within the timeout still delivers."""
    with (
        FakeTopGateway(faults=FaultPlan.sequence(Fault.LATENCY, latency=0.05)) as gw,
        TopNotifier(gw.app_key, SECRET, url=gw.url) as notifier,
    ):
        assert notifier.send(EVENT).response_code == "SUCCESS"


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize(("fmt", "simplify"), [("json", False), ("json", True), ("xml", False)])
def test_sign_methods_and_reply_formats(method: str, fmt: str, simplify: bool) -> None:
    """Every sign method and every reply shape works end to end."""
    with (
        FakeTopGateway() as gw,
        TopNotifier(gw.app_key, SECRET, url=gw.url, sign_method=method, format=fmt, simplify=simplify) as notifier,
    ):
        assert notifier.send(EVENT).response_code == "SUCCESS"


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"app_secret": "wrong-secret"}, "25"),
        ({"app_key": "wrong-key"}, "29"),
        ({"clock": lambda: datetime(2020, 1, 1, tzinfo=UTC)}, "31"),
    ],
    ids=["secret", "app key", "clock skew"],
)
def test_credential_and_clock_errors_are_systemic(options: dict[str, object], code: str) -> None:
    """A wrong secret, app key or a skewed clock is a systemic failure with the platform's code and the fix."""
    with FakeTopGateway() as gw:
        settings: dict[str, object] = {"app_key": gw.app_key, "app_secret": SECRET, "url": gw.url, **options}
        with TopNotifier(**settings) as notifier, pytest.raises(SystemicDeliveryError) as info:  # type: ignore[arg-type]
            notifier.send(EVENT)
        assert info.value.code == code
        assert info.value.cause == SYSTEMIC_CODES[code]
        assert info.value.remedy in str(info.value)


def test_policy_decides_business_codes() -> None:
    """A business code the policy calls 'already done' is a success; one it calls retryable is transient."""
    plan = FaultPlan.sequence(Fault.BUSINESS_FAILURE, repeat=True)
    with FakeTopGateway(faults=plan) as gw:
        done = OutcomePolicy(already_done={"FAKE_BUSINESS_FAILURE"})
        with TopNotifier(gw.app_key, SECRET, url=gw.url, policy=done) as notifier:
            assert notifier.send(EVENT).response_code == "FAKE_BUSINESS_FAILURE"
        retry = OutcomePolicy(retryable={"FAKE_BUSINESS_FAILURE"})
        with (
            TopNotifier(gw.app_key, SECRET, url=gw.url, policy=retry) as notifier,
            pytest.raises(TransientDeliveryError),
        ):
            notifier.send(EVENT)


def test_connection_refused_is_transient() -> None:
    """Nobody listening on the port is a transient failure, of the systemic kind (cause 'unreachable')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/router/rest"
    with (
        TopNotifier("k", SECRET, url=url) as notifier,
        pytest.raises(TransientDeliveryError, match="ConnectError") as info,
    ):
        notifier.send(EVENT)
    assert isinstance(info.value, SystemicDeliveryError)  # every event would fail alike: the dispatcher pauses
    assert info.value.cause == "unreachable"


@pytest.mark.parametrize(
    "url",
    [
        "https://gw.api.taobao.com/router/rest",
        "http://127.0.0.1:8080/router/rest",
        "http://localhost/x",
        "http://[::1]/",
    ],
)
def test_https_or_loopback_urls_are_accepted(url: str) -> None:
    """HTTPS anywhere, plain HTTP only to loopback addresses."""
    with TopNotifier("k", SECRET, url=url) as notifier:
        assert notifier.url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://gw.api.taobao.com/router/rest",
        "http://10.0.0.1/router/rest",
        "ftp://x/",
        "https://h/p?a=1",
        "https://h/p?",
        "https://h:99999/router/rest",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    """Plain HTTP to a non-loopback host, other schemes and URLs with a query raise InvalidConfiguration."""
    with pytest.raises(InvalidConfiguration, match="url"):
        TopNotifier("k", SECRET, url=url)


def test_bad_settings_never_echo_the_secret() -> None:
    """A blank secret is refused without its value; an unknown sign method or format is named."""
    with pytest.raises(InvalidConfiguration) as info:
        TopNotifier("k", "   ", url="https://h/")
    assert info.value.value == "<hidden>"
    with pytest.raises(InvalidConfiguration, match="sha1"):
        TopNotifier("k", SECRET, url="https://h/", sign_method="sha1")
    with pytest.raises(InvalidConfiguration, match="yaml"):
        AsyncTopNotifier("k", SECRET, url="https://h/", format="yaml")


async def test_secret_and_signatures_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    """With every logger at DEBUG, no log record, repr, URL or error holds the secret or a signature."""
    secret = "s3cr3t-密钥-value"
    moment = datetime.now(UTC)
    caplog.set_level(logging.DEBUG)
    leaks: list[str] = []
    plan = FaultPlan.sequence(Fault.ISV_ERROR, Fault.HTTP_500, Fault.DROP, None)
    async with FakeTopGateway(app_secret=secret, faults=plan) as gw:
        sync_notifier = TopNotifier(gw.app_key, secret, url=gw.url, clock=lambda: moment)
        async with AsyncTopNotifier(gw.app_key, secret, url=gw.url, clock=lambda: moment) as notifier:
            signatures = {notifier.prepare(EVENT).query["sign"], sync_notifier.prepare(EVENT).query["sign"]}
            for _ in range(4):
                try:
                    await notifier.send(EVENT)
                except DeliveryError as exc:
                    leaks += [str(exc), repr(exc), repr(vars(exc))]
            async with AsyncTopNotifier(gw.app_key, "not-the-secret", url=gw.url) as wrong:
                with pytest.raises(SystemicDeliveryError) as info:
                    await wrong.send(EVENT)
            leaks += [str(info.value), repr(vars(info.value)), repr(wrong)]
            leaks += [repr(notifier), repr(sync_notifier), repr(notifier.prepare(EVENT)), repr(gw), repr(gw.requests)]
            leaks += [redact(f"{gw.url}?{notifier.prepare(EVENT).query_string()}")]
            async with httpx2.AsyncClient() as client:  # httpx2 logs each request's URL at INFO: sign is masked
                await client.post(f"{gw.url}?{notifier.prepare(EVENT).query_string()}")
        sync_notifier.close()
    leaks += [r.getMessage() for r in caplog.records] + [repr(r.__dict__) for r in caplog.records]
    assert any("request_id" in text for text in leaks)  # the captured material is real
    assert any("sign=<hidden>" in r.getMessage() for r in caplog.records if r.name == "httpx2")
    for text in leaks:
        assert secret not in text
        for signature in signatures:
            assert signature not in text
            assert signature.lower() not in text


async def test_async_success_and_repr() -> None:
    """The async notifier delivers and its repr names the app key and URL only."""
    async with FakeTopGateway(machine=MACHINE) as gw, AsyncTopNotifier(gw.app_key, SECRET, url=gw.url) as notifier:
        receipt = await notifier.send(EVENT)
        assert receipt.response_code == "SUCCESS"
        assert repr(notifier) == f"AsyncTopNotifier(app_key='test-app-key', url={gw.url!r}, sign_method='hmac-sha256')"


def test_a_passed_in_client_is_used_and_left_open() -> None:
    """With client=, requests go through that client and close() leaves it open for its owner."""
    with FakeTopGateway() as gw, httpx2.Client() as client:
        notifier = TopNotifier(gw.app_key, SECRET, url=gw.url, client=client)
        notifier.send(EVENT)
        notifier.close()
        assert not client.is_closed


def events_for(count: int) -> list[LoanChangeEvent]:
    return [
        MACHINE.change(loan_apply_no=f"R{i}", before="NEW", after="SETTLED", at=EVENT.change_time) for i in range(count)
    ]


def test_random_faults_with_retries_land_each_change_once() -> None:
    """Under seeded random faults of every transient kind, retrying until success applies each change once."""
    transient = [f for f, (cls, _) in FAULTS.items() if cls is TransientDeliveryError and f is not Fault.TIMEOUT]
    plan = FaultPlan.random(dict.fromkeys(transient, 0.06))
    with FakeTopGateway(faults=plan, seed=7) as gw, TopNotifier(gw.app_key, SECRET, url=gw.url, timeout=1.0) as n:
        for event in events_for(60):
            for _ in range(50):
                try:
                    n.send(event)
                    break
                except TransientDeliveryError:
                    continue
        assert len(gw.effects) == 60
        assert set(gw.effects.values()) == {1}
        assert any(r.fault is not None for r in gw.requests)


def test_proxy_setting_is_passed_through() -> None:
    """Requests go through the configured proxy: a dead proxy makes the delivery fail transiently."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        FakeTopGateway() as gw,
        TopNotifier(gw.app_key, SECRET, url=gw.url, proxy=f"http://127.0.0.1:{port}", timeout=2.0) as notifier,
        pytest.raises(TransientDeliveryError, match=r"Proxy|Connect"),
    ):
        notifier.send(EVENT)
    assert gw.requests == []


def test_https_with_a_private_ca() -> None:
    """Over HTTPS the CA setting is honoured: the private CA verifies, the system store refuses (transiently)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with FakeTopGateway(ssl_context=server_context) as gw:
        assert gw.url.startswith("https://127.0.0.1:")
        with TopNotifier(gw.app_key, SECRET, url=gw.url, verify=client_context) as notifier:
            assert notifier.send(EVENT).response_code == "SUCCESS"
        with (
            TopNotifier(gw.app_key, SECRET, url=gw.url, trust_env=False) as notifier,
            pytest.raises(TransientDeliveryError, match="ConnectError"),
        ):
            notifier.send(EVENT)
        assert gw.effects == {EVENT.request_id: 1}


def test_ca_bundle_path_and_client_certificate(tmp_path: Path) -> None:
    """A CA bundle path (verify=) and a client certificate (cert=) work on both twins, with no httpx2 deprecation."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED  # the gateway demands a client certificate
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    client_pem = tmp_path / "client.pem"
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(str(client_pem))

    async def send_async(url: str) -> str | None:
        async with AsyncTopNotifier("test-app-key", SECRET, url=url, verify=str(bundle), cert=str(client_pem)) as n:
            return (await n.send(EVENT)).response_code

    with FakeTopGateway(app_secret=SECRET, ssl_context=server_context) as gw:
        with TopNotifier(gw.app_key, SECRET, url=gw.url, verify=str(bundle), cert=str(client_pem)) as notifier:
            assert notifier.send(EVENT).response_code == "SUCCESS"
        assert asyncio.run(send_async(gw.url)) == "SUCCESS"
        assert gw.effects == {EVENT.request_id: 1}


async def test_async_https_proxy_and_own_session() -> None:
    """The async twin honours a private CA, a proxy setting, and leaves a passed-in session open."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    async with FakeTopGateway(ssl_context=server_context) as gw:
        async with AsyncTopNotifier(gw.app_key, SECRET, url=gw.url, verify=client_context) as notifier:
            assert (await notifier.send(EVENT)).response_code == "SUCCESS"
        async with AsyncTopNotifier(gw.app_key, SECRET, url=gw.url, trust_env=False) as notifier:
            with pytest.raises(SystemicDeliveryError, match=r"Certificate|SSL") as tls:
                await notifier.send(EVENT)
            assert tls.value.cause == "tls"
        proxied = AsyncTopNotifier(
            gw.app_key, SECRET, url=gw.url, verify=client_context, proxy=f"http://127.0.0.1:{dead_port}", timeout=2.0
        )
        async with proxied as notifier:
            with pytest.raises(SystemicDeliveryError, match="cannot be reached") as refused:
                await notifier.send(EVENT)
            assert refused.value.cause == "unreachable"
        async with httpx2.AsyncClient(verify=client_context) as session:
            notifier = AsyncTopNotifier(gw.app_key, SECRET, url=gw.url, client=session)
            await notifier.send(EVENT)
            await notifier.aclose()
            assert not session.is_closed
        assert gw.effects == {EVENT.request_id: 1}
        assert len(gw.requests) == 2


def test_async_settings_are_checked() -> None:
    """A non-positive timeout, no connections, or a client certificate without verification are refused."""
    with pytest.raises(InvalidConfiguration, match="timeout"):
        AsyncTopNotifier("k", SECRET, url="https://h/", timeout=0)
    with pytest.raises(InvalidConfiguration, match="max_connections"):
        AsyncTopNotifier("k", SECRET, url="https://h/", limits=httpx2.Limits(max_connections=0))
    with pytest.raises(InvalidConfiguration, match="cert"):
        AsyncTopNotifier("k", SECRET, url="https://h/", verify=False, cert="client.pem")


@pytest.mark.parametrize("notifier", [TopNotifier, AsyncTopNotifier])
def test_settings_that_cannot_work_are_named(
    notifier: type[TopNotifier] | type[AsyncTopNotifier], tmp_path: Path
) -> None:
    """Non-text credentials, a non-positive timeout, CA or certificate files that do not load: InvalidConfiguration."""
    missing = str(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(InvalidConfiguration, match="app_key 1"):
        notifier(1, SECRET, url="https://h/")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfiguration) as info:
        notifier("k", None, url="https://h/")
    assert info.value.value == "<hidden>"
    for timeout in (0, -1.5):
        with pytest.raises(InvalidConfiguration, match=f"timeout {timeout}"):
            notifier("k", SECRET, url="https://h/", timeout=timeout)
    with pytest.raises(InvalidConfiguration, match="verify") as info:
        notifier("k", SECRET, url="https://h/", verify=missing)
    assert info.value.value == missing
    with pytest.raises(InvalidConfiguration, match="verify"):
        notifier("k", SECRET, url="https://h/", verify=str(garbage))
    with pytest.raises(InvalidConfiguration, match="cert") as info:
        notifier("k", SECRET, url="https://h/", cert=missing)
    assert info.value.value == missing


def test_credentials_utf8_cannot_encode_are_refused_up_front() -> None:
    """A lone surrogate in a credential is refused when the notifier is made (the secret unshown), not at a send."""
    with pytest.raises(InvalidConfiguration) as info:
        TopNotifier("k", "s3cr3t-\ud800", url="https://h/")
    assert (info.value.setting, info.value.value) == ("app_secret", "<hidden>")
    with pytest.raises(InvalidConfiguration, match="app_key"):
        AsyncTopNotifier("k-\udfff", SECRET, url="https://h/")


async def test_transport_errors_hold_no_client_exception() -> None:
    """A dropped connection's error has no __cause__ or __context__: the client's exception holds the signed request."""
    plan = FaultPlan.sequence(Fault.DROP, Fault.DROP)
    async with FakeTopGateway(faults=plan) as gw:
        async with AsyncTopNotifier(gw.app_key, SECRET, url=gw.url) as notifier:
            with pytest.raises(TransientDeliveryError) as async_info:
                await notifier.send(EVENT)
        sync_notifier = TopNotifier(gw.app_key, SECRET, url=gw.url)
        try:
            with pytest.raises(TransientDeliveryError) as sync_info:
                await asyncio.to_thread(sync_notifier.send, EVENT)
        finally:
            sync_notifier.close()
    for error in (async_info.value, sync_info.value):
        assert (error.__cause__, error.__context__) == (None, None)
        assert "connection" in str(error)
