"""change() on the default machine, cold, against transitions, python-statemachine and the floor.

Cold means a new loan every call. Peers: (a) transitions' idiomatic pattern for
many objects (one shared Machine, add_model, trigger, remove_model), (a2) one
transitions Machine per loan, (b) python-statemachine, one instance per loan,
(c) the floor: a frozenset membership test plus an attrs frozen instance of the
same seven fields without validators. Memory: bytes the library still holds per
loan after 100,000 loans were each changed once (loanstate holds none by design;
transitions' add_model pattern keeps its models until they are removed).
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import attrs
import transitions
from statemachine import State, StateMachine

from benchmarks._harness import Row, per_op, print_table
from loanstate import LoanChangeEvent, default_machine, derive_request_id

AT = datetime(2024, 1, 1, tzinfo=UTC)
PAIRS = frozenset((b, t.after) for t in default_machine().transitions for b in t.before)
SPECS: list[dict[str, Any]] = [
    {"trigger": t.trigger, "source": b, "dest": t.after} for t in default_machine().transitions for b in t.before
]
STATES = ["NEW", "OVERDUE", "SETTLED", "INVALID"]


@attrs.frozen
class FloorEvent:
    """The floor's event: the same seven fields, no validation."""

    loan_apply_no: str
    before_status: str
    after_status: str
    change_time: datetime
    request_id: str
    customer_id: str | None = None
    institution_loan_no: str | None = None


class LoanSM(StateMachine):
    """The default lifecycle in python-statemachine."""

    NEW = State(initial=True)
    OVERDUE = State()
    SETTLED = State()
    INVALID = State(final=True)

    mark_overdue = NEW.to(OVERDUE)
    cure = OVERDUE.to(NEW)
    settle = NEW.to(SETTLED) | OVERDUE.to(SETTLED)
    reopen = SETTLED.to(NEW)
    reopen_overdue = SETTLED.to(OVERDUE)
    invalidate = NEW.to(INVALID)


class Loan:
    """A plain model object for transitions."""

    state: str


def ours(n: int) -> None:
    change = default_machine().change
    for i in range(n):
        change(loan_apply_no=f"FI{i}", before="NEW", after="OVERDUE", at=AT, sequence=1)


def ours_with_request_id(n: int) -> None:
    change = default_machine().change
    for i in range(n):
        change(loan_apply_no=f"FI{i}", before="NEW", after="OVERDUE", at=AT, request_id=f"r{i}")


def event_alone(n: int) -> None:
    for i in range(n):
        LoanChangeEvent(f"FI{i}", "NEW", "OVERDUE", AT, f"r{i}")


def floor_event_alone(n: int) -> None:
    for i in range(n):
        FloorEvent(f"FI{i}", "NEW", "OVERDUE", AT, f"r{i}")


def request_id_alone(n: int) -> None:
    for i in range(n):
        derive_request_id(f"FI{i}", "NEW", "OVERDUE", AT, sequence=1)


def loop_floor(n: int) -> None:
    for i in range(n):
        f"FI{i}"  # the loop and the f-string every workload pays


def floor(n: int) -> None:
    pairs = PAIRS
    for i in range(n):
        if ("NEW", "OVERDUE") in pairs:
            FloorEvent(f"FI{i}", "NEW", "OVERDUE", AT, f"r{i}")


SHARED = transitions.Machine(model=None, states=STATES, transitions=SPECS, initial="NEW", auto_transitions=False)


def transitions_shared(n: int) -> None:
    for _ in range(n):
        loan = Loan()
        SHARED.add_model(loan, initial="NEW")
        loan.trigger("mark_overdue")  # type: ignore[attr-defined]
        SHARED.remove_model(loan)


def transitions_per_loan(n: int) -> None:
    for _ in range(n):
        loan = Loan()
        transitions.Machine(model=loan, states=STATES, transitions=SPECS, initial="NEW", auto_transitions=False)
        loan.trigger("mark_overdue")  # type: ignore[attr-defined]


def statemachine_per_loan(n: int) -> None:
    for _ in range(n):
        LoanSM().send("mark_overdue")


def held_bytes(loans: int, pattern: str) -> float:
    """Bytes per loan still allocated after ``loans`` loans each changed once."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept: list[object] = []
    if pattern == "loanstate":
        change = default_machine().change
        for i in range(loans):
            change(loan_apply_no=f"FI{i}", before="NEW", after="OVERDUE", at=AT, sequence=1)
    else:
        machine = transitions.Machine(
            model=None, states=STATES, transitions=SPECS, initial="NEW", auto_transitions=False
        )
        for _ in range(loans):
            loan = Loan()
            machine.add_model(loan, initial="NEW")
            loan.trigger("mark_overdue")  # type: ignore[attr-defined]
            kept.append(loan)
        kept.clear()  # the caller's loans are gone; what remains is held by the library
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return max(held, 0) / loans


def run(quick: bool) -> list[Row]:
    n, repeat = (2_000, 3) if quick else (20_000, 7)
    t_ours = per_op(ours, n, repeat)
    t_ours_rid = per_op(ours_with_request_id, n, repeat)
    t_floor = per_op(floor, n, repeat)
    t_shared = per_op(transitions_shared, n // 4, repeat)
    t_per_loan = per_op(transitions_per_loan, n // 20, repeat)
    t_psm = per_op(statemachine_per_loan, n // 20, repeat)
    loans = 10_000 if quick else 100_000
    t_loop = per_op(loop_floor, n, repeat)
    t_event = per_op(event_alone, n, repeat) - t_loop
    t_floor_event = per_op(floor_event_alone, n, repeat) - t_loop
    t_rid = per_op(request_id_alone, n, repeat) - t_loop
    return [
        Row("change(), cold", t_ours, "transitions shared Machine + add_model", t_shared, "s/op", ">= 10x"),
        Row("change(), cold", t_ours, "transitions Machine per loan", t_per_loan, "s/op"),
        Row("change(), cold", t_ours, "python-statemachine per loan", t_psm, "s/op"),
        Row("change(), cold", t_ours, "floor: frozenset + attrs, no validators", t_floor, "s/op", ">= 0.33x"),
        Row("change(request_id=...), cold", t_ours_rid, "floor", t_floor, "s/op", ">= 0.5x (goal)"),
        Row(
            "where the time goes: LoanChangeEvent(...) with validators",
            t_event,
            "same fields, no validators",
            t_floor_event,
            "s/op",
        ),
        Row("where the time goes: derive_request_id()", t_rid, "floor event, for scale", t_floor_event, "s/op"),
        Row(
            f"bytes held per loan ({loans:,} loans)",
            held_bytes(loans, "loanstate"),
            "transitions add_model",
            held_bytes(loans, "transitions"),
            "B",
            "0 B",
        ),
    ]


def main(quick: bool = False) -> list[Row]:
    rows = run(quick)
    print_table("change() on the default machine", rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the benchmark runs")
    main(parser.parse_args().quick)
