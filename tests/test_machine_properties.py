"""Properties of LoanMachine and LoanChangeEvent over random lifecycles and events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loanstate import (
    IllegalTransition,
    InvalidDefinition,
    LoanChangeEvent,
    LoanMachine,
    Transition,
    default_machine,
    derive_request_id,
)
from loanstate._events import TOP_TIMEZONE, format_top_time
from loanstate.testing import (
    BrokenDefinition,
    broken_definitions,
    change_events,
    change_times,
    definitions,
    illegal_pairs,
    legal_pairs,
    loan_numbers,
)

MACHINE = default_machine()
AT = datetime(2024, 1, 1, tzinfo=UTC)


class _Model:
    """A throwaway transitions model, used only to ask the engine directly."""

    state: str


@given(definitions())
def test_sound_definitions_are_accepted(data: dict[str, Any]) -> None:
    """Every sound definition builds, reports no problem, and keeps its statuses."""
    assert LoanMachine.problems_in_dict(data) == []
    machine = LoanMachine.from_dict(data)
    assert machine.check() == []
    assert machine.initial in machine.statuses


@given(broken_definitions())
def test_broken_definitions_are_rejected_with_their_problems(broken: BrokenDefinition) -> None:
    """A definition with planted mistakes is refused, reporting exactly the problems planted."""
    with pytest.raises(InvalidDefinition) as info:
        LoanMachine.from_dict(broken.data)
    assert tuple(sorted(p.code for p in info.value.problems)) == broken.codes, broken.mistakes
    assert tuple(sorted(p.code for p in LoanMachine.problems_in_dict(broken.data))) == broken.codes


# 40: each example builds a transitions Machine and checks every pair of statuses, exhaustively.
@settings(max_examples=40)
@given(definitions())
def test_compiled_table_agrees_with_transitions(data: dict[str, Any]) -> None:
    """For every pair of statuses, the compiled table and the transitions engine give the same answer."""
    machine = LoanMachine.from_dict(data)
    engine = machine._engine
    for before in machine.statuses:
        engine_targets = {t.dest for event in engine.events.values() for t in event.transitions.get(before, ())}
        assert engine_targets == machine.allowed(before)
        for after in machine.statuses:
            assert machine.is_legal(before, after) == (after in engine_targets)
        # Firing each trigger on a real model lands where after() says it does.
        for trigger in engine.get_triggers(before):
            model = _Model()
            engine.add_model(model, initial=before)
            try:
                model.trigger(trigger)  # type: ignore[attr-defined]
                assert model.state == machine.after(before, trigger)
            finally:
                engine.remove_model(model)


def _constant(answer: bool) -> Any:
    def guard(event: LoanChangeEvent) -> bool:
        return answer

    return guard


# 40: each example builds a transitions Machine with guards and fires every pair's trigger.
@settings(max_examples=40)
@given(st.data(), definitions())
def test_guarded_change_agrees_with_firing_the_trigger(data: st.DataObject, definition: dict[str, Any]) -> None:
    """With guards on random transitions, change() accepts a pair exactly when transitions fires its trigger."""
    guarded = dict(definition)
    guarded["transitions"] = [
        {**t, "guard": _constant(data.draw(st.booleans(), label="guard"))} if data.draw(st.booleans()) else t
        for t in definition.get("transitions", [])
    ]
    machine = LoanMachine.from_dict(guarded)
    engine = machine._engine
    for t in machine.transitions:
        trigger = t.trigger or f"to_{t.after}"
        for before in t.before:
            event = LoanChangeEvent("FI1", before, t.after, AT, "rid")
            model = _Model()
            engine.add_model(model, initial=before)
            try:
                fired = bool(model.trigger(trigger, event))  # type: ignore[attr-defined]
            finally:
                engine.remove_model(model)
            refusal: str | None = None
            try:
                machine.change(loan_apply_no="FI1", before=before, after=t.after, at=AT, sequence=1)
            except IllegalTransition as exc:
                refusal = exc.reason
            assert refusal == (None if fired else "refused by its guard"), (before, t.after, trigger)
            assert machine.is_guarded(before, t.after) == (t.guard is not None)


@given(st.data(), definitions())
def test_change_never_returns_an_illegal_event(data: st.DataObject, definition: dict[str, Any]) -> None:
    """change() returns an event exactly for legal pairs, else IllegalTransition with the allowed set."""
    machine = LoanMachine.from_dict(definition)
    before = data.draw(st.sampled_from(sorted(machine.statuses)))
    after = data.draw(st.sampled_from(sorted(machine.statuses)))
    at = data.draw(change_times())
    if machine.is_legal(before, after):
        event = machine.change(loan_apply_no="FI1", before=before, after=after, at=at, sequence=1)
        assert (event.before_status, event.after_status, event.change_time) == (before, after, at)
    else:
        with pytest.raises(IllegalTransition) as info:
            machine.change(loan_apply_no="FI1", before=before, after=after, at=at, sequence=1)
        assert info.value.allowed == machine.allowed(before)
        assert (info.value.before, info.value.after) == (before, after)


@given(illegal_pairs(), loan_numbers(), change_times())
def test_illegal_pairs_always_raise(pair: tuple[str, str], loan: str, at: datetime) -> None:
    """On the default machine every illegal pair of known statuses raises IllegalTransition."""
    with pytest.raises(IllegalTransition) as info:
        MACHINE.change(loan_apply_no=loan, before=pair[0], after=pair[1], at=at, sequence=1)
    assert info.value.allowed == MACHINE.allowed(pair[0])


@given(legal_pairs(), loan_numbers(), change_times())
def test_legal_pairs_always_change(pair: tuple[str, str], loan: str, at: datetime) -> None:
    """On the default machine every legal pair yields an event of that pair."""
    event = MACHINE.change(loan_apply_no=loan, before=pair[0], after=pair[1], at=at, sequence=1)
    assert (event.before_status, event.after_status, event.loan_apply_no) == (pair[0], pair[1], loan)


@given(change_events())
def test_events_round_trip_through_dict_and_json(event: LoanChangeEvent) -> None:
    """to_dict -> JSON -> from_dict gives back an equal event, and the machine accepts it."""
    data = json.loads(json.dumps(event.to_dict()))
    assert LoanChangeEvent.from_dict(data, machine=MACHINE) == event


@given(change_events())
def test_top_param_carries_every_field(event: LoanChangeEvent) -> None:
    """to_top_param() is compact JSON with exactly the present fields, time in GMT+8 to the second."""
    param = event.to_top_param()
    decoded = json.loads(param)
    # Compact separators, keys sorted, non-ASCII raw: re-encoding the same way gives the same text.
    assert param == json.dumps(decoded, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    expected = {k: v for k, v in event.to_dict().items() if k != "change_time"}
    expected["change_time"] = format_top_time(event.change_time)
    assert decoded == expected
    sent = datetime.strptime(decoded["change_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=TOP_TIMEZONE)
    assert timedelta(0) <= event.change_time - sent < timedelta(seconds=1)


@given(change_events(), st.integers(0, 10**9))
def test_same_change_same_request_id(event: LoanChangeEvent, sequence: int) -> None:
    """Replaying a change (in any time zone, with the same sequence) derives the same request_id."""
    first = derive_request_id(
        event.loan_apply_no, event.before_status, event.after_status, event.change_time, sequence=sequence
    )
    again = derive_request_id(
        event.loan_apply_no,
        event.before_status,
        event.after_status,
        event.change_time.astimezone(UTC),
        sequence=sequence,
    )
    assert first == again
    assert (
        MACHINE.change(
            loan_apply_no=event.loan_apply_no,
            before=event.before_status,
            after=event.after_status,
            at=event.change_time,
            sequence=sequence,
        ).request_id
        == first
    )


@given(
    st.lists(
        st.tuples(loan_numbers(), legal_pairs(), change_times(), st.integers(0, 10**6)),
        unique=True,
        min_size=2,
        max_size=30,
    )
)
def test_different_changes_different_request_ids(
    changes: list[tuple[str, tuple[str, str], datetime, int]],
) -> None:
    """Distinct changes never share a request_id, and every id fits the API's rules."""
    distinct = {(loan, pair, at.astimezone(UTC), seq) for loan, pair, at, seq in changes}
    ids = {derive_request_id(loan, pair[0], pair[1], at, sequence=seq) for loan, pair, at, seq in changes}
    assert len(ids) == len(distinct)
    assert all(len(rid) <= 64 and rid.isalnum() for rid in ids)


@given(st.booleans(), change_times())
def test_guard_verdict_matches_transitions(verdict: bool, at: datetime) -> None:
    """A guarded change succeeds exactly when transitions, firing the trigger on a model, lets it through."""
    machine = LoanMachine.define(
        statuses=["A", "B"],
        initial="A",
        terminal=["B"],
        transitions=[Transition("A", "B", "go", guard=lambda event: verdict)],
    )
    model = _Model()
    machine._engine.add_model(model, initial="A")
    try:
        moved = model.trigger("go", None)  # type: ignore[attr-defined]
    finally:
        machine._engine.remove_model(model)
    if moved:
        assert machine.change(loan_apply_no="L", before="A", after="B", at=at, sequence=1).after_status == "B"
    else:
        with pytest.raises(IllegalTransition, match="guard"):
            machine.change(loan_apply_no="L", before="A", after="B", at=at, sequence=1)
