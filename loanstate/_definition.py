"""Reading a lifecycle definition (a TOML file, a mapping, or Python values) into plain data.

A definition is data: statuses (each with a description), the initial status,
the terminal ones and the legal ``before -> after`` transitions. This module
turns a TOML file, a plain mapping or the arguments of
:meth:`LoanMachine.define <loanstate.LoanMachine.define>` into a
:class:`Definition`. It never raises for a *bad definition*: it returns
:class:`Problem` records, so a caller sees all of them at once. What is wrong
with the data itself (unknown statuses, dead ends, ...) is for
:mod:`loanstate._checks`.

A definition file must be a regular file of at most :data:`MAX_FILE_BYTES`
(a FIFO or a device is refused without being read), UTF-8 TOML nested at most
:data:`MAX_DEPTH` levels deep.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from loanstate._errors import Problem, shorten
from loanstate._validate import plain_text

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "Definition",
    "Guard",
    "Problem",
    "Transition",
    "from_python",
    "parse_mapping",
    "read_file",
]

#: A definition file larger than this is not a lifecycle (refused before reading).
MAX_FILE_BYTES: Final = 1 << 20
#: How deeply a definition may nest (it needs 4 levels: file, transitions, one transition, its list).
MAX_DEPTH: Final = 16

_TOP_KEYS: Final = ("lifecycle", "statuses", "transitions")
_LIFECYCLE_KEYS: Final = ("name", "initial", "terminal", "description")
_TRANSITION_KEYS: Final = ("before", "after", "trigger")
_MAX_PATH: Final = 4096

Guard = Callable[..., bool]


def _plain(value: Any) -> Any:
    """A string as its plain ``str`` (a StrEnum member becomes its value); anything else as given."""
    return plain_text(value) if isinstance(value, str) else value


def _to_statuses(value: object) -> tuple[Any, ...]:
    """``before`` as a tuple: one status, or each of a collection's (the checks judge what is in it)."""
    if isinstance(value, str):
        return (plain_text(value),)
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray | Mapping):
        try:
            return tuple(_plain(item) for item in value)
        except Exception:
            return (value,)
    return (value,)


@attrs.frozen
class Transition:
    """A legal change: from ``before`` (one status or several) to ``after``.

    ``trigger`` names it in diagrams and for :meth:`LoanMachine.after`;
    ``guard`` is an optional predicate called with the candidate
    :class:`~loanstate.LoanChangeEvent` (through ``transitions``' condition
    machinery): the change is legal only when it returns true. Making one never
    raises: a wrong value is reported when a machine is built from it.
    """

    before: tuple[str, ...] = attrs.field(converter=_to_statuses)
    after: str = attrs.field(converter=_plain)
    trigger: str | None = attrs.field(default=None, converter=_plain)
    guard: Guard | None = attrs.field(default=None, eq=False)

    @property
    def fired_by(self) -> str:
        """The trigger that fires it: ``trigger``, else the ``to_<after>`` that ``transitions`` would name it."""
        return self.trigger or f"to_{self.after}"


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


def _place(key: object) -> str:
    """A key of the definition as a place name (shortened when it is not a short string)."""
    if isinstance(key, str):
        key = plain_text(key)
        if len(key) <= 64 and key.isprintable():
            return key
    return shorten(key, 40)


@attrs.define
class _Reader:
    """Collects the problems found while reading one definition, each located in its source."""

    source: str | None = None
    lines: Mapping[str, int] = attrs.field(factory=dict)
    problems: list[Problem] = attrs.field(factory=list)

    def add(self, code: str, message: str, where: str) -> None:
        self.problems.append(Problem(code, message, where, self.source, _line(self.lines, where)))

    def unknown_keys(self, table: Mapping[Any, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in known:
                where = f"{prefix}{_place(key)}"
                self.add("unknown-key", f"unknown key {shorten(key)} (expected: {', '.join(known)})", where)

    def lifecycle(self, table: object) -> tuple[str, str, tuple[str, ...]]:
        """``name``, ``initial`` and ``terminal`` from the ``[lifecycle]`` table."""
        if not isinstance(table, Mapping):
            self.add("bad-value", f"must be a table, got {type(table).__name__}", "lifecycle")
            table = {}
        self.unknown_keys(table, _LIFECYCLE_KEYS, "lifecycle.")
        name = table.get("name", "lifecycle")
        if not isinstance(name, str):
            self.add("bad-value", f"must be a string, got {shorten(name)}", "lifecycle.name")
            name = "lifecycle"
        description = table.get("description", "")
        if not isinstance(description, str):
            self.add("bad-value", f"must be a string, got {shorten(description)}", "lifecycle.description")
        initial = table.get("initial")
        if initial is None:
            self.add("bad-initial", "missing: name the initial status", "lifecycle.initial")
            initial = ""
        elif not isinstance(initial, str):
            self.add("bad-initial", f"must be a status name, got {shorten(initial)}", "lifecycle.initial")
            initial = ""
        return plain_text(name), plain_text(initial), self.terminal(table.get("terminal", ()))

    def terminal(self, value: object) -> tuple[str, ...]:
        """The terminal statuses: a name or a list of names."""
        if isinstance(value, str):
            return (plain_text(value),)
        if not isinstance(value, list | tuple):
            self.add("bad-value", f"must be a list of statuses, got {shorten(value)}", "lifecycle.terminal")
            return ()
        names: list[str] = []
        for item in value:
            if isinstance(item, str):
                names.append(plain_text(item))
            else:
                self.add("bad-value", f"must list status names, got {shorten(item)}", "lifecycle.terminal")
        return tuple(names)

    def statuses(self, value: object) -> dict[str, str]:
        """Each status and its description: a table of ``status = description``, or a list of names."""
        if isinstance(value, Mapping):
            pairs: Iterable[tuple[object, object]] = value.items()
        elif isinstance(value, list | tuple):
            pairs = ((status, "") for status in value)
        else:
            self.add("bad-value", f"must be a table of status = description, got {shorten(value)}", "statuses")
            return {}
        statuses: dict[str, str] = {}
        for status, description in pairs:
            if not isinstance(status, str):
                self.add("bad-value", f"a status name must be a string, got {shorten(status)}", "statuses")
                continue
            text = description if isinstance(description, str) else ""
            if not isinstance(description, str):
                where = f"statuses.{_place(status)}"
                self.add("bad-value", f"description must be a string, got {shorten(description)}", where)
            statuses[plain_text(status)] = plain_text(text)
        return statuses

    def transitions(self, value: object) -> tuple[Transition, ...]:
        """Every transition that has the right shape; the others become problems."""
        if not isinstance(value, list | tuple):
            self.add("bad-value", "must be an array of tables ([[transitions]])", "transitions")
            return ()
        found: list[Transition] = []
        for index, item in enumerate(value, start=1):
            transition = self.transition(item, f"transitions[{index}]")
            if transition is not None:
                found.append(transition)
        return tuple(found)

    def transition(self, item: object, where: str) -> Transition | None:
        """One ``[[transitions]]`` table as a Transition, or ``None`` when its statuses are unusable."""
        if isinstance(item, Transition):
            return item
        if not isinstance(item, Mapping):
            self.add("bad-value", f"must be a table, got {shorten(item)}", where)
            return None
        self.unknown_keys(item, (*_TRANSITION_KEYS, "guard"), f"{where}.")
        before, after = item.get("before"), item.get("after")
        trigger, guard = item.get("trigger"), item.get("guard")
        usable = True
        if before is None:
            self.add("blank-name", "missing 'before'", where)
            usable = False
        elif not (
            isinstance(before, str) or (isinstance(before, list | tuple) and all(isinstance(b, str) for b in before))
        ):
            self.add("bad-value", f"'before' must be a status or a list of them, got {shorten(before)}", where)
            usable = False
        if after is None:
            self.add("blank-name", "missing 'after'", where)
            usable = False
        elif not isinstance(after, str):
            self.add("bad-value", f"'after' must be a status, got {shorten(after)}", where)
            usable = False
        if trigger is not None and not isinstance(trigger, str):
            self.add("bad-value", f"'trigger' must be a name, got {shorten(trigger)}", where)
            trigger = None
        if guard is not None and not callable(guard):
            self.add("bad-value", f"'guard' must be callable, got {shorten(guard)}", where)
            guard = None
        return Transition(before, after, trigger, guard) if usable else None


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
    if not isinstance(data, Mapping):
        return None, [Problem("bad-value", f"a definition must be a mapping, got {type(data).__name__}", "", source)]
    reader = _Reader(source, dict(lines or {}))
    reader.unknown_keys(data, _TOP_KEYS, "")
    name, initial, terminal = reader.lifecycle(data.get("lifecycle", {}))
    statuses = reader.statuses(data.get("statuses", {}))
    transitions = reader.transitions(data.get("transitions", []))
    definition = Definition(name, statuses, initial, terminal, transitions, source, reader.lines)
    return definition, reader.problems


def from_python(
    *,
    name: object,
    statuses: object,
    initial: object,
    terminal: object,
    transitions: object,
) -> tuple[Definition, list[Problem]]:
    """The :class:`Definition` that :meth:`LoanMachine.define <loanstate.LoanMachine.define>`'s arguments declare.

    ``statuses`` maps names to descriptions or lists names; ``transitions``
    holds :class:`Transition` values; ``terminal`` is a name or a collection
    of names. Wrong types are returned as problems, never raised.
    """
    reader = _Reader()
    if isinstance(statuses, str):
        statuses = [statuses]
    elif isinstance(statuses, Iterable) and not isinstance(statuses, Mapping | list | tuple):
        statuses = _listed(statuses)
    lifecycle = {"name": name, "initial": initial, "terminal": _listed(terminal)}
    checked_name, checked_initial, checked_terminal = reader.lifecycle(lifecycle)
    described = reader.statuses(statuses)
    items = _listed(transitions) if not isinstance(transitions, str) else [transitions]
    if not isinstance(items, list):
        reader.add("bad-value", f"must be a collection of Transition values, got {shorten(items)}", "transitions")
        items = []
    kept: list[Transition] = []
    for index, item in enumerate(items, start=1):
        if isinstance(item, Transition):
            kept.append(item)
        else:
            reader.add("bad-value", f"must be a Transition, got {shorten(item)}", f"transitions[{index}]")
    definition = Definition(checked_name, described, checked_initial, checked_terminal, tuple(kept))
    return definition, reader.problems


def _listed(value: object) -> object:
    """A collection as a list (a string stays itself: it is one name); anything else as given."""
    if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        return value
    try:
        return list(value)
    except Exception:
        return value


# -- files --------------------------------------------------------------------------


class _Unreadable(Exception):
    """Why a definition file cannot be read (the message of an ``unreadable`` problem)."""


def read_file(path: str | os.PathLike[str]) -> tuple[Definition | None, list[Problem]]:
    """Read a TOML definition; return it (or ``None``) and the reading problems."""
    source = _source_name(path)
    if isinstance(source, Problem):
        return None, [source]
    try:
        text = _decode(_read_regular_file(source))
        data = _load_toml(text)
    except _Unreadable as exc:
        return None, [Problem("unreadable", str(exc), "", source)]
    return parse_mapping(data, source=source, lines=_locate(text))


def _source_name(path: object) -> str | Problem:
    """The path as text, or the problem that it is none."""
    try:
        name = os.fspath(path)  # type: ignore[call-overload]
    except Exception:
        return Problem("unreadable", f"not a file path: {shorten(path)}", "", shorten(path))
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not isinstance(name, str):
        return Problem("unreadable", f"not a file path: {shorten(path)}", "", shorten(path))
    name = plain_text(name)
    if "\x00" in name:  # the OS would refuse it with a ValueError
        return Problem("unreadable", "a file path cannot contain a NUL character", "", shorten(name))
    if len(name) > _MAX_PATH:
        return Problem("unreadable", f"a file path of {len(name)} characters is too long", "", shorten(name))
    return name


def _read_regular_file(source: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES, or :class:`_Unreadable`.

    Opened without blocking (a FIFO with no writer would otherwise wait
    forever) and judged by what was opened (no race between a check and the
    read); a FIFO, device or socket is refused unread, and the read stops one
    byte past the cap, so neither /dev/zero nor a file that grows can fill memory.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(source, flags)
    except FileNotFoundError:
        raise _Unreadable("no such file") from None
    except IsADirectoryError:
        raise _Unreadable("is a directory, not a lifecycle file") from None
    except OSError as exc:
        raise _Unreadable(f"cannot read: {exc.strerror or exc}") from None
    except ValueError:  # a name the file system cannot encode (a lone surrogate)
        raise _Unreadable("is not a name this file system can hold") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise _Unreadable("is a directory, not a lifecycle file")
        if not stat.S_ISREG(info.st_mode):
            raise _Unreadable("is not a regular file (a FIFO, device or socket); refused without reading")
        if info.st_size > MAX_FILE_BYTES:
            raise _Unreadable(f"is {info.st_size} bytes; a lifecycle definition is at most {MAX_FILE_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(descriptor, MAX_FILE_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _Unreadable(f"grew past {MAX_FILE_BYTES} bytes while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise _Unreadable(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(descriptor)


def _decode(raw: bytes) -> str:
    if b"\x00" in raw:
        raise _Unreadable("is a binary file, not TOML text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})") from None


def _load_toml(text: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _Unreadable(f"is not valid TOML: {exc}") from None
    except RecursionError:
        raise _Unreadable(f"nests too deeply (a lifecycle definition nests at most {MAX_DEPTH} levels)") from None
    depth = _depth(data)
    if depth > MAX_DEPTH:
        raise _Unreadable(f"nests {depth} levels deep; a lifecycle definition nests at most {MAX_DEPTH}")
    return data


def _depth(data: object) -> int:
    """How many levels of tables and arrays ``data`` nests (counted without recursion)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children: Iterable[object] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # past the limit the exact depth does not matter
            stack.extend((child, level + 1) for child in children)
        else:
            return level
    return deepest


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
