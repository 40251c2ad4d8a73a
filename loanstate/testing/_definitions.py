"""Strategies for lifecycle definitions: sound ones, and broken ones that know their problems.

A definition here is a mapping shaped like the TOML schema (``lifecycle``,
``statuses``, ``transitions``), what :meth:`~loanstate.LoanMachine.from_dict`
and :meth:`~loanstate.LoanMachine.problems_in_dict` take.

:func:`definitions` draws sound definitions in every form the schema allows
(statuses as a table or a list, ``before`` as a name or a list, ``terminal``
as a name or a list, triggers present or not). :func:`broken_definitions`
starts from a sound one and applies one to four independent mistakes whose
effect is known, so each :class:`BrokenDefinition` carries the exact problem
codes the static checks must report (as a sorted multiset).
"""

from __future__ import annotations

import copy
from typing import Any, Final

import attrs
from hypothesis import strategies as st

from loanstate._validate import STATUS_NAME
from loanstate.testing._strategies import texts

__all__ = ["MISTAKES", "BrokenDefinition", "broken_definitions", "definitions"]

# Mostly readable names; sometimes anything the name rule allows ("0", "a.b-c").
_STATUS_NAMES: Final = st.one_of(
    st.from_regex(r"[A-Z][A-Z_]{0,11}", fullmatch=True),
    st.from_regex(STATUS_NAME, fullmatch=True),
)
# Trigger names never contain digits, so the mistakes' own triggers ("amb_3") are fresh.
_TRIGGERS: Final = st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True)


@attrs.frozen
class BrokenDefinition:
    """A definition with known mistakes: ``data`` (the mapping), ``codes`` (sorted expected problem codes).

    ``mistakes`` names what was done to a sound definition, for reading a failure.
    """

    data: dict[str, Any]
    codes: tuple[str, ...]
    mistakes: tuple[str, ...]


@attrs.define
class _Shape:
    """What the mistakes need to know about a sound definition."""

    names: list[str]
    terminal: set[str]
    pairs: list[tuple[str, str]]

    def onward(self) -> list[str]:
        return [n for n in self.names if n not in self.terminal]


def _sound(draw: st.DrawFn, min_statuses: int, max_statuses: int) -> tuple[dict[str, Any], _Shape]:
    count = draw(st.integers(min_statuses, max_statuses))
    names = draw(st.lists(_STATUS_NAMES, min_size=count, max_size=count, unique=True))
    initial = names[0]
    # A lone status must be terminal (else it is a dead end); otherwise the initial never is.
    terminal = {initial} if count == 1 else {n for n in names[1:] if draw(st.booleans())}
    onward = [n for n in names if n not in terminal]
    edges: dict[tuple[str, str], None] = {}
    # A spanning tree from the initial status makes every status reachable...
    for index in range(1, count):
        parents = [n for n in names[:index] if n not in terminal]
        edges[(draw(st.sampled_from(parents)), names[index])] = None
    # ...every status that is not terminal gets a way out...
    for name in onward:
        if not any(b == name for b, _ in edges):
            edges[(name, draw(st.sampled_from([n for n in names if n != name])))] = None
    # ...and a few more legal changes for variety.
    if count > 1:
        for before in draw(st.lists(st.sampled_from(onward), max_size=count)):
            after = draw(st.sampled_from([n for n in names if n != before]))
            edges[(before, after)] = None

    by_after: dict[str, list[str]] = {}
    for before, after in edges:
        by_after.setdefault(after, []).append(before)
    transitions: list[dict[str, Any]] = []
    routes: dict[tuple[str, str], str] = {}
    for after, befores in by_after.items():
        groups = [befores] if len(befores) > 1 and draw(st.booleans()) else [[b] for b in befores]
        for group in groups:
            item: dict[str, Any] = {"before": group if len(group) > 1 or draw(st.booleans()) else group[0]}
            item["after"] = after
            trigger = draw(st.none() | _TRIGGERS)
            # A trigger must lead to one status from each ``before``: drop it where it would not.
            if trigger is not None and all(routes.get((b, trigger), after) == after for b in group):
                item["trigger"] = trigger
                routes.update({(b, trigger): after for b in group})
            transitions.append(item)
    transitions = draw(st.permutations(transitions))

    lifecycle: dict[str, Any] = {"initial": initial}
    if draw(st.booleans()):
        lifecycle["name"] = draw(texts())
    if draw(st.booleans()):
        lifecycle["description"] = draw(texts())
    ordered_terminal = [n for n in names if n in terminal]
    if bool(ordered_terminal) or draw(st.booleans()):
        single = len(ordered_terminal) == 1 and draw(st.booleans())
        lifecycle["terminal"] = ordered_terminal[0] if single else ordered_terminal
    as_list = draw(st.integers(0, 4)) == 0  # the list form (no descriptions) is the rarer one
    statuses: dict[str, str] | list[str] = list(names) if as_list else {n: draw(st.just("") | texts()) for n in names}
    data = {"lifecycle": lifecycle, "statuses": statuses, "transitions": transitions}
    return data, _Shape(list(names), set(terminal), list(edges))


@st.composite
def definitions(draw: st.DrawFn, valid: bool = True, *, min_statuses: int = 1, max_statuses: int = 7) -> dict[str, Any]:
    """A lifecycle definition mapping; sound by default (``LoanMachine.from_dict`` accepts it).

    With ``valid=False``, a broken one (see :func:`broken_definitions`, which
    also says what is wrong with it).
    """
    if not valid:
        return draw(broken_definitions()).data
    return _sound(draw, min_statuses, max_statuses)[0]


#: The mistakes :func:`broken_definitions` makes, and the codes each one causes.
MISTAKES: Final[dict[str, tuple[str, ...]]] = {
    "unknown top-level key": ("unknown-key",),
    "unknown lifecycle key": ("unknown-key",),
    "unknown transition key": ("unknown-key",),
    "self-loop": ("self-loop",),
    "duplicate pair": ("duplicate-pair",),
    "unknown status in after": ("unknown-status",),
    "unknown status in before": ("unknown-status",),
    "unknown terminal status": ("unknown-status",),
    "unreachable status": ("unreachable",),
    "dead end": ("dead-end",),
    "isolated status": ("dead-end", "unreachable"),
    "terminal status with a way out": ("terminal-exit",),
    "bad status name": ("bad-name",),
    "bad trigger name": ("bad-name",),
    "ambiguous trigger": ("ambiguous-trigger",),
    "blank terminal name": ("blank-name",),
    "transition without before": ("blank-name",),
    "description not text": ("bad-value",),
    "transition not a table": ("bad-value",),
    "name not text": ("bad-value",),
    "undeclared initial": ("bad-initial",),
    "missing initial": ("bad-initial",),
    "blank initial": ("blank-name",),
}
# Without a usable initial status nothing can be called unreachable.
_NO_INITIAL: Final = frozenset({"undeclared initial", "missing initial", "blank initial"})
_ONCE: Final = frozenset({"name not text"}) | _NO_INITIAL


@st.composite
def broken_definitions(draw: st.DrawFn, *, max_mistakes: int = 4) -> BrokenDefinition:
    """A definition with one to ``max_mistakes`` mistakes, and the exact codes the checks must report.

    The mistakes are independent by construction (each adds its own statuses,
    transitions or keys), so their codes simply add up; the one interaction,
    a missing or undeclared initial status switching off the reachability
    check, is accounted for.
    """
    data, shape = _sound(draw, 2, 5)
    data = copy.deepcopy(data)
    lifecycle: dict[str, Any] = data["lifecycle"]
    if isinstance(data["statuses"], list):
        data["statuses"] = dict.fromkeys(data["statuses"], "")
    statuses: dict[str, Any] = data["statuses"]
    transitions: list[Any] = data["transitions"]
    terminal = lifecycle.get("terminal", [])
    lifecycle["terminal"] = terminal = [terminal] if isinstance(terminal, str) else list(terminal)
    names = set(shape.names)

    def fresh(stem: str) -> str:
        number = len(names)
        while f"{stem}{number}" in names:
            number += 1
        names.add(f"{stem}{number}")
        return f"{stem}{number}"

    chosen = draw(st.lists(st.sampled_from(sorted(MISTAKES)), min_size=1, max_size=max_mistakes))
    done: list[str] = []
    for mistake in chosen:
        if mistake in _ONCE and any(m in _ONCE for m in done):
            continue
        done.append(mistake)
        anchor = draw(st.sampled_from(shape.onward()))  # a status with a way out
        if mistake == "unknown top-level key":
            data[fresh("transition")] = []
        elif mistake == "unknown lifecycle key":
            lifecycle[fresh("intial")] = lifecycle.get("initial", "")
        elif mistake == "unknown transition key":
            item = draw(st.sampled_from([t for t in transitions if isinstance(t, dict)]))
            item[fresh("note")] = "?"
        elif mistake == "self-loop":
            status = draw(st.sampled_from(shape.names))
            transitions.append({"before": status, "after": status})
        elif mistake == "duplicate pair":
            before, after = draw(st.sampled_from(shape.pairs))
            transitions.append({"before": before, "after": after})
        elif mistake == "unknown status in after":
            transitions.append({"before": anchor, "after": fresh("GHOST")})
        elif mistake == "unknown status in before":
            transitions.append({"before": fresh("GHOST"), "after": draw(st.sampled_from(shape.names))})
        elif mistake == "unknown terminal status":
            terminal.append(fresh("GHOST"))
        elif mistake == "unreachable status":
            status = fresh("ORPHAN")
            statuses[status] = ""
            transitions.append({"before": status, "after": anchor})
        elif mistake == "dead end":
            status = fresh("STUCK")
            statuses[status] = ""
            transitions.append({"before": anchor, "after": status})
        elif mistake == "isolated status":
            statuses[fresh("ALONE")] = ""
        elif mistake == "terminal status with a way out":
            status = fresh("FINAL")
            statuses[status] = ""
            terminal.append(status)
            transitions += [{"before": anchor, "after": status}, {"before": status, "after": anchor}]
        elif mistake == "bad status name":
            status = fresh(draw(st.sampled_from(("BAD NAME ", "逾期", "-DASH", "X" * 64))))
            statuses[status] = ""
            transitions += [{"before": anchor, "after": status}, {"before": status, "after": anchor}]
        elif mistake == "bad trigger name":
            status = fresh("VIA")
            statuses[status] = ""
            transitions += [
                {"before": anchor, "after": status, "trigger": fresh("not valid ")},
                {"before": status, "after": anchor},
            ]
        elif mistake == "ambiguous trigger":
            trigger = fresh("amb_")
            for _ in range(2):
                status = fresh("FORK")
                statuses[status] = ""
                transitions += [
                    {"before": anchor, "after": status, "trigger": trigger},
                    {"before": status, "after": anchor},
                ]
        elif mistake == "blank terminal name":
            terminal.append(" ")
        elif mistake == "transition without before":
            transitions.append({"after": anchor})
        elif mistake == "description not text":
            status = fresh("ODD")
            statuses[status] = 42
            transitions += [{"before": anchor, "after": status}, {"before": status, "after": anchor}]
        elif mistake == "transition not a table":
            transitions.append("NEW -> OVERDUE")
        elif mistake == "name not text":
            lifecycle["name"] = 7
        elif mistake == "undeclared initial":
            lifecycle["initial"] = fresh("GHOST")
        elif mistake == "missing initial":
            del lifecycle["initial"]
        elif mistake == "blank initial":
            lifecycle["initial"] = "  "

    codes = [code for mistake in done for code in MISTAKES[mistake]]
    if any(m in _NO_INITIAL for m in done):
        codes = [c for c in codes if c != "unreachable"]
    return BrokenDefinition(data, tuple(sorted(codes)), tuple(done))
