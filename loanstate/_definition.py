"""Reading a lifecycle definition and finding every mistake in it.

A definition is data: statuses (each with a description), the initial status,
the terminal ones and the legal ``before -> after`` transitions. This module
turns a TOML file or a plain mapping into that data and runs the static checks;
it never raises for a *bad definition*: it returns :class:`Problem` records,
so a caller sees all of them at once.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = ["Definition", "Problem", "Transition", "find_problems", "parse_mapping", "read_file"]

#: A status name: what the API carries in before_status / after_status.
STATUS_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: A trigger name: a Python identifier, so it can be fired by name.
TRIGGER_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: A definition file larger than this is not a lifecycle (refused before reading).
MAX_FILE_BYTES: Final = 1 << 20

_TOP_KEYS: Final = ("lifecycle", "statuses", "transitions")
_LIFECYCLE_KEYS: Final = ("name", "initial", "terminal", "description")
_TRANSITION_KEYS: Final = ("before", "after", "trigger")

Guard = Callable[..., bool]


@attrs.frozen
class Problem:
    """One mistake in a definition: what is wrong, and where.

    ``code`` is a stable identifier for programs (``unknown-status``,
    ``unreachable``, ``dead-end``, ``terminal-exit``, ``duplicate-pair``,
    ``self-loop``, ``blank-name``, ``bad-name``, ``unknown-key``,
    ``bad-initial``, ``ambiguous-trigger``, ``bad-value``, ``unreadable``);
    ``where`` is the place in the definition (``transitions[2].after``);
    ``source`` and ``line`` locate it in a file when there is one.
    """

    code: str
    message: str
    where: str = ""
    source: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        place = ""
        if self.source:
            place = f"{self.source}:{self.line}: " if self.line else f"{self.source}: "
        where = f"{self.where}: " if self.where else ""
        return f"{place}{where}{self.message}"


def _to_statuses(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)  # type: ignore[return-value]  # reported by find_problems


@attrs.frozen
class Transition:
    """A legal change: from ``before`` (one status or several) to ``after``.

    ``trigger`` names it in diagrams and for :meth:`LoanMachine.after`;
    ``guard`` is an optional predicate called with the candidate
    :class:`~loanstate.LoanChangeEvent` (through ``transitions``' condition
    machinery): the change is legal only when it returns true.
    """

    before: tuple[str, ...] = attrs.field(converter=_to_statuses)
    after: str
    trigger: str | None = None
    guard: Guard | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Definition:
    """A lifecycle as read, before any check: what the machine is built from."""

    name: str
    statuses: Mapping[str, str]
    initial: str
    terminal: tuple[str, ...]
    transitions: tuple[Transition, ...]
    source: str | None = None
    lines: Mapping[str, int] = attrs.field(factory=dict, eq=False)

    def problem(self, code: str, message: str, where: str) -> Problem:
        """A problem located in this definition's source, when it has one."""
        return Problem(code, message, where, self.source, _line(self.lines, where))


def _line(lines: Mapping[str, int], where: str) -> int | None:
    """The line of ``where``, else of the table that holds it."""
    return lines.get(where) or lines.get(where.split(".", 1)[0])


def read_file(path: str | os.PathLike[str]) -> tuple[Definition | None, list[Problem]]:
    """Read a TOML definition; return it (or ``None``) and the reading problems."""
    try:
        source = os.fspath(path)
    except TypeError:
        return None, [Problem("unreadable", f"not a file path: {path!r}", "", repr(path))]
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    if "\x00" in source:  # the OS would refuse it with a ValueError
        return None, [Problem("unreadable", "a file path cannot contain a NUL character", "", repr(source))]
    p = Path(source)

    def fail(message: str) -> tuple[None, list[Problem]]:
        return None, [Problem("unreadable", message, "", source)]

    try:
        if p.is_dir():
            return fail("is a directory, not a lifecycle file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            return fail(f"is {size} bytes; a lifecycle definition is at most {MAX_FILE_BYTES} bytes")
        raw = p.read_bytes()
    except FileNotFoundError:
        return fail("no such file")
    except OSError as exc:
        return fail(f"cannot read: {exc.strerror or exc}")
    if b"\x00" in raw:
        return fail("is a binary file, not TOML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return fail(f"is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return fail(f"is not valid TOML: {exc}")
    return parse_mapping(data, source=source, lines=_locate(text))


def parse_mapping(
    data: Mapping[str, Any],
    *,
    source: str | None = None,
    lines: Mapping[str, int] | None = None,
) -> tuple[Definition | None, list[Problem]]:
    """Turn a mapping shaped like the TOML schema into a :class:`Definition`.

    Shape problems (unknown keys, wrong types) are returned, never raised;
    the definition is ``None`` only when the mapping is not one at all.
    """
    lines = dict(lines or {})

    def at(code: str, message: str, where: str) -> Problem:
        return Problem(code, message, where, source, _line(lines, where))

    if not isinstance(data, Mapping):
        return None, [Problem("bad-value", f"a definition must be a mapping, got {type(data).__name__}", "", source)]
    problems: list[Problem] = []
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(at("unknown-key", f"unknown key {key!r} (expected: {', '.join(_TOP_KEYS)})", str(key)))

    lifecycle = data.get("lifecycle", {})
    if not isinstance(lifecycle, Mapping):
        problems.append(at("bad-value", f"must be a table, got {type(lifecycle).__name__}", "lifecycle"))
        lifecycle = {}
    for key in lifecycle:
        if key not in _LIFECYCLE_KEYS:
            problems.append(
                at("unknown-key", f"unknown key {key!r} (expected: {', '.join(_LIFECYCLE_KEYS)})", f"lifecycle.{key}")
            )
    name = lifecycle.get("name", "lifecycle")
    if not isinstance(name, str):
        problems.append(at("bad-value", f"must be a string, got {name!r}", "lifecycle.name"))
        name = "lifecycle"
    initial = lifecycle.get("initial")
    if initial is None:
        problems.append(at("bad-initial", "missing: name the initial status", "lifecycle.initial"))
        initial = ""
    elif not isinstance(initial, str):
        problems.append(at("bad-initial", f"must be a status name, got {initial!r}", "lifecycle.initial"))
        initial = ""
    terminal_raw = lifecycle.get("terminal", [])
    if isinstance(terminal_raw, str):
        terminal_raw = [terminal_raw]
    terminal: list[str] = []
    if isinstance(terminal_raw, list):
        for item in terminal_raw:
            if isinstance(item, str):
                terminal.append(item)
            else:
                problems.append(at("bad-value", f"must list status names, got {item!r}", "lifecycle.terminal"))
    else:
        problems.append(at("bad-value", f"must be a list of statuses, got {terminal_raw!r}", "lifecycle.terminal"))

    statuses_raw = data.get("statuses", {})
    statuses: dict[str, str] = {}
    if isinstance(statuses_raw, Mapping):
        for status, description in statuses_raw.items():
            if isinstance(description, str):
                statuses[str(status)] = description
            else:
                problems.append(
                    at("bad-value", f"description must be a string, got {description!r}", f"statuses.{status}")
                )
                statuses[str(status)] = ""
    elif isinstance(statuses_raw, list) and all(isinstance(s, str) for s in statuses_raw):
        statuses = dict.fromkeys(statuses_raw, "")
    else:
        problems.append(at("bad-value", f"must be a table of status = description, got {statuses_raw!r}", "statuses"))

    transitions_raw = data.get("transitions", [])
    transitions: list[Transition] = []
    if not isinstance(transitions_raw, list):
        problems.append(at("bad-value", "must be an array of tables ([[transitions]])", "transitions"))
        transitions_raw = []
    for index, item in enumerate(transitions_raw, start=1):
        where = f"transitions[{index}]"
        if isinstance(item, Transition):
            transitions.append(item)
            continue
        if not isinstance(item, Mapping):
            problems.append(at("bad-value", f"must be a table, got {item!r}", where))
            continue
        for key in item:
            if key not in _TRANSITION_KEYS and key != "guard":
                problems.append(
                    at(
                        "unknown-key",
                        f"unknown key {key!r} (expected: {', '.join(_TRANSITION_KEYS)})",
                        f"{where}.{key}",
                    )
                )
        before = item.get("before")
        after = item.get("after")
        trigger = item.get("trigger")
        guard = item.get("guard")
        bad = False
        if before is None:
            problems.append(at("blank-name", "missing 'before'", where))
            bad = True
        elif not (isinstance(before, str) or (isinstance(before, list) and all(isinstance(b, str) for b in before))):
            problems.append(at("bad-value", f"'before' must be a status or a list of them, got {before!r}", where))
            bad = True
        if after is None:
            problems.append(at("blank-name", "missing 'after'", where))
            bad = True
        elif not isinstance(after, str):
            problems.append(at("bad-value", f"'after' must be a status, got {after!r}", where))
            bad = True
        if trigger is not None and not isinstance(trigger, str):
            problems.append(at("bad-value", f"'trigger' must be a name, got {trigger!r}", where))
            trigger = None
        if guard is not None and not callable(guard):
            problems.append(at("bad-value", f"'guard' must be callable, got {guard!r}", where))
            guard = None
        if not bad:
            transitions.append(Transition(before, after, trigger, guard))  # type: ignore[arg-type]
    definition = Definition(
        name=name,
        statuses=statuses,
        initial=initial,
        terminal=tuple(terminal),
        transitions=tuple(transitions),
        source=source,
        lines=lines,
    )
    return definition, problems


def find_problems(d: Definition) -> list[Problem]:
    """Every static mistake in a definition, in a stable order. Never raises."""
    problems: list[Problem] = []
    add = problems.append
    known = set(d.statuses)
    if not known:
        add(d.problem("blank-name", "no statuses are declared", "statuses"))
    for status in d.statuses:
        if not isinstance(status, str) or not status.strip():
            add(d.problem("blank-name", f"status name is blank: {status!r}", "statuses"))
        elif not STATUS_NAME.fullmatch(status):
            add(
                d.problem(
                    "bad-name",
                    f"status name {status!r} must be 1-64 characters of letters, digits, '_', '.', '-'",
                    f"statuses.{status}",
                )
            )
    if not isinstance(d.initial, str):
        add(d.problem("bad-initial", f"initial status must be a status name, got {d.initial!r}", "lifecycle.initial"))
    elif not d.initial.strip():
        if d.initial:
            add(d.problem("blank-name", "initial status is blank", "lifecycle.initial"))
    elif d.initial not in known:
        add(d.problem("bad-initial", f"initial status {d.initial!r} is not a declared status", "lifecycle.initial"))
    for status in d.terminal:
        if not isinstance(status, str):
            add(d.problem("bad-value", f"terminal statuses must be status names, got {status!r}", "lifecycle.terminal"))
        elif not status.strip():
            add(d.problem("blank-name", "a terminal status name is blank", "lifecycle.terminal"))
        elif status not in known:
            add(
                d.problem(
                    "unknown-status", f"terminal status {status!r} is not a declared status", "lifecycle.terminal"
                )
            )

    seen: dict[tuple[str, str], int] = {}
    exits: dict[str, set[str]] = {}
    trigger_targets: dict[tuple[str, str], tuple[str, int]] = {}
    for index, t in enumerate(d.transitions, start=1):
        where = f"transitions[{index}]"
        if not t.before:
            add(d.problem("blank-name", "'before' lists no status", f"{where}.before"))
        for before in t.before:
            if not isinstance(before, str):
                add(d.problem("bad-value", f"'before' must hold status names, got {before!r}", f"{where}.before"))
                continue
            if not before.strip():
                add(d.problem("blank-name", "'before' is blank", f"{where}.before"))
            elif before not in known:
                add(d.problem("unknown-status", f"unknown status {before!r} in 'before'", f"{where}.before"))
        if not isinstance(t.after, str):
            add(d.problem("bad-value", f"'after' must be a status name, got {t.after!r}", f"{where}.after"))
            continue
        if not t.after.strip():
            add(d.problem("blank-name", "'after' is blank", f"{where}.after"))
        elif t.after not in known:
            add(d.problem("unknown-status", f"unknown status {t.after!r} in 'after'", f"{where}.after"))
        if t.trigger is not None and not TRIGGER_NAME.fullmatch(t.trigger):
            add(
                d.problem(
                    "bad-name", f"trigger {t.trigger!r} must be a Python identifier of at most 64 characters", where
                )
            )
        for before in t.before:
            if not isinstance(before, str):
                continue
            if before == t.after:
                add(d.problem("self-loop", f"{before!r} -> {t.after!r} is a self-loop (a change must change)", where))
                continue
            pair = (before, t.after)
            if pair in seen:
                add(
                    d.problem(
                        "duplicate-pair",
                        f"{before!r} -> {t.after!r} is already declared in transitions[{seen[pair]}]",
                        where,
                    )
                )
            else:
                seen[pair] = index
            exits.setdefault(before, set()).add(t.after)
            if t.trigger is not None:
                key = (before, t.trigger)
                if key in trigger_targets and trigger_targets[key][0] != t.after:
                    other, other_index = trigger_targets[key]
                    add(
                        d.problem(
                            "ambiguous-trigger",
                            f"trigger {t.trigger!r} from {before!r} leads to both {other!r} "
                            f"(transitions[{other_index}]) and {t.after!r}",
                            where,
                        )
                    )
                else:
                    trigger_targets[key] = (t.after, index)

    if isinstance(d.initial, str) and d.initial in known:
        reached = {d.initial}
        frontier = [d.initial]
        while frontier:
            for nxt in exits.get(frontier.pop(), ()):
                if nxt in known and nxt not in reached:
                    reached.add(nxt)
                    frontier.append(nxt)
        for status in d.statuses:
            if status not in reached:
                add(
                    d.problem(
                        "unreachable", f"status {status!r} cannot be reached from {d.initial!r}", f"statuses.{status}"
                    )
                )
    terminal = {s for s in d.terminal if isinstance(s, str)}
    for status in d.statuses:
        way_out = {a for a in exits.get(status, ()) if a != status}
        if status in terminal and way_out:
            add(
                d.problem(
                    "terminal-exit",
                    f"terminal status {status!r} has a way out (to {', '.join(sorted(way_out))})",
                    f"statuses.{status}",
                )
            )
        elif status not in terminal and not way_out:
            add(
                d.problem(
                    "dead-end",
                    f"status {status!r} has no way out but is not terminal (add it to lifecycle.terminal?)",
                    f"statuses.{status}",
                )
            )
    return problems


_SECTION = re.compile(r"^\s*(\[\[?)\s*([A-Za-z_][\w.-]*)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_.-]+))\s*=""")


def _locate(text: str) -> dict[str, int]:
    """Map places in a TOML definition (``statuses.NEW``, ``transitions[2].after``) to lines.

    A light scan of the usual layout (tables and key = value lines); a place it
    cannot find simply has no line number.
    """
    lines: dict[str, int] = {}
    section = ""
    transition = 0
    for number, line in enumerate(text.splitlines(), start=1):
        header = _SECTION.match(line)
        if header:
            name = header.group(2)
            if header.group(1) == "[[" and name == "transitions":
                transition += 1
                section = f"transitions[{transition}]"
            else:
                section = name
            lines.setdefault(section, number)
            continue
        key = _KEY.match(line)
        if key and section:
            name = key.group(1) or key.group(2) or key.group(3)
            lines.setdefault(f"{section}.{name}", number)
    return lines
