"""LoanMachine: building, legality, changes, guards, diagrams."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import transitions

from loanstate import (
    IllegalTransition,
    InvalidDefinition,
    InvalidEvent,
    LoanChangeEvent,
    LoanMachine,
    Transition,
    default_machine,
    derive_request_id,
)

AT = datetime(2024, 1, 1, tzinfo=UTC)

DEFAULT_TABLE = {
    ("NEW", "OVERDUE", "mark_overdue"),
    ("OVERDUE", "NEW", "cure"),
    ("NEW", "SETTLED", "settle"),
    ("OVERDUE", "SETTLED", "settle"),
    ("SETTLED", "NEW", "reopen"),
    ("SETTLED", "OVERDUE", "reopen_overdue"),
    ("NEW", "INVALID", "invalidate"),
}


def test_default_machine_is_the_documented_table() -> None:
    """The shipped xfd_default lifecycle is exactly ARCHITECTURE.md's table."""
    machine = default_machine()
    assert machine.name == "xfd_default"
    assert machine.initial == "NEW"
    assert machine.terminal == {"INVALID"}
    assert machine.statuses == {"NEW", "OVERDUE", "SETTLED", "INVALID"}
    edges = {(b, t.after, t.trigger) for t in machine.transitions for b in t.before}
    assert edges == DEFAULT_TABLE
    assert machine.descriptions["OVERDUE"] == "past due (逾期)"
    assert machine.check() == []


def test_default_machine_is_shared() -> None:
    """default_machine() builds once and hands out the same immutable object."""
    assert default_machine() is default_machine()


def test_machine_is_immutable() -> None:
    """No attribute of a built machine can be replaced."""
    machine = default_machine()
    with pytest.raises(AttributeError, match="immutable"):
        machine._table = {}


def test_allowed_and_is_legal() -> None:
    """allowed() lists the legal targets; is_legal() answers a pair, unknown statuses are never legal."""
    machine = default_machine()
    assert machine.allowed("SETTLED") == {"NEW", "OVERDUE"}
    assert machine.allowed("INVALID") == frozenset()
    assert machine.is_legal("NEW", "OVERDUE")
    assert not machine.is_legal("INVALID", "NEW")
    assert not machine.is_legal("NOPE", "NEW")
    assert not machine.is_legal("NEW", "NOPE")
    with pytest.raises(InvalidEvent, match="unknown status 'NOPE'"):
        machine.allowed("NOPE")


def test_change_returns_validated_event() -> None:
    """change() returns the event with the API's fields, and a derived request_id."""
    event = default_machine().change(
        loan_apply_no="FI123123121",
        before="NEW",
        after="OVERDUE",
        at=AT,
        customer_id="2088",
        institution_loan_no="L-1",
        sequence=1,
    )
    assert event == LoanChangeEvent(
        loan_apply_no="FI123123121",
        before_status="NEW",
        after_status="OVERDUE",
        change_time=AT,
        request_id=derive_request_id("FI123123121", "NEW", "OVERDUE", AT, sequence=1),
        customer_id="2088",
        institution_loan_no="L-1",
    )


def test_change_keeps_a_given_request_id() -> None:
    """A caller-supplied request_id is used as is."""
    event = default_machine().change(loan_apply_no="FI1", before="NEW", after="SETTLED", at=AT, request_id="rid-1")
    assert event.request_id == "rid-1"


def test_illegal_change_carries_the_allowed_set() -> None:
    """An illegal pair of known statuses raises IllegalTransition with before, after and allowed."""
    with pytest.raises(IllegalTransition) as info:
        default_machine().change(loan_apply_no="FI1", before="SETTLED", after="INVALID", at=AT, sequence=1)
    error = info.value
    assert (error.before, error.after, error.allowed) == ("SETTLED", "INVALID", frozenset({"NEW", "OVERDUE"}))
    assert error.loan_apply_no == "FI1"
    assert "'SETTLED' -> 'INVALID'" in str(error)
    assert "NEW, OVERDUE" in str(error)


def test_same_status_is_not_a_change() -> None:
    """before == after is refused as an IllegalTransition that says why."""
    with pytest.raises(IllegalTransition, match="same status"):
        default_machine().change(loan_apply_no="FI1", before="NEW", after="NEW", at=AT, sequence=1)


def test_unknown_status_is_invalid_event() -> None:
    """An unknown status is bad input (InvalidEvent naming it), not an illegal transition."""
    with pytest.raises(InvalidEvent) as info:
        default_machine().change(loan_apply_no="FI1", before="NEWW", after="LOST", at=AT, sequence=1)
    assert set(info.value.errors) == {"before_status", "after_status"}
    assert "'NEWW'" in str(info.value)


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("change_time", {"at": datetime(2024, 1, 1)}, "timezone-aware"),
        ("change_time", {"at": "2024-01-01"}, "must be a datetime"),
        ("loan_apply_no", {"loan_apply_no": "  "}, "blank"),
        ("loan_apply_no", {"loan_apply_no": "F" * 65}, "at most 64"),
        ("loan_apply_no", {"loan_apply_no": "FI\n1"}, "non-printable"),
        ("customer_id", {"customer_id": ""}, "blank"),
        ("institution_loan_no", {"institution_loan_no": 12}, "must be a string"),
        ("request_id", {"request_id": "has space"}, "A-Za-z0-9_-"),
    ],
)
def test_bad_fields_are_invalid_event(field: str, kwargs: dict[str, object], message: str) -> None:
    """Every malformed field raises InvalidEvent naming the field and what is wrong."""
    args: dict[str, object] = {"loan_apply_no": "FI1", "before": "NEW", "after": "OVERDUE", "at": AT, "sequence": 1}
    args.update(kwargs)
    with pytest.raises(InvalidEvent, match=message) as info:
        default_machine().change(**args)  # type: ignore[arg-type]
    assert field in info.value.errors


def test_after_fires_by_trigger_name() -> None:
    """after(before, trigger) resolves a trigger; a trigger that does not apply is refused."""
    machine = default_machine()
    assert machine.after("NEW", "settle") == "SETTLED"
    assert machine.after("OVERDUE", "settle") == "SETTLED"
    with pytest.raises(IllegalTransition, match="'cure' does not apply"):
        machine.after("NEW", "cure")


def _weekday_machine() -> LoanMachine:
    return LoanMachine.define(
        statuses={"NEW": "in force", "OVERDUE": "past due", "SETTLED": "paid off"},
        initial="NEW",
        terminal=["SETTLED"],
        transitions=[
            Transition("NEW", "OVERDUE", "mark_overdue", guard=lambda e: e.change_time.weekday() < 5),
            Transition("OVERDUE", "NEW", "cure"),
            Transition(["NEW", "OVERDUE"], "SETTLED", "settle"),
        ],
    )


def test_guard_decides_through_transitions() -> None:
    """A guarded pair is legal only when the guard agrees; is_legal still answers the declaration."""
    machine = _weekday_machine()
    monday, saturday = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 6, tzinfo=UTC)
    assert machine.is_guarded("NEW", "OVERDUE")
    assert not machine.is_guarded("NEW", "SETTLED")
    assert (
        machine.change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=monday, sequence=1).after_status
        == "OVERDUE"
    )
    with pytest.raises(IllegalTransition, match="refused by its guard") as info:
        machine.change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=saturday, sequence=1)
    assert info.value.reason == "refused by its guard"
    assert machine.is_legal("NEW", "OVERDUE")


def test_guard_sees_the_candidate_event() -> None:
    """The guard is called with the fully built event."""
    seen: list[LoanChangeEvent] = []

    def guard(event: LoanChangeEvent) -> bool:
        seen.append(event)
        return True

    machine = LoanMachine.define(
        statuses=["A", "B"], initial="A", terminal=["B"], transitions=[Transition("A", "B", guard=guard)]
    )
    event = machine.change(loan_apply_no="L", before="A", after="B", at=AT, sequence=1)
    assert seen == [event]


def test_shared_transitions_engine_has_no_models() -> None:
    """One transitions.Machine per definition, without auto transitions and with no model attached."""
    machine = default_machine()
    engine = machine._engine
    assert isinstance(engine, transitions.Machine)
    assert engine.models == []
    assert set(engine.events) == {"mark_overdue", "cure", "settle", "reopen", "reopen_overdue", "invalidate"}


def test_define_rejects_non_transitions() -> None:
    """define() reports a transition that is not a Transition, among the other problems."""
    with pytest.raises(InvalidDefinition) as info:
        LoanMachine.define(statuses=["A", "B"], initial="A", terminal=["B"], transitions=[("A", "B")])  # type: ignore[list-item]
    assert next(p.code for p in info.value.problems) == "bad-value"


def test_define_reports_non_text_names_as_problems() -> None:
    """define() with a non-text initial, terminal or status lists them in InvalidDefinition instead of crashing."""
    with pytest.raises(InvalidDefinition) as info:
        LoanMachine.define(
            statuses=["A", "B", ["C"]],  # type: ignore[list-item]
            initial=["A"],  # type: ignore[arg-type]
            terminal=[1],  # type: ignore[list-item]
            transitions=[Transition("A", "B")],
        )
    text = str(info.value)
    assert "got ['A']" in text
    assert "got 1" in text
    assert "a status name must be a string, got ['C']" in text  # refused, not turned into the name "['C']"


@pytest.mark.parametrize(("before", "after"), [(["NEW"], "OVERDUE"), ("NEW", {"OVERDUE": 1})])
def test_unhashable_status_is_bad_input(before: object, after: object) -> None:
    """An unhashable status is unknown: is_legal says no, change and allowed raise InvalidEvent naming it."""
    machine = default_machine()
    assert machine.is_legal(before, after) is False  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent) as info:
        machine.change(loan_apply_no="FI1", before=before, after=after, at=AT, sequence=1)  # type: ignore[arg-type]
    bad = "before_status" if isinstance(before, list) else "after_status"
    assert repr(before if bad == "before_status" else after) in info.value.errors[bad]
    with pytest.raises(InvalidEvent, match="unknown status"):
        machine.allowed(["NEW"])  # type: ignore[arg-type]


def test_text_utf8_cannot_encode_is_bad_input() -> None:
    """A lone surrogate in loan_apply_no is an InvalidEvent naming the field, not a UnicodeEncodeError."""
    with pytest.raises(InvalidEvent) as info:
        default_machine().change(loan_apply_no="FI\ud800", before="NEW", after="OVERDUE", at=AT, sequence=1)
    assert "loan_apply_no" in info.value.errors


def test_after_with_an_unhashable_trigger_is_illegal() -> None:
    """after() with a trigger that is not even hashable raises IllegalTransition like any unknown trigger."""
    with pytest.raises(IllegalTransition, match="does not apply"):
        default_machine().after("NEW", ["settle"])  # type: ignore[arg-type]


def test_from_file_reads_toml(tmp_path: Path) -> None:
    """A TOML definition file builds the machine it describes."""
    path = tmp_path / "mine.toml"
    path.write_text(
        """
[lifecycle]
name = "mine"
initial = "NEW"
terminal = ["SETTLED"]

[statuses]
NEW = "in force"
SETTLED = "paid off"

[[transitions]]
before = "NEW"
after = "SETTLED"
trigger = "settle"
""",
        encoding="utf-8",
    )
    machine = LoanMachine.from_file(path)
    assert machine.name == "mine"
    assert machine.source == str(path)
    assert machine.allowed("NEW") == {"SETTLED"}


def test_to_mermaid_is_deterministic_and_complete() -> None:
    """The Mermaid diagram has the start, every edge with its trigger, and the terminal end."""
    text = default_machine().to_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    assert "    [*] --> NEW\n" in text
    assert "    OVERDUE --> SETTLED : settle\n" in text
    assert "    INVALID --> [*]\n" in text
    assert text == default_machine().to_mermaid()
    assert text.count("-->") == 7 + 2


def test_to_dot_marks_initial_and_terminal() -> None:
    """The Graphviz diagram draws every edge, a start point and a double border on terminal statuses."""
    text = default_machine().to_dot()
    assert text.startswith('digraph "xfd_default" {')
    assert '"__start__" -> "NEW";' in text
    assert '"SETTLED" -> "OVERDUE" [label="reopen_overdue"];' in text
    assert "peripheries=2" in text.split('"INVALID" [', 1)[1].split("\n", 1)[0]
    assert text.count(" -> ") == 8


def test_diagrams_keep_similar_names_apart_and_escape_descriptions() -> None:
    """'A.B' and 'A_B' stay two Mermaid states; a backslash or quote in a description cannot break dot's string."""
    machine = LoanMachine.define(
        statuses={"A.B": "first", "A_B": 'says "hi"', "C": "ends with \\"},
        initial="A.B",
        transitions=[Transition("A.B", "A_B"), Transition("A_B", "C")],
        terminal=["C"],
    )
    mermaid = machine.to_mermaid()
    assert "    A_B --> A_B_2\n" in mermaid
    assert "    A_B_2 --> C\n" in mermaid
    assert '    A_B_2 : A_B: says "hi"\n' in mermaid
    dot = machine.to_dot()
    assert '"C" [label="C\\nends with \\\\", peripheries=2];' in dot
    assert '"A_B" [label="A_B\\nsays \\"hi\\""];' in dot


def test_repr_is_short() -> None:
    """The machine's repr summarises it."""
    assert repr(default_machine()) == "<LoanMachine 'xfd_default': 4 statuses, 7 transitions, initial 'NEW'>"


def test_change_time_in_any_zone() -> None:
    """An aware time in any zone is accepted and sent in GMT+8."""
    at = datetime(2024, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    event = default_machine().change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=at, sequence=1)
    assert '"change_time":"2024-01-02 12:30:00"' in event.to_top_param()
