"""change() on the default machine, cold, against transitions, python-statemachine and the floor.

Cold means a new loan every call. Peers: (a) transitions' idiomatic pattern for
many objects (one shared Machine, add_model, trigger, remove_model), (a2) one
transitions Machine per loan, (b) python-statemachine, one instance per loan,
(c) the floor: a frozenset membership test plus an attrs frozen instance of the
same seven fields without validators. Memory: bytes the library still holds per
loan after 20,000 loans were each changed once (loanstate holds none by design;
transitions' add_model pattern keeps its models until they are removed).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import transitions
from statemachine import State, StateMachine

from benchmarks._checks import check, passed
from benchmarks._harness import Row, interleave
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


def _per_op(fn: Callable[[int], None], n: int) -> Callable[[], float]:
    """A side for :func:`interleave`: seconds per operation of one ``fn(n)``."""

    def side() -> float:
        start = time.perf_counter()
        fn(n)
        return (time.perf_counter() - start) / n

    return side


def run(quick: bool) -> list[Row]:
    """Every side interleaved round by round; the medians become rows."""
    n, rounds = (2_000, 3) if quick else (20_000, 9)
    t = interleave(
        {
            "ours": _per_op(ours, n),
            "ours_rid": _per_op(ours_with_request_id, n),
            "floor": _per_op(floor, n),
            "shared": _per_op(transitions_shared, n // 4),
            "per_loan": _per_op(transitions_per_loan, n // 20),
            "psm": _per_op(statemachine_per_loan, n // 20),
            "loop": _per_op(loop_floor, n),
            "event": _per_op(event_alone, n),
            "floor_event": _per_op(floor_event_alone, n),
            "rid": _per_op(request_id_alone, n),
        },
        rounds,
    )
    # The breakdown rows take out the loop and f-string every workload pays.
    t_event, t_floor_event, t_rid = (t[k] - t["loop"] for k in ("event", "floor_event", "rid"))
    # transitions' add_model slows with every model kept (quadratic under tracemalloc):
    # 20,000 loans already show the bytes per loan, in seconds rather than many minutes.
    loans = 10_000 if quick else 20_000
    held_ours, held_theirs = held_bytes(loans, "loanstate"), held_bytes(loans, "transitions")
    # A per-loan structure would cost tens of bytes; under one byte is allocator noise.
    check(held_ours < 1, f"the machine holds {held_ours:.1f} bytes per loan after {loans:,} changes, not 0")
    passed(f"change(): no memory held per loan after {loans:,} loans")
    return [
        Row("change(), cold", t["ours"], "floor: frozenset + attrs, no validators", t["floor"], "s/op", rounds, 0.5),
        Row("change(), cold", t["ours"], "transitions shared Machine + add_model", t["shared"], "s/op", rounds, 20.0),
        Row("change(), cold", t["ours"], "transitions Machine per loan", t["per_loan"], "s/op", rounds),
        Row("change(), cold", t["ours"], "python-statemachine per loan", t["psm"], "s/op", rounds),
        Row("change(request_id=...), cold", t["ours_rid"], "floor", t["floor"], "s/op", rounds),
        Row(
            "where the time goes: LoanChangeEvent(...) with validators",
            t_event,
            "same fields, no validators",
            t_floor_event,
            "s/op",
            rounds,
        ),
        Row("where the time goes: derive_request_id()", t_rid, "floor event, for scale", t_floor_event, "s/op", rounds),
        Row(f"bytes held per loan ({loans:,} loans)", held_ours, "transitions add_model", held_theirs, "B", 1),
    ]


def main(quick: bool = False) -> list[Row]:
    """Run this module's benchmarks; return its rows."""
    return run(quick)
