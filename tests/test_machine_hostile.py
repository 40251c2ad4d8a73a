"""LoanMachine under wrong and hostile input: a typed error or the correct result, never a raw TypeError."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import Hostile, HostileStr, Number, Status, hostile_texts, hostile_times, hostile_values, machines

from loanstate import (
    IllegalTransition,
    InvalidDefinition,
    InvalidEvent,
    LoanChangeEvent,
    LoanMachine,
    LoanStateError,
    Transition,
    default_machine,
    derive_request_id,
)
from loanstate._definition import Definition
from loanstate._errors import shorten

MACHINE = default_machine()
AT = datetime(2024, 1, 1, tzinfo=UTC)
GOOD: dict[str, Any] = {"loan_apply_no": "FI1", "before": "NEW", "after": "OVERDUE", "at": AT, "sequence": 1}


# -- request ids never collide ----------------------------------------------------------------


def test_change_without_request_id_needs_the_sequence() -> None:
    """Without request_id, change() refuses to guess: InvalidEvent names the missing sequence."""
    with pytest.raises(InvalidEvent) as info:
        MACHINE.change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=AT)
    assert set(info.value.errors) == {"sequence"}
    assert "request_id" in info.value.errors["sequence"]
    assert MACHINE.change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=AT, request_id="r1").request_id == "r1"


def test_a_repeated_pair_at_one_instant_gets_new_ids() -> None:
    """NEW->OVERDUE, OVERDUE->NEW, NEW->OVERDUE at one instant: three ids (the finding); a replay: the same."""
    path = [("NEW", "OVERDUE"), ("OVERDUE", "NEW"), ("NEW", "OVERDUE")]
    ids = [
        MACHINE.change(loan_apply_no="FI1", before=b, after=a, at=AT, sequence=n).request_id
        for n, (b, a) in enumerate(path, start=1)
    ]
    assert len(set(ids)) == 3
    replay = MACHINE.change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=AT, sequence=3)
    assert replay.request_id == ids[2]
    assert ids[0] == derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=1)


@given(machines(), st.data())
def test_one_loans_changes_never_share_an_id(machine: LoanMachine, data: st.DataObject) -> None:
    """Any path of one loan, at one instant or not, numbered 1, 2, 3, ...: every request_id differs."""
    status, ids = machine.initial, []
    at = data.draw(st.sampled_from([AT, AT + timedelta(microseconds=1)]))
    for sequence in range(1, data.draw(st.integers(1, 12)) + 1):
        options = sorted(machine.allowed(status))
        if not options:
            break
        after = data.draw(st.sampled_from(options))
        ids.append(machine.change(loan_apply_no="L", before=status, after=after, at=at, sequence=sequence).request_id)
        status = after
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "sequence",
    [-1, True, 1.0, "1", b"1", [1], Hostile(), -(10**5000)],
    ids=["negative", "bool", "float", "str", "bytes", "list", "hostile", "huge-negative"],
)
def test_a_bad_sequence_is_named(sequence: object) -> None:
    """A sequence that is not a whole number of 0 or more is InvalidEvent naming sequence (request_id or not)."""
    for request_id in (None, "r1"):
        with pytest.raises(InvalidEvent) as info:
            MACHINE.change(**{**GOOD, "sequence": sequence, "request_id": request_id})
        assert set(info.value.errors) == {"sequence"}
        assert len(str(info.value)) < 300


def test_an_int_subclass_sequence_counts_as_its_value() -> None:
    """An IntEnum sequence derives the same id as the plain int."""
    assert MACHINE.change(**{**GOOD, "sequence": Number.ONE}).request_id == MACHINE.change(**GOOD).request_id


# -- str subclasses are their value -------------------------------------------------------------


def test_strenum_statuses_work_everywhere() -> None:
    """StrEnum members pass is_legal, allowed, after, is_guarded and change alike; the event holds plain strings."""
    assert MACHINE.is_legal(Status.NEW, Status.OVERDUE)
    assert MACHINE.allowed(Status.NEW) == {"OVERDUE", "SETTLED", "INVALID"}
    assert MACHINE.after(Status.NEW, "settle") == "SETTLED"
    assert not MACHINE.is_guarded(Status.NEW, Status.OVERDUE)
    event = MACHINE.change(**{**GOOD, "before": Status.NEW, "after": Status.OVERDUE})
    assert event == MACHINE.change(**GOOD)
    assert type(event.before_status) is str
    assert type(event.after_status) is str
    with pytest.raises(IllegalTransition):
        MACHINE.change(**{**GOOD, "before": Status.INVALID, "after": Status.NEW})


def test_a_str_subclass_whose_methods_raise_is_read_as_its_value() -> None:
    """A str subclass with raising __hash__, __eq__ and methods is used only as its plain value."""
    event = MACHINE.change(
        loan_apply_no=HostileStr("FI1"),
        before=HostileStr("NEW"),
        after=HostileStr("OVERDUE"),
        at=AT,
        customer_id=HostileStr("C1"),
        sequence=1,
    )
    assert event == MACHINE.change(**GOOD, customer_id="C1")
    assert MACHINE.is_legal(HostileStr("NEW"), HostileStr("OVERDUE"))
    with pytest.raises(IllegalTransition, match="does not apply"):
        MACHINE.after(HostileStr("NEW"), HostileStr("cure"))


# -- wrong types at every entry point -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 1, 1.5, b"NEW", ["NEW"], {"NEW": 1}, ("NEW",), object(), Hostile(), "NEW\x00", "x" * 1_000_000],
    ids=["none", "int", "float", "bytes", "list", "dict", "tuple", "object", "hostile", "nul", "megabyte"],
)
def test_a_status_of_any_wrong_type_is_unknown(value: object) -> None:
    """Any value that is not a declared status: is_legal says no, allowed/after/change raise InvalidEvent naming it."""
    assert MACHINE.is_legal(value, "NEW") is False  # type: ignore[arg-type]
    assert MACHINE.is_legal("NEW", value) is False  # type: ignore[arg-type]
    assert MACHINE.is_guarded(value, value) is False  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent) as info:
        MACHINE.allowed(value)  # type: ignore[arg-type]
    assert len(str(info.value)) < 300
    with pytest.raises(InvalidEvent):
        MACHINE.after(value, "settle")  # type: ignore[arg-type]
    with pytest.raises(IllegalTransition):
        MACHINE.after("NEW", value)  # type: ignore[arg-type]
    for side in ("before", "after"):
        with pytest.raises(InvalidEvent) as caught:
            MACHINE.change(**{**GOOD, side: value})
        assert set(caught.value.errors) == {f"{side}_status"}
        assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("field", "argument", "value"),
    [
        ("loan_apply_no", "loan_apply_no", "FI\x00001"),
        ("loan_apply_no", "loan_apply_no", "FI\ud800"),
        ("loan_apply_no", "loan_apply_no", None),
        ("loan_apply_no", "loan_apply_no", 12345),
        ("loan_apply_no", "loan_apply_no", Hostile()),
        ("loan_apply_no", "loan_apply_no", "A" * 1_000_000),
        ("customer_id", "customer_id", "\x1b]0;pwned\x07"),
        ("institution_loan_no", "institution_loan_no", ["L-1"]),
        ("request_id", "request_id", "r\ud800"),
        ("request_id", "request_id", 7),
        ("change_time", "at", "2024-01-01 08:00:00"),
        ("change_time", "at", datetime(2024, 1, 1)),
        ("change_time", "at", None),
        ("change_time", "at", Hostile()),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 and value.isprintable() else None,
)
def test_a_bad_field_is_named_on_the_way_in(field: str, argument: str, value: object) -> None:
    """A bad loan number, optional, request id or time is InvalidEvent naming the field, with a short message."""
    with pytest.raises(InvalidEvent) as info:
        MACHINE.change(**{**GOOD, argument: value})
    assert field in info.value.errors
    assert len(str(info.value)) < 400


def _typed_or_right(call: Any, *args: Any, **kwargs: Any) -> object:
    """Call, allowing only loanstate's own errors to come out."""
    try:
        return call(*args, **kwargs)
    except LoanStateError:
        return None


@settings(max_examples=150)
@given(
    st.sampled_from(["loan_apply_no", "before", "after", "at", "customer_id", "institution_loan_no", "request_id"]),
    st.sampled_from(["sequence", "request_id"]),
    hostile_values(),
)
def test_change_gives_a_typed_error_or_a_valid_event(argument: str, keyed_by: str, value: object) -> None:
    """change() with any hostile value in any argument raises a LoanStateError or returns a valid event."""
    kwargs = {**GOOD, argument: value}
    if keyed_by == "request_id" and argument != "request_id":
        kwargs.update(request_id="r1", sequence=None)
    event = _typed_or_right(MACHINE.change, **kwargs)
    if event is not None:
        assert isinstance(event, LoanChangeEvent)
        assert LoanChangeEvent.from_dict(event.to_dict(), machine=MACHINE) == event
        assert LoanChangeEvent.from_top_param(event.to_top_param()).request_id == event.request_id


@given(hostile_values(), hostile_values())
def test_reading_methods_give_a_typed_error_or_an_answer(first: object, second: object) -> None:
    """is_legal, is_guarded, allowed and after: a bool, a set, a status, or a LoanStateError, for any input."""
    assert MACHINE.is_legal(first, second) in (True, False)  # type: ignore[arg-type]
    assert MACHINE.is_guarded(first, second) in (True, False)  # type: ignore[arg-type]
    allowed = _typed_or_right(MACHINE.allowed, first)
    assert allowed is None or allowed <= MACHINE.statuses  # type: ignore[operator]
    after = _typed_or_right(MACHINE.after, first, second)
    assert after is None or after in MACHINE.statuses


@given(hostile_texts() | hostile_values(), hostile_times() | hostile_values())
def test_derive_request_id_gives_a_typed_error_or_a_valid_id(loan: object, at: object) -> None:
    """derive_request_id with hostile inputs raises InvalidEvent or gives a well-formed id."""
    rid = _typed_or_right(derive_request_id, loan, "NEW", "OVERDUE", at, sequence=1)
    assert rid is None or (isinstance(rid, str) and len(rid) == 48 and rid.isalnum())


# -- definitions with wrong types ------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"statuses": None},
        {"statuses": 5},
        {"statuses": {"A": 5, "B": ""}},
        {"statuses": {1: "one", "A": "", "B": ""}},
        {"transitions": None},
        {"transitions": 5},
        {"transitions": [Transition("A", "B"), None]},
        {"terminal": None},
        {"terminal": [["B"]]},
        {"initial": None},
        {"initial": 5},
        {"name": 5},
        {"name": "x" * 100},
        {"name": "bell\x07"},
        {"transitions": [Transition("A", "B", trigger=5)]},
        {"transitions": [Transition("A", "B", trigger="not valid")]},
        {"transitions": [Transition("A", "B", guard=5)]},  # type: ignore[arg-type]
        {"transitions": [Transition(None, "B")]},
        {"transitions": [Transition([["A"]], "B")]},
        {"transitions": [Transition("A", ["B"])]},
        {"transitions": [Transition("A", None)]},
        {"transitions": [Transition(Hostile(), Hostile(), Hostile(), Hostile())]},  # type: ignore[arg-type]
        {"transitions": [Transition(iter([Hostile()]), "B")]},
    ],
)
def test_define_with_wrong_types_is_an_invalid_definition(arguments: dict[str, Any]) -> None:
    """Wrong types anywhere in define() are problems in InvalidDefinition, never TypeError or AttributeError."""
    base: dict[str, Any] = {
        "statuses": ["A", "B"],
        "initial": "A",
        "terminal": ["B"],
        "transitions": [Transition("A", "B")],
    }
    with pytest.raises(InvalidDefinition) as info:
        LoanMachine.define(**{**base, **arguments})
    assert info.value.problems
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize(
    "data",
    [
        {"lifecycle": {"initial": "A", "terminal": None}, "statuses": ["A"]},
        {"lifecycle": {"initial": "A"}, "statuses": None},
        {"lifecycle": {"initial": "A"}, "statuses": ["A", 5]},
        {"lifecycle": {"initial": "A", "name": ["x"]}, "statuses": ["A"]},
        {"lifecycle": None, "statuses": ["A"]},
        {"lifecycle": {"initial": "A", "terminal": ["B"]}, "statuses": ["A", "B"], "transitions": None},
        {
            "lifecycle": {"initial": "A", "terminal": ["B"]},
            "statuses": ["A", "B"],
            "transitions": [{"before": "A", "after": "B", "trigger": 5, "guard": "yes"}],
        },
        {
            "lifecycle": {"initial": "A", "terminal": ["B"]},
            "statuses": ["A", "B"],
            "transitions": [{"before": ["A", None], "after": {"B": 1}}],
        },
        {(1, 2): "tuple key", "lifecycle": {"initial": "A"}, "statuses": ["A"]},
    ],
)
def test_from_dict_with_wrong_types_is_an_invalid_definition(data: dict[Any, Any]) -> None:
    """Wrong types anywhere in a definition mapping are problems, never TypeError or AttributeError."""
    with pytest.raises(InvalidDefinition):
        LoanMachine.from_dict(data)
    assert LoanMachine.problems_in_dict(data)


@given(
    st.sampled_from(["statuses", "initial", "terminal", "transitions", "name"]),
    hostile_values(),
)
def test_define_gives_a_typed_error_or_a_machine(argument: str, value: object) -> None:
    """define() with a hostile value in any argument raises InvalidDefinition or builds a sound machine."""
    base: dict[str, Any] = {
        "statuses": ["NEW", "OVERDUE"],
        "initial": "NEW",
        "terminal": ["OVERDUE"],
        "transitions": [Transition("NEW", "OVERDUE")],
    }
    machine = _typed_or_right(LoanMachine.define, **{**base, argument: value})
    assert machine is None or machine.check() == []  # type: ignore[attr-defined]


@given(
    st.sampled_from(["lifecycle", "statuses", "transitions", "initial", "terminal", "name", "before", "after"]),
    hostile_values(),
)
def test_from_dict_gives_a_typed_error_or_a_machine(place: str, value: object) -> None:
    """from_dict() with a hostile value at any place raises InvalidDefinition or builds a sound machine."""
    data: dict[str, Any] = {
        "lifecycle": {"initial": "NEW", "terminal": ["OVERDUE"], "name": "x"},
        "statuses": {"NEW": "", "OVERDUE": ""},
        "transitions": [{"before": "NEW", "after": "OVERDUE"}],
    }
    if place in data:
        data[place] = value
    elif place in ("before", "after"):
        data["transitions"][0][place] = value
    else:
        data["lifecycle"][place] = value
    machine = _typed_or_right(LoanMachine.from_dict, data)
    assert machine is None or machine.check() == []  # type: ignore[attr-defined]
    assert isinstance(LoanMachine.problems_in_dict(data), list)


def test_a_transition_is_never_refused_when_made() -> None:
    """Transition() takes anything (a bad value is reported when a machine is built), and StrEnum names as strings."""
    hostile = Transition(Hostile(), Hostile(), Hostile(), Hostile())  # type: ignore[arg-type]
    assert isinstance(hostile.before, tuple)
    named = Transition([Status.NEW], Status.OVERDUE, HostileStr("go"))
    assert named == Transition(["NEW"], "OVERDUE", "go")
    assert {type(named.before[0]), type(named.after), type(named.trigger)} == {str}


def test_strenum_statuses_declare_a_lifecycle() -> None:
    """A StrEnum class as the statuses declares its values as plain names."""
    machine = LoanMachine.define(
        statuses=Status,
        initial=Status.NEW,
        terminal=[Status.INVALID],
        transitions=[
            Transition(Status.NEW, Status.OVERDUE),
            Transition(Status.OVERDUE, Status.NEW),
            Transition([Status.NEW, Status.OVERDUE], Status.SETTLED),
            Transition(Status.SETTLED, Status.NEW),
            Transition(Status.NEW, Status.INVALID),
        ],
    )
    assert machine.statuses == {"NEW", "OVERDUE", "SETTLED", "INVALID"}
    assert {type(s) for s in machine.statuses} == {str}
    assert machine.initial.__class__ is str


@pytest.mark.parametrize("value", [None, {}, "definition", Definition("x", {1: 2}, 3, (4,), (5,))])  # type: ignore[arg-type, dict-item]
def test_the_constructor_refuses_what_is_not_a_sound_definition(value: object) -> None:
    """LoanMachine(...) with anything but a sound Definition raises InvalidDefinition."""
    with pytest.raises(InvalidDefinition):
        LoanMachine(value)  # type: ignore[arg-type]


# -- trigger clashes, implicit ones included ----------------------------------------------------------


def test_an_explicit_trigger_clashing_with_an_implicit_one_is_reported() -> None:
    """A to_B trigger leading elsewhere than the implicit to_B of a transition without a trigger is ambiguous."""
    with pytest.raises(InvalidDefinition) as info:
        LoanMachine.define(
            statuses=["A", "B", "C"],
            initial="A",
            terminal=["B", "C"],
            transitions=[Transition("A", "B"), Transition("A", "C", trigger="to_B")],
        )
    (problem,) = info.value.problems
    assert problem.code == "ambiguous-trigger"
    assert "'to_B' from 'A' leads to both 'B'" in problem.message
    assert problem.where == "transitions[2]"


def test_the_same_implicit_trigger_from_two_statuses_is_fine() -> None:
    """to_C from A and to_C from B both lead to C: no clash."""
    machine = LoanMachine.define(
        statuses=["A", "B", "C"],
        initial="A",
        terminal=["C"],
        transitions=[Transition("A", "B", "go"), Transition(["A", "B"], "C")],
    )
    assert machine.after("A", "to_C") == machine.after("B", "to_C") == "C"


# -- diagrams are safe to print ----------------------------------------------------------------------


def test_diagrams_carry_no_control_characters() -> None:
    """ESC, NUL, BEL and line breaks in descriptions never reach the diagram text (a name with them is refused)."""
    machine = LoanMachine.define(
        statuses={"A": "in \x1b[31mred\x1b[0m\x00", "B": "two\nlines\u2028here\x07"},
        initial="A",
        terminal=["B"],
        transitions=[Transition("A", "B", "go")],
    )
    for text in (machine.to_mermaid(), machine.to_dot()):
        assert text.replace("\n", "").isprintable(), repr(text)
    assert "    A : A: in  [31mred [0m \n" in machine.to_mermaid()
    assert "two lines here " in machine.to_dot()
    with pytest.raises(InvalidDefinition, match=r"lifecycle\.name"):
        LoanMachine.define(name="evil\x1b]0;title\x07", statuses=["A"], initial="A", terminal=["A"], transitions=[])


# -- the event's own entry points ------------------------------------------------------------------

_FIELDS = ("loan_apply_no", "before_status", "after_status", "change_time", "request_id", "customer_id")
_VALID: dict[str, Any] = {
    "loan_apply_no": "FI1",
    "before_status": "NEW",
    "after_status": "OVERDUE",
    "change_time": AT,
    "request_id": "r1",
}


@given(st.sampled_from(_FIELDS), hostile_values())
def test_the_event_gives_a_typed_error_or_a_valid_event(field: str, value: object) -> None:
    """LoanChangeEvent(...) and from_dict with a hostile value in any field: InvalidEvent or a well-formed event."""
    for make in (
        lambda: LoanChangeEvent(**{**_VALID, field: value}),
        lambda: LoanChangeEvent.from_dict({**_VALID, field: value}),
    ):
        event = _typed_or_right(make)
        if event is not None:
            assert isinstance(event, LoanChangeEvent)
            assert LoanChangeEvent.from_dict(event.to_dict()) == event


@given(st.sampled_from(_FIELDS), hostile_values())
def test_from_top_param_gives_a_typed_error_or_a_valid_event(field: str, value: object) -> None:
    """from_top_param of JSON carrying a hostile value (as JSON can hold it) is InvalidEvent or a valid event."""
    try:
        text = json.dumps({**_VALID, "change_time": "2024-01-01 08:00:00", field: value}, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = shorten(value, 1000)
    event = _typed_or_right(LoanChangeEvent.from_top_param, text)
    assert event is None or LoanChangeEvent.from_top_param(event.to_top_param()) == event  # type: ignore[attr-defined]


@given(hostile_values())
def test_reading_a_definition_file_gives_problems_never_an_exception(path: object) -> None:
    """problems_in_file and from_file with a hostile path: 'unreadable' problems, never a raw error."""
    problems = LoanMachine.problems_in_file(path)  # type: ignore[arg-type]
    assert problems
    assert all(len(str(p)) < 1000 for p in problems)
    with pytest.raises(InvalidDefinition):
        LoanMachine.from_file(path)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", _FIELDS)
def test_a_raising_str_subclass_in_any_field_is_read_as_its_value(field: str) -> None:
    """A str subclass whose methods raise, in any field of from_dict or from_top_param's time, never escapes as-is."""
    for make in (
        lambda: LoanChangeEvent(**{**_VALID, field: HostileStr("X1")}),
        lambda: LoanChangeEvent.from_dict({**_VALID, field: HostileStr("X1")}),
        lambda: LoanChangeEvent.from_dict({**_VALID, "change_time": HostileStr("2024-01-01T00:00:00+00:00")}),
    ):
        event = _typed_or_right(make)
        assert event is None or isinstance(event, LoanChangeEvent)
