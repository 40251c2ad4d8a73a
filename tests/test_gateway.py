"""The fake open-platform gateway: checks like the platform, answers like it, deduplicates, records, injects faults."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from loanstate import (
    DeliveryError,
    InvalidConfiguration,
    LoanChangeEvent,
    SystemicDeliveryError,
    TopNotifier,
    default_machine,
)
from loanstate.testing import FakeTopGateway, Fault, FaultPlan, change_events
from loanstate.top import BUSINESS_PARAM, CONTENT_TYPE, build_request, classify, encode_form, parse_response, sign

MACHINE = default_machine()
SECRET = "test-app-secret"


def change(loan: str = "FI1", before: str = "NEW", after: str = "OVERDUE", minute: int = 0) -> LoanChangeEvent:
    return MACHINE.change(
        loan_apply_no=loan, before=before, after=after, at=datetime(2024, 5, 1, 9, minute, tzinfo=UTC), sequence=1
    )


def signed(event: LoanChangeEvent, method: str = "hmac-sha256", **options: object) -> dict[str, str]:
    request = build_request(event, app_key="test-app-key", app_secret=SECRET, now=datetime.now(UTC), sign_method=method)
    params = request.params()
    params.update({k: str(v) for k, v in options.items()})
    return params


def resign(params: dict[str, str]) -> dict[str, str]:
    params = {k: v for k, v in params.items() if k != "sign"}
    params["sign"] = sign(params, SECRET, params.get("sign_method", "md5"))
    return params


def post(client: httpx2.Client, gw: FakeTopGateway, params: dict[str, str]) -> httpx2.Response:
    """POST as the platform's SDKs do: system parameters and sign in the query, the business one in the body."""
    query = encode_form({k: v for k, v in params.items() if k != BUSINESS_PARAM})
    body = encode_form({k: v for k, v in params.items() if k == BUSINESS_PARAM}).encode()
    return client.post(f"{gw.url}?{query}", content=body, headers={"Content-Type": CONTENT_TYPE})


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30.0) as c:
        yield c


@pytest.fixture(scope="module")
def shared_gateway() -> Iterator[FakeTopGateway]:
    with FakeTopGateway(machine=MACHINE) as gw:
        yield gw


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
def test_accepts_every_sign_method(client: httpx2.Client, method: str) -> None:
    """A correctly signed request takes effect once, whichever of the three sign methods signed it."""
    with FakeTopGateway(machine=MACHINE) as gw:
        response = post(client, gw, signed(change(), method))
        assert classify(response.status_code, response.content).ok
        assert gw.effects == {change().request_id: 1}
        assert gw.delivered() == [change()]


def _drop(params: dict[str, str], key: str) -> dict[str, str]:
    return resign({k: v for k, v in params.items() if k != key})


def _business(fields: dict[str, object]) -> dict[str, str]:
    return resign({**signed(change()), BUSINESS_PARAM: json.dumps(fields, ensure_ascii=False)})


GOOD = json.loads(change().to_top_param())
old_stamp = (datetime.now(UTC) + timedelta(hours=8) - timedelta(minutes=11)).strftime("%Y-%m-%d %H:%M:%S")
REFUSALS: dict[str, tuple[Callable[[], dict[str, str]], str, str | None]] = {
    "missing method": (lambda: _drop(signed(change()), "method"), "21", None),
    "invalid method": (lambda: resign({**signed(change()), "method": "taobao.time.get"}), "22", None),
    "missing app key": (lambda: _drop(signed(change()), "app_key"), "28", None),
    "invalid app key": (lambda: resign({**signed(change()), "app_key": "other"}), "29", None),
    "missing timestamp": (lambda: _drop(signed(change()), "timestamp"), "30", None),
    "stale timestamp": (lambda: resign({**signed(change()), "timestamp": old_stamp}), "31", "isv.invalid-timestamp"),
    "bad timestamp": (lambda: resign({**signed(change()), "timestamp": "2024/01/01"}), "31", "isv.invalid-timestamp"),
    "missing version": (lambda: _drop(signed(change()), "v"), "40", None),
    "bad format": (lambda: resign({**signed(change()), "format": "yaml"}), "41", None),
    "missing signature": (lambda: {k: v for k, v in signed(change()).items() if k != "sign"}, "24", None),
    "bad signature": (lambda: {**signed(change()), "sign": "0" * 64}, "25", None),
    "tampered body": (lambda: {**signed(change()), BUSINESS_PARAM: change("FI2").to_top_param()}, "25", None),
    "bad sign method": (lambda: {**signed(change()), "sign_method": "sha1"}, "25", None),
    "missing business": (lambda: _drop(signed(change()), BUSINESS_PARAM), "40", None),
    "business not json": (lambda: resign({**signed(change()), BUSINESS_PARAM: "{nope"}), "41", None),
    "business not object": (lambda: resign({**signed(change()), BUSINESS_PARAM: "[1]"}), "41", None),
    "business too deep": (lambda: resign({**signed(change()), BUSINESS_PARAM: "[" * 100_000}), "41", None),
    "missing field": (lambda: _business({k: v for k, v in GOOD.items() if k != "loan_apply_no"}), "50", "isv"),
    "wrong type": (lambda: _business({**GOOD, "customer_id": 123}), "50", "isv"),
    "unknown field": (lambda: _business({**GOOD, "amount": "1"}), "50", "isv"),
    "bad date format": (lambda: _business({**GOOD, "change_time": "2024-05-01T09:00:00+08:00"}), "50", "isv"),
    "non-ASCII digits": (lambda: _business({**GOOD, "change_time": "٢٠٢٤-05-01 09:00:00"}), "50", "isv"),
    "unknown status": (lambda: _business({**GOOD, "after_status": "DUE"}), "50", "isv"),
    "illegal pair": (lambda: _business({**GOOD, "before_status": "INVALID", "after_status": "NEW"}), "50", "isv"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_answer_the_platforms_error(client: httpx2.Client, shared_gateway: FakeTopGateway, case: str) -> None:
    """Each broken request gets the platform's error_response code, takes no effect and is recorded."""
    make, code, sub_code = REFUSALS[case]
    before = len(shared_gateway.delivered())
    response = post(client, shared_gateway, make())
    parsed = parse_response(response.content)
    assert response.status_code == 200
    assert parsed.kind == "error"
    assert parsed.code == code
    if sub_code is not None:
        assert (parsed.sub_code or "").startswith(sub_code)
    assert len(shared_gateway.delivered()) == before
    assert shared_gateway.requests[-1].code == code
    assert not classify(response.status_code, response.content).ok


@given(event=change_events())
def test_gateway_reads_back_exactly_the_event(shared_gateway: FakeTopGateway, event: LoanChangeEvent) -> None:
    """Whatever valid event is sent (non-ASCII, optionals or not), the gateway applies the same change."""
    with httpx2.Client() as c:
        response = post(c, shared_gateway, signed(event))
    assert classify(response.status_code, response.content).ok
    record = shared_gateway.requests[-1]
    assert record.event is not None
    assert record.event.to_top_param() == event.to_top_param()
    assert record.request_id == event.request_id
    assert "sign" not in record.params


def test_replay_gets_the_first_answer_and_takes_no_effect(client: httpx2.Client) -> None:
    """The same request_id twice: one effect, the second answer repeats the first (trace_id included)."""
    with FakeTopGateway() as gw:
        first = parse_response(post(client, gw, signed(change())).content)
        again = parse_response(post(client, gw, signed(change(), "md5")).content)
        assert first == again
        assert gw.effects == {change().request_id: 1}
        assert [r.replay for r in gw.requests] == [False, True]
        assert [r.took_effect for r in gw.requests] == [True, False]


def test_a_reused_request_id_is_reported(client: httpx2.Client) -> None:
    """A request_id sent again with a different change is answered as a replay and listed in conflicts."""
    with FakeTopGateway(machine=MACHINE) as gw:
        post(client, gw, signed(change()))
        other = MACHINE.change(
            loan_apply_no="FI1", before="NEW", after="SETTLED", at=change().change_time, request_id=change().request_id
        )
        post(client, gw, signed(other))
        post(client, gw, signed(change()))
        assert gw.delivered() == [change()]
        assert len(gw.conflicts) == 1
        assert "SETTLED" in gw.conflicts[0]


def test_order_violations_and_delivered_per_loan(client: httpx2.Client) -> None:
    """An event whose before_status is not the loan's last after_status is reported; delivered() filters by loan."""
    with FakeTopGateway(machine=MACHINE) as gw:
        post(client, gw, signed(change("A", "NEW", "OVERDUE", 0)))
        post(client, gw, signed(change("B", "NEW", "SETTLED", 1)))
        post(client, gw, signed(change("A", "NEW", "SETTLED", 2)))
        assert [e.after_status for e in gw.delivered("A")] == ["OVERDUE", "SETTLED"]
        assert len(gw.delivered()) == 3
        assert len(gw.order_violations) == 1
        assert "'A'" in gw.order_violations[0]


@pytest.mark.parametrize(("fmt", "simplify"), [("xml", False), ("json", True), ("json", False)])
def test_answers_in_the_requested_shape(client: httpx2.Client, fmt: str, simplify: bool) -> None:
    """format=xml answers XML; simplify=true drops the wrapper; both read back as success."""
    with FakeTopGateway() as gw:
        params = resign({**signed(change()), "format": fmt, **({"simplify": "true"} if simplify else {})})
        response = post(client, gw, params)
        assert response.content.startswith(b"<?xml") == (fmt == "xml")
        assert (b"_response" in response.content) == (not simplify)
        content_type = response.headers["content-type"]
        assert classify(response.status_code, response.content, content_type=content_type, simplify=simplify).ok


def test_xml_is_the_default_reply_format(client: httpx2.Client) -> None:
    """Without a format parameter the gateway answers XML, as the platform does."""
    with FakeTopGateway() as gw:
        response = post(client, gw, _drop(signed(change()), "format"))
        assert response.content.startswith(b"<?xml")
        assert classify(response.status_code, response.content).ok


def test_get_requests_work_too(client: httpx2.Client) -> None:
    """Every parameter in the query string of a GET is read like a POST's."""
    with FakeTopGateway() as gw:
        response = client.get(gw.url, params=signed(change()))
        assert classify(response.status_code, response.content).ok


def _kinds(client: httpx2.Client, gw: FakeTopGateway, count: int) -> list[str]:
    kinds = []
    for i in range(count):
        try:
            response = post(client, gw, signed(change(f"L{i}")))
        except httpx2.TransportError:
            kinds.append("no answer")
        else:
            kinds.append(classify(response.status_code, response.content).kind.value)
    return kinds


def test_fault_schedule_is_deterministic(client: httpx2.Client) -> None:
    """A scheduled plan injects its faults in arrival order, then none; set_faults restarts the schedule."""
    plan = FaultPlan.sequence(Fault.HTTP_503, None, Fault.ISV_ERROR, Fault.DROP, Fault.LATENCY, latency=0.01)
    with FakeTopGateway(faults=plan) as gw:
        assert _kinds(client, gw, 6) == ["transient", "success", "permanent", "no answer", "success", "success"]
        assert [r.fault for r in gw.requests] == [
            Fault.HTTP_503,
            None,
            Fault.ISV_ERROR,
            Fault.DROP,
            Fault.LATENCY,
            None,
        ]
        gw.set_faults([Fault.RATE_LIMIT])
        assert _kinds(client, gw, 2) == ["transient", "success"]
        gw.set_faults(FaultPlan.sequence(Fault.BUSINESS_FAILURE, None, repeat=True))
        assert _kinds(client, gw, 4) == ["permanent", "success", "permanent", "success"]
        # DROP takes effect before the connection goes: the loan's change is in.
        assert gw.effects[change("L3").request_id] == 1


def test_random_faults_are_reproducible_with_a_seed(client: httpx2.Client) -> None:
    """Two gateways with the same seed and plan inject the same faults into the same request sequence."""
    plan = FaultPlan.random({Fault.HTTP_500: 0.3, Fault.ISP_ERROR: 0.3})
    runs = []
    for _ in range(2):
        with FakeTopGateway(faults=plan, seed=42) as gw:
            _kinds(client, gw, 30)
            runs.append([r.fault for r in gw.requests])
    assert runs[0] == runs[1]
    assert {Fault.HTTP_500, Fault.ISP_ERROR, None} == set(runs[0])


def test_bad_settings_are_refused() -> None:
    """A non-loopback host, rates over 1 and asking for the URL of a stopped gateway raise InvalidConfiguration."""
    with pytest.raises(InvalidConfiguration, match="loopback"):
        FakeTopGateway(host="0.0.0.0")
    with pytest.raises(InvalidConfiguration, match="sum"):
        FaultPlan.random({Fault.HTTP_500: 0.7, Fault.DROP: 0.7})
    with pytest.raises(InvalidConfiguration, match="not running"):
        _ = FakeTopGateway().url


def test_fault_plans_that_would_do_nothing_are_refused() -> None:
    """A schedule entry that is not a Fault (a string) or a negative delay raises InvalidConfiguration naming it."""
    with pytest.raises(InvalidConfiguration, match=r"schedule\[1\] 'timeout'"):
        FakeTopGateway(faults=[None, "timeout"])  # type: ignore[list-item]
    with pytest.raises(InvalidConfiguration, match="hang -1"):
        FaultPlan.sequence(Fault.TIMEOUT, hang=-1)
    with pytest.raises(InvalidConfiguration, match="latency"):
        FaultPlan.random({Fault.LATENCY: 0.5}, latency=-0.5)


async def test_async_mode_and_concurrency() -> None:
    """In the running loop, hundreds of concurrent requests each take effect exactly once."""
    events = [change(f"C{i}") for i in range(300)]
    async with (
        FakeTopGateway(machine=MACHINE) as gw,
        # A generous timeout: 300 requests share one loop with the server on a possibly loaded machine.
        httpx2.AsyncClient(limits=httpx2.Limits(max_connections=200), timeout=60.0) as c,
    ):

        async def send(event: LoanChangeEvent) -> bool:
            request = build_request(event, app_key=gw.app_key, app_secret=SECRET, now=datetime.now(UTC))
            url = f"{gw.url}?{request.query_string()}"
            response = await c.post(url, content=request.body(), headers={"Content-Type": CONTENT_TYPE})
            return classify(response.status_code, response.content).ok

        results = await asyncio.gather(*(send(e) for e in events))
        assert all(results)
        assert set(gw.effects.values()) == {1}
        assert len(gw.effects) == 300
        assert "127.0.0.1" in repr(gw)


def test_serve_forever_until_stopped(client: httpx2.Client) -> None:
    """serve_forever() calls ready() once listening, serves requests, and returns when stop is set."""
    gateway = FakeTopGateway()
    listening = threading.Event()
    stop = threading.Event()
    urls: list[str] = []

    def ready(gw: FakeTopGateway) -> None:
        urls.append(gw.url)
        listening.set()

    thread = threading.Thread(target=gateway.serve_forever, args=(ready,), kwargs={"stop": stop})
    thread.start()
    try:
        assert listening.wait(10)
        response = post(client, gateway, signed(change()))
        assert classify(response.status_code, response.content).ok
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert gateway.effects == {change().request_id: 1}
    assert urls[0].startswith("http://127.0.0.1:")


def test_keep_requests_bounds_the_record(client: httpx2.Client) -> None:
    """With keep_requests=n only the latest n requests are kept; effects and deliveries are complete."""
    with FakeTopGateway(keep_requests=2) as gw:
        for i in range(5):
            post(client, gw, signed(change(f"K{i}")))
        assert [r.index for r in gw.requests] == [3, 4]
        assert len(gw.effects) == 5
        assert len(gw.delivered()) == 5


LOST_ANSWER = (Fault.DROP, Fault.MALFORMED)
STATEFUL_FAULTS = [None, Fault.HTTP_503, Fault.ISP_ERROR, Fault.RATE_LIMIT, Fault.ISV_ERROR, *LOST_ANSWER]


class GatewayDeliveryMachine(RuleBasedStateMachine):
    """Loans changing and retrying through a TopNotifier, beside a model of what must have taken effect."""

    def __init__(self) -> None:
        super().__init__()
        self.gateway = FakeTopGateway(machine=MACHINE).__enter__()
        self.notifier = TopNotifier(self.gateway.app_key, SECRET, url=self.gateway.url)
        self.status: dict[str, str] = {}
        self.pending: dict[str, LoanChangeEvent] = {}
        self.applied: dict[str, list[LoanChangeEvent]] = {}
        self.clock = 0

    def _deliver(self, event: LoanChangeEvent, fault: Fault | None) -> None:
        self.gateway.set_faults([fault])
        try:
            self.notifier.send(event)
        except DeliveryError:
            if fault in LOST_ANSWER:
                self._applied(event)
        else:
            self._applied(event)
            self.pending.pop(event.loan_apply_no, None)
            self.status[event.loan_apply_no] = event.after_status

    def _applied(self, event: LoanChangeEvent) -> None:
        done = self.applied.setdefault(event.loan_apply_no, [])
        if event not in done:
            done.append(event)

    @rule(loan=st.sampled_from(["A", "B", "C"]), fault=st.sampled_from(STATEFUL_FAULTS))
    def change(self, loan: str, fault: Fault | None) -> None:
        if loan in self.pending:
            return  # a loan's next change waits for the one in flight (per-loan order)
        before = self.status.get(loan, "NEW")
        self.clock += 1
        event = MACHINE.change(
            loan_apply_no=loan,
            before=before,
            after="OVERDUE" if before == "NEW" else "NEW",
            at=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=self.clock),
            sequence=self.clock,
        )
        self.pending[loan] = event
        self._deliver(event, fault)

    @rule(loan=st.sampled_from(["A", "B", "C"]), fault=st.sampled_from(STATEFUL_FAULTS))
    def retry(self, loan: str, fault: Fault | None) -> None:
        if loan in self.pending:
            self._deliver(self.pending[loan], fault)

    @invariant()
    def each_change_took_effect_once_in_order(self) -> None:
        assert set(self.gateway.effects.values()) <= {1}
        for loan, events in self.applied.items():
            assert self.gateway.delivered(loan) == events
        assert self.gateway.order_violations == []
        assert self.gateway.conflicts == []

    def teardown(self) -> None:
        self.notifier.close()
        self.gateway.__exit__(None, None, None)


GatewayDeliveryMachine.TestCase.settings = settings(stateful_step_count=15, deadline=None)
TestGatewayDelivery = GatewayDeliveryMachine.TestCase


@settings(max_examples=15, deadline=None)
@given(
    event=change_events(), method=st.sampled_from(["md5", "hmac", "hmac-sha256"]), fmt=st.sampled_from(["json", "xml"])
)
def test_the_notifier_sends_system_parameters_and_sign_in_the_query_only(
    shared_gateway: FakeTopGateway, event: LoanChangeEvent, method: str, fmt: str
) -> None:
    """For every sign method, each system parameter and sign arrive in the query, the business one in the body."""
    with TopNotifier(shared_gateway.app_key, SECRET, url=shared_gateway.url, sign_method=method, format=fmt) as n:
        n.send(event)
    arrived = dict(shared_gateway.requests[-1].arrived)
    assert arrived.pop(BUSINESS_PARAM) == "body"
    assert set(arrived.values()) == {"query"}
    assert {"app_key", "method", "timestamp", "v", "sign_method", "format", "sign"} <= set(arrived)
    assert shared_gateway.requests[-1].code is None


def _split(params: dict[str, str], *, sign_in_body: bool = False, sign_in_both: bool = False) -> tuple[str, bytes]:
    in_body = {BUSINESS_PARAM} | ({"sign"} if sign_in_body or sign_in_both else set())
    query = encode_form({k: v for k, v in params.items() if k not in in_body or (sign_in_both and k == "sign")})
    return query, encode_form({k: v for k, v in params.items() if k in in_body}).encode()


@pytest.mark.parametrize("method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize("placement", ["body", "both", "lower case"])
def test_a_misplaced_or_lower_case_signature_is_refused(client: httpx2.Client, method: str, placement: str) -> None:
    """Like the platform, the gateway takes sign from the query only, in upper-case hex: else code 25, no effect."""
    params = signed(change(), method)
    with FakeTopGateway(machine=MACHINE) as gw:
        if placement == "lower case":
            query, body = _split({**params, "sign": params["sign"].lower()})
        else:
            query, body = _split(params, sign_in_body=placement == "body", sign_in_both=placement == "both")
        response = client.post(f"{gw.url}?{query}", content=body, headers={"Content-Type": CONTENT_TYPE})
        parsed = parse_response(response.content)
        assert (parsed.kind, parsed.code) == ("error", "25")
        assert gw.effects == {}
        assert gw.requests[-1].arrived["sign"] == {"body": "body", "both": "both"}.get(placement, "query")
        query, body = _split(params)  # the same request, as the SDKs send it, passes
        response = client.post(f"{gw.url}?{query}", content=body, headers={"Content-Type": CONTENT_TYPE})
        assert classify(response.status_code, response.content).ok


def test_a_wrong_secret_and_a_skewed_clock_answer_25_and_31() -> None:
    """A wrong app secret gets code 25 and a clock 20 minutes off code 31, as on the platform: both systemic."""
    skewed = datetime.now(UTC) + timedelta(minutes=20)
    with FakeTopGateway(machine=MACHINE) as gw:
        for notifier, code, cause in (
            (TopNotifier(gw.app_key, "wrong-secret", url=gw.url), "25", "signature"),
            (TopNotifier(gw.app_key, SECRET, url=gw.url, clock=lambda: skewed), "31", "timestamp"),
        ):
            with notifier, pytest.raises(SystemicDeliveryError) as caught:
                notifier.send(change())
            assert (caught.value.code, caught.value.cause) == (code, cause)
            assert gw.requests[-1].code == code
        assert gw.effects == {}


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"app_key": ""}, "app_key"),
        ({"app_key": 7}, "app_key"),
        ({"app_secret": " "}, "app_secret"),
        ({"machine": "default"}, "machine"),
        ({"seed": "1"}, "seed"),
        ({"latency": -1}, "latency"),
        ({"latency": float("nan")}, "latency"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"clock": "now"}, "clock"),
        ({"keep_requests": 0}, "keep_requests"),
        ({"ssl_context": "tls"}, "ssl_context"),
        ({"host": "127.0.0.1\n"}, "host"),
    ],
)
def test_gateway_settings_are_checked_at_construction(options: dict[str, object], setting: str) -> None:
    """A wrong-typed or wrong-valued gateway setting raises InvalidConfiguration naming it, before it listens."""
    with pytest.raises(InvalidConfiguration) as info:
        FakeTopGateway(**options)  # type: ignore[arg-type]
    assert info.value.setting == setting


@pytest.mark.parametrize(
    ("make", "setting"),
    [
        (lambda: FaultPlan(schedule="timeout"), "schedule"),  # type: ignore[arg-type]
        (lambda: FaultPlan(schedule=Fault.DROP), "schedule"),  # type: ignore[arg-type]
        (lambda: FaultPlan(rates=[Fault.DROP]), "rates"),  # type: ignore[arg-type]
        (lambda: FaultPlan(rates={Fault.DROP: float("nan")}), "fault rate"),
        (lambda: FaultPlan(rates={Fault.DROP: "0.5"}), "fault rate"),  # type: ignore[dict-item]
        (lambda: FaultPlan(repeat="yes"), "repeat"),  # type: ignore[arg-type]
        (lambda: FaultPlan(latency=float("inf")), "latency"),
        (lambda: FaultPlan(retry_after=1.5), "retry_after"),  # type: ignore[arg-type]
    ],
)
def test_fault_plan_settings_are_checked(make: Callable[[], FaultPlan], setting: str) -> None:
    """A FaultPlan with a wrong-typed or impossible setting raises InvalidConfiguration naming it."""
    with pytest.raises(InvalidConfiguration) as info:
        make()
    assert info.value.setting == setting
