"""The static checks of a lifecycle definition, one small function each.

Each check takes a :class:`~loanstate._definition.Definition` and yields the
:class:`~loanstate.Problem` records it finds; :func:`find_problems` runs them
all, in a stable order, and never raises. A definition whose very shape is
wrong (a hand-made :class:`Definition` holding something other than strings,
tuples and :class:`Transition` values) gets only the shape problems: the other
checks assume the shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

from loanstate._definition import Definition, Transition
from loanstate._errors import Problem, shorten
from loanstate._validate import FieldProblem, check_status_name, check_text, check_trigger_name

__all__ = ["CHECKS", "find_problems"]

Check = Callable[[Definition], Iterator[Problem]]


def find_problems(d: Definition) -> list[Problem]:
    """Every static mistake in a definition, in a stable order. Never raises."""
    shape = list(check_shape(d))
    if shape:
        return shape
    return [problem for check in CHECKS for problem in check(d)]


def check_shape(d: object) -> Iterator[Problem]:
    """The definition holds the plain types the other checks rely on (the readers make sure of it)."""
    if not isinstance(d, Definition):
        yield Problem("bad-value", f"must be a lifecycle Definition, got {shorten(d)}")
        return
    if not _plain(d.name):
        yield d.problem("bad-value", f"must be a string, got {shorten(d.name)}", "lifecycle.name")
    if not isinstance(d.statuses, Mapping) or not all(_plain(k) and _plain(v) for k, v in d.statuses.items()):
        yield d.problem("bad-value", "must map status names to descriptions (plain strings)", "statuses")
    if not _plain(d.initial):
        yield d.problem("bad-initial", f"must be a status name, got {shorten(d.initial)}", "lifecycle.initial")
    if not isinstance(d.terminal, tuple) or not all(_plain(s) for s in d.terminal):
        message = f"must be a tuple of status names, got {shorten(d.terminal)}"
        yield d.problem("bad-value", message, "lifecycle.terminal")
    if not isinstance(d.transitions, tuple) or not all(isinstance(t, Transition) for t in d.transitions):
        message = f"must be a tuple of Transition values, got {shorten(d.transitions)}"
        yield d.problem("bad-value", message, "transitions")


def _plain(value: object) -> bool:
    # Exactly str: a subclass's own methods could raise inside the checks.
    return value.__class__ is str


def check_name(d: Definition) -> Iterator[Problem]:
    """The lifecycle's name is text (it shows in diagrams, logs and messages)."""
    try:
        check_text(d.name)
    except FieldProblem as exc:
        yield d.problem("bad-name", f"the lifecycle's name {exc}", "lifecycle.name")


def check_statuses(d: Definition) -> Iterator[Problem]:
    """At least one status is declared, and every name follows the status-name rule."""
    if not d.statuses:
        yield d.problem("blank-name", "no statuses are declared", "statuses")
    for status in d.statuses:
        if not status.strip():
            yield d.problem("blank-name", f"status name is blank: {shorten(status)}", "statuses")
            continue
        try:
            check_status_name(status)
        except FieldProblem as exc:
            yield d.problem("bad-name", f"status name {exc}", f"statuses.{_place(status)}")


def check_initial(d: Definition) -> Iterator[Problem]:
    """The initial status is declared (an empty one was already reported by the reader)."""
    if not d.initial.strip():
        if d.initial:
            yield d.problem("blank-name", "initial status is blank", "lifecycle.initial")
    elif d.initial not in d.statuses:
        message = f"initial status {shorten(d.initial)} is not a declared status"
        yield d.problem("bad-initial", message, "lifecycle.initial")


def check_terminal(d: Definition) -> Iterator[Problem]:
    """Every terminal status is declared."""
    for status in d.terminal:
        if not status.strip():
            yield d.problem("blank-name", "a terminal status name is blank", "lifecycle.terminal")
        elif status not in d.statuses:
            message = f"terminal status {shorten(status)} is not a declared status"
            yield d.problem("unknown-status", message, "lifecycle.terminal")


def check_transition_statuses(d: Definition) -> Iterator[Problem]:
    """Every ``before`` and ``after`` names a declared status."""
    for index, t in enumerate(d.transitions, start=1):
        where = f"transitions[{index}]"
        if not t.before:
            yield d.problem("blank-name", "'before' lists no status", f"{where}.before")
        for before in t.before:
            yield from _status_in(d, before, "before", f"{where}.before")
        yield from _status_in(d, t.after, "after", f"{where}.after")


def _status_in(d: Definition, status: object, side: str, where: str) -> Iterator[Problem]:
    if not isinstance(status, str):
        yield d.problem("bad-value", f"'{side}' must hold status names, got {shorten(status)}", where)
    elif not status.strip():
        yield d.problem("blank-name", f"'{side}' is blank", where)
    elif status not in d.statuses:
        yield d.problem("unknown-status", f"unknown status {shorten(status)} in '{side}'", where)


def check_trigger_and_guard(d: Definition) -> Iterator[Problem]:
    """A trigger is a Python identifier; a guard is callable."""
    for index, t in enumerate(d.transitions, start=1):
        where = f"transitions[{index}]"
        if t.trigger is not None:
            try:
                check_trigger_name(t.trigger)
            except FieldProblem as exc:
                code = "bad-name" if isinstance(t.trigger, str) else "bad-value"
                yield d.problem(code, f"trigger {exc}", where)
        if t.guard is not None and not callable(t.guard):
            yield d.problem("bad-value", f"'guard' must be callable, got {shorten(t.guard)}", where)


def _pairs(d: Definition) -> Iterator[tuple[int, str, str]]:
    """Each declared ``(index, before, after)`` whose statuses are strings, self-loops included."""
    for index, t in enumerate(d.transitions, start=1):
        if isinstance(t.after, str):
            for before in t.before:
                if isinstance(before, str):
                    yield index, before, t.after


def check_pairs(d: Definition) -> Iterator[Problem]:
    """No self-loop, and no pair declared twice."""
    seen: dict[tuple[str, str], int] = {}
    for index, before, after in _pairs(d):
        where = f"transitions[{index}]"
        if before == after:
            yield d.problem(
                "self-loop", f"{shorten(before)} -> {shorten(after)} is a self-loop (a change must change)", where
            )
        elif (before, after) in seen:
            message = (
                f"{shorten(before)} -> {shorten(after)} is already declared in transitions[{seen[(before, after)]}]"
            )
            yield d.problem("duplicate-pair", message, where)
        else:
            seen[(before, after)] = index


def check_triggers(d: Definition) -> Iterator[Problem]:
    """A trigger leads to one status from each status it starts from.

    Implicit triggers count: a transition without one is fired by ``to_<after>``
    (as ``transitions`` names it), so an explicit ``to_B`` that leads elsewhere clashes with it.
    """
    targets: dict[tuple[str, str], tuple[str, int]] = {}
    for index, t in enumerate(d.transitions, start=1):
        if not isinstance(t.after, str) or not isinstance(t.trigger, str | None):
            continue
        trigger = t.fired_by
        for before in t.before:
            if not isinstance(before, str) or before == t.after:
                continue
            other = targets.setdefault((before, trigger), (t.after, index))
            if other[0] != t.after:
                message = (
                    f"trigger {shorten(trigger)} from {shorten(before)} leads to both {shorten(other[0])} "
                    f"(transitions[{other[1]}]) and {shorten(t.after)}"
                )
                yield d.problem("ambiguous-trigger", message, f"transitions[{index}]")


def _exits(d: Definition) -> dict[str, set[str]]:
    """Where each status may go (self-loops left out: they lead nowhere)."""
    exits: dict[str, set[str]] = {}
    for _, before, after in _pairs(d):
        if before != after:
            exits.setdefault(before, set()).add(after)
    return exits


def check_reachable(d: Definition) -> Iterator[Problem]:
    """Every status can be reached from the initial one (judged only when the initial one is declared)."""
    if d.initial not in d.statuses:
        return
    exits = _exits(d)
    reached = {d.initial}
    frontier = [d.initial]
    while frontier:
        for following in exits.get(frontier.pop(), ()):
            if following in d.statuses and following not in reached:
                reached.add(following)
                frontier.append(following)
    for status in d.statuses:
        if status not in reached:
            message = f"status {shorten(status)} cannot be reached from {shorten(d.initial)}"
            yield d.problem("unreachable", message, f"statuses.{_place(status)}")


def check_exits(d: Definition) -> Iterator[Problem]:
    """A terminal status has no way out; every other status has one."""
    exits = _exits(d)
    terminal = set(d.terminal)
    for status in d.statuses:
        way_out = exits.get(status, set())
        where = f"statuses.{_place(status)}"
        if status in terminal and way_out:
            message = f"terminal status {shorten(status)} has a way out (to {', '.join(sorted(way_out))})"
            yield d.problem("terminal-exit", message, where)
        elif status not in terminal and not way_out:
            message = f"status {shorten(status)} has no way out but is not terminal (add it to lifecycle.terminal?)"
            yield d.problem("dead-end", message, where)


def _place(status: str) -> str:
    """A status as part of a place name (shortened when it is long or holds control characters)."""
    return status if len(status) <= 64 and status.isprintable() else shorten(status, 40)


#: Every check after the shape check, in the order their problems are reported.
CHECKS: Final[tuple[Check, ...]] = (
    check_name,
    check_statuses,
    check_initial,
    check_terminal,
    check_transition_statuses,
    check_trigger_and_guard,
    check_pairs,
    check_triggers,
    check_reachable,
    check_exits,
)
