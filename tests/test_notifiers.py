"""The notifier protocol's test doubles: InMemoryNotifier and CallbackNotifier, sync and async."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from loanstate import (
    AsyncCallbackNotifier,
    AsyncInMemoryNotifier,
    AsyncNotifier,
    CallbackNotifier,
    InMemoryNotifier,
    InvalidConfiguration,
    LoanChangeEvent,
    Notifier,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
    default_machine,
)

MACHINE = default_machine()
AT = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)


def fixed_clock() -> datetime:
    return AT


def event(n: int = 0, before: str = "NEW", after: str = "OVERDUE") -> LoanChangeEvent:
    return MACHINE.change(loan_apply_no=f"FI{n}", before=before, after=after, at=AT, sequence=1)


def test_doubles_satisfy_the_protocols() -> None:
    """Each double is a Notifier or AsyncNotifier as the runtime protocol check sees it."""
    assert isinstance(InMemoryNotifier(), Notifier)
    assert isinstance(CallbackNotifier(lambda e: None), Notifier)
    assert isinstance(AsyncInMemoryNotifier(), AsyncNotifier)

    async def accept(e: LoanChangeEvent) -> None:
        return None

    assert isinstance(AsyncCallbackNotifier(accept), AsyncNotifier)


@given(script=st.lists(st.sampled_from(["ok", "transient", "permanent"]), max_size=20))
def test_in_memory_follows_its_script(script: list[str]) -> None:
    """fail_next queues failures in order; sent holds exactly the accepted events, attempts every call."""
    notifier = InMemoryNotifier(clock=fixed_clock)
    events = [event(i) for i in range(len(script))]
    for step in script:
        if step == "transient":
            notifier.fail_next(1, TransientDeliveryError)
        elif step == "permanent":
            notifier.fail_next(1, PermanentDeliveryError)
        else:
            notifier.fail_next(0)
    outcomes = []
    answered_ids = []
    for e in events:
        try:
            receipt = notifier.send(e)
        except TransientDeliveryError as exc:
            answered_ids.append(exc.request_id)
            outcomes.append("transient")
        except PermanentDeliveryError as exc:
            answered_ids.append(exc.request_id)
            outcomes.append("permanent")
        else:
            answered_ids.append(receipt.request_id)
            assert receipt.delivered_at == AT
            outcomes.append("ok")
    assert answered_ids == [e.request_id for e in events]
    failures = [s for s in script if s != "ok"]
    assert outcomes[: len(failures)] == failures
    assert notifier.attempts == events
    assert notifier.sent == events[len(failures) :]


def test_fail_when_holds_until_cleared() -> None:
    """A predicate failure applies to every matching event until clear_failures()."""
    notifier = InMemoryNotifier()
    notifier.fail_when(lambda e: e.loan_apply_no == "FI1", PermanentDeliveryError)
    notifier.send(event(0))
    for _ in range(3):
        with pytest.raises(PermanentDeliveryError):
            notifier.send(event(1))
    notifier.clear_failures()
    notifier.send(event(1))
    assert [e.loan_apply_no for e in notifier.sent] == ["FI0", "FI1"]
    assert len(notifier.attempts) == 5


def test_fail_next_with_an_instance_raises_that_instance() -> None:
    """A ready-made error instance is raised as given (codes and retry_after kept)."""
    error = TransientDeliveryError("rate limited", code="7", retry_after=2.0)
    notifier = InMemoryNotifier()
    notifier.fail_next(error=error)
    with pytest.raises(TransientDeliveryError) as info:
        notifier.send(event())
    assert info.value is error
    assert notifier.sent == []


def test_in_memory_is_thread_safe() -> None:
    """Concurrent senders lose no record: every event is in attempts and sent exactly once."""
    notifier = InMemoryNotifier()
    events = [event(i) for i in range(400)]

    def worker(chunk: list[LoanChangeEvent]) -> None:
        for e in chunk:
            notifier.send(e)

    threads = [threading.Thread(target=worker, args=(events[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.loan_apply_no for e in notifier.sent) == sorted(e.loan_apply_no for e in events)
    assert len(notifier.attempts) == 400


async def test_async_in_memory_has_the_same_surface() -> None:
    """The async twin scripts failures and records like the sync one."""
    async with AsyncInMemoryNotifier(clock=fixed_clock) as notifier:
        notifier.fail_next(2)
        notifier.fail_when(lambda e: e.after_status == "SETTLED", PermanentDeliveryError)
        for _ in range(2):
            with pytest.raises(TransientDeliveryError):
                await notifier.send(event(0))
        receipt = await notifier.send(event(0))
        with pytest.raises(PermanentDeliveryError):
            await notifier.send(event(1, after="SETTLED"))
        notifier.clear_failures()
        await notifier.send(event(1, after="SETTLED"))
    assert receipt.delivered_at == AT
    assert [e.loan_apply_no for e in notifier.sent] == ["FI0", "FI1"]
    assert len(notifier.attempts) == 5


def test_callback_receipt_or_none() -> None:
    """A callback's receipt is returned as is; None makes one from the event and the clock."""
    given_receipt = Receipt("x", "t", "SUCCESS", "ok", AT)
    assert CallbackNotifier(lambda e: given_receipt).send(event()) is given_receipt
    with CallbackNotifier(lambda e: None, clock=fixed_clock) as notifier:
        made = notifier.send(event())
    assert made == Receipt(event().request_id, None, None, None, AT)


def test_callback_errors_propagate() -> None:
    """A DeliveryError raised by the callback reaches the caller unchanged."""

    def refuse(e: LoanChangeEvent) -> Receipt | None:
        raise PermanentDeliveryError("no", request_id=e.request_id)

    with pytest.raises(PermanentDeliveryError, match="no"):
        CallbackNotifier(refuse).send(event())


async def test_async_callback() -> None:
    """The async callback notifier awaits the function and makes a receipt for None."""
    seen: list[LoanChangeEvent] = []

    async def record(e: LoanChangeEvent) -> None:
        seen.append(e)

    async with AsyncCallbackNotifier(record, clock=fixed_clock) as notifier:
        receipt = await notifier.send(event())
    assert seen == [event()]
    assert receipt.delivered_at == AT
    assert "record" in repr(notifier)


def loan_is(name: str) -> Callable[[LoanChangeEvent], bool]:
    return lambda e: e.loan_apply_no == name


class InMemoryNotifierMachine(RuleBasedStateMachine):
    """InMemoryNotifier beside a tiny model: a queue of scripted failures and a list of predicates."""

    def __init__(self) -> None:
        super().__init__()
        self.notifier = InMemoryNotifier(clock=fixed_clock)
        self.queued: list[str] = []
        self.failing_loans: list[tuple[str, str]] = []
        self.sent: list[LoanChangeEvent] = []
        self.attempts = 0

    @rule(count=st.integers(0, 3), kind=st.sampled_from(["transient", "permanent"]))
    def fail_next(self, count: int, kind: str) -> None:
        error = TransientDeliveryError if kind == "transient" else PermanentDeliveryError
        self.notifier.fail_next(count, error)
        self.queued += [kind] * count

    @rule(loan=st.integers(0, 3), kind=st.sampled_from(["transient", "permanent"]))
    def fail_when(self, loan: int, kind: str) -> None:
        error = TransientDeliveryError if kind == "transient" else PermanentDeliveryError
        self.notifier.fail_when(loan_is(f"FI{loan}"), error)
        self.failing_loans.append((f"FI{loan}", kind))

    @rule()
    def clear(self) -> None:
        self.notifier.clear_failures()
        self.queued.clear()
        self.failing_loans.clear()

    @rule(loan=st.integers(0, 3))
    def send(self, loan: int) -> None:
        e = event(loan)
        expected = self.queued.pop(0) if self.queued else None
        if expected is None:
            expected = next((kind for name, kind in self.failing_loans if name == e.loan_apply_no), None)
        outcome: str
        try:
            self.notifier.send(e)
            outcome = "ok"
        except TransientDeliveryError:
            outcome = "transient"
        except PermanentDeliveryError:
            outcome = "permanent"
        self.attempts += 1
        if expected is None:
            self.sent.append(e)
        assert outcome == (expected or "ok")

    @invariant()
    def records_agree(self) -> None:
        assert self.notifier.sent == self.sent
        assert len(self.notifier.attempts) == self.attempts


TestInMemoryNotifierMachine = InMemoryNotifierMachine.TestCase


def test_scripts_that_cannot_work_are_refused() -> None:
    """A negative count, an error that is no DeliveryError or a predicate that is not callable fail when scripted."""
    notifier = InMemoryNotifier()
    with pytest.raises(InvalidConfiguration, match="count -1"):
        notifier.fail_next(-1)
    with pytest.raises(InvalidConfiguration, match="ValueError"):
        notifier.fail_next(1, ValueError)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfiguration, match="predicate"):
        notifier.fail_when("FI1")  # type: ignore[arg-type]
    notifier.send(event())
    assert len(notifier.sent) == 1
