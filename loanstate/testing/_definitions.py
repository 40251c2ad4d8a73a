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
from collections.abc import Callable
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
# Trigger names never contain digits, so the mistakes' own triggers ("amb_3") are fresh,
# and never start with "to_", so they cannot clash with a transition's implicit to_<after>.
_TRIGGERS: Final = st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(lambda name: not name.startswith("to_"))


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


def _edges(draw: st.DrawFn, names: list[str], terminal: set[str]) -> dict[tuple[str, str], None]:
    """Legal pairs that reach every status from the first and give every non-terminal status a way out."""
    edges: dict[tuple[str, str], None] = {}
    # A spanning tree from the initial status makes every status reachable...
    for index in range(1, len(names)):
        parents = [n for n in names[:index] if n not in terminal]
        edges[(draw(st.sampled_from(parents)), names[index])] = None
    # ...every status that is not terminal gets a way out...
    onward = [n for n in names if n not in terminal]
    for name in onward:
        if not any(b == name for b, _ in edges):
            edges[(name, draw(st.sampled_from([n for n in names if n != name])))] = None
    # ...and a few more legal changes for variety.
    if len(names) > 1:
        for before in draw(st.lists(st.sampled_from(onward), max_size=len(names))):
            after = draw(st.sampled_from([n for n in names if n != before]))
            edges[(before, after)] = None
    return edges


def _transitions(draw: st.DrawFn, edges: dict[tuple[str, str], None]) -> list[dict[str, Any]]:
    """The pairs as ``[[transitions]]`` tables: ``before`` a name or a list, a trigger or none, in drawn order."""
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
    return draw(st.permutations(transitions))


def _lifecycle(draw: st.DrawFn, names: list[str], terminal: set[str]) -> dict[str, Any]:
    """The ``[lifecycle]`` table: the first name is initial; name, description and terminal in their forms."""
    lifecycle: dict[str, Any] = {"initial": names[0]}
    if draw(st.booleans()):
        lifecycle["name"] = draw(texts())
    if draw(st.booleans()):
        lifecycle["description"] = draw(texts())
    ordered_terminal = [n for n in names if n in terminal]
    if bool(ordered_terminal) or draw(st.booleans()):
        single = len(ordered_terminal) == 1 and draw(st.booleans())
        lifecycle["terminal"] = ordered_terminal[0] if single else ordered_terminal
    return lifecycle


def _sound(draw: st.DrawFn, min_statuses: int, max_statuses: int) -> tuple[dict[str, Any], _Shape]:
    count = draw(st.integers(min_statuses, max_statuses))
    names = draw(st.lists(_STATUS_NAMES, min_size=count, max_size=count, unique=True))
    # A lone status must be terminal (else it is a dead end); otherwise the initial never is.
    terminal = {names[0]} if count == 1 else {n for n in names[1:] if draw(st.booleans())}
    edges = _edges(draw, names, terminal)
    as_list = draw(st.integers(0, 4)) == 0  # the list form (no descriptions) is the rarer one
    statuses: dict[str, str] | list[str] = list(names) if as_list else {n: draw(st.just("") | texts()) for n in names}
    data = {
        "lifecycle": _lifecycle(draw, names, terminal),
        "statuses": statuses,
        "transitions": _transitions(draw, edges),
    }
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


@attrs.define
class _Breaking:
    """A sound definition being broken: its parts, the names taken, and the draw to choose with."""

    draw: st.DrawFn
    data: dict[str, Any]
    shape: _Shape
    names: set[str]

    @property
    def lifecycle(self) -> dict[str, Any]:
        return self.data["lifecycle"]  # type: ignore[no-any-return]

    @property
    def statuses(self) -> dict[str, Any]:
        return self.data["statuses"]  # type: ignore[no-any-return]

    @property
    def transitions(self) -> list[Any]:
        return self.data["transitions"]  # type: ignore[no-any-return]

    @property
    def terminal(self) -> list[Any]:
        return self.lifecycle["terminal"]  # type: ignore[no-any-return]

    def fresh(self, stem: str) -> str:
        """A name no status, trigger or key of the definition has yet."""
        number = len(self.names)
        while f"{stem}{number}" in self.names:
            number += 1
        self.names.add(f"{stem}{number}")
        return f"{stem}{number}"

    def anchor(self) -> str:
        """A status with a way out, to hang new statuses on."""
        return self.draw(st.sampled_from(self.shape.onward()))

    def add_round_trip(self, status: str, **out: Any) -> None:
        """Declare ``status`` and a way there from the anchor and back (so it is neither unreachable nor stuck)."""
        anchor = self.anchor()
        self.statuses[status] = ""
        self.transitions.extend([{"before": anchor, "after": status, **out}, {"before": status, "after": anchor}])


def _unknown_key(b: _Breaking) -> None:
    b.data[b.fresh("transition")] = []


def _unknown_lifecycle_key(b: _Breaking) -> None:
    b.lifecycle[b.fresh("intial")] = b.lifecycle.get("initial", "")


def _unknown_transition_key(b: _Breaking) -> None:
    item = b.draw(st.sampled_from([t for t in b.transitions if isinstance(t, dict)]))
    item[b.fresh("note")] = "?"


def _self_loop(b: _Breaking) -> None:
    status = b.draw(st.sampled_from(b.shape.names))
    b.transitions.append({"before": status, "after": status})


def _duplicate_pair(b: _Breaking) -> None:
    before, after = b.draw(st.sampled_from(b.shape.pairs))
    b.transitions.append({"before": before, "after": after})


def _unknown_after(b: _Breaking) -> None:
    b.transitions.append({"before": b.anchor(), "after": b.fresh("GHOST")})


def _unknown_before(b: _Breaking) -> None:
    b.transitions.append({"before": b.fresh("GHOST"), "after": b.draw(st.sampled_from(b.shape.names))})


def _unknown_terminal(b: _Breaking) -> None:
    b.terminal.append(b.fresh("GHOST"))


def _unreachable(b: _Breaking) -> None:
    status = b.fresh("ORPHAN")
    b.statuses[status] = ""
    b.transitions.append({"before": status, "after": b.anchor()})


def _dead_end(b: _Breaking) -> None:
    status = b.fresh("STUCK")
    b.statuses[status] = ""
    b.transitions.append({"before": b.anchor(), "after": status})


def _isolated(b: _Breaking) -> None:
    b.statuses[b.fresh("ALONE")] = ""


def _terminal_exit(b: _Breaking) -> None:
    status = b.fresh("FINAL")
    b.terminal.append(status)
    b.add_round_trip(status)


def _bad_status_name(b: _Breaking) -> None:
    b.add_round_trip(b.fresh(b.draw(st.sampled_from(("BAD NAME ", "逾期", "-DASH", "X" * 64)))))


def _bad_trigger_name(b: _Breaking) -> None:
    b.add_round_trip(b.fresh("VIA"), trigger=b.fresh("not valid "))


def _trigger_not_text(b: _Breaking) -> None:
    b.add_round_trip(b.fresh("NUMBERED"), trigger=b.draw(st.sampled_from((7, 2.5, ["go"], True))))


def _guard_not_callable(b: _Breaking) -> None:
    b.add_round_trip(b.fresh("GUARDED"), guard=b.draw(st.sampled_from(("yes", 1, ["f"]))))


def _ambiguous_trigger(b: _Breaking) -> None:
    trigger, anchor = b.fresh("amb_"), b.anchor()
    for _ in range(2):
        status = b.fresh("FORK")
        b.statuses[status] = ""
        b.transitions.extend(
            [{"before": anchor, "after": status, "trigger": trigger}, {"before": status, "after": anchor}]
        )


def _implicit_trigger_clash(b: _Breaking) -> None:
    # A transition without a trigger is fired by to_<after>; an explicit to_<that> elsewhere clashes.
    anchor, implicit, other = b.anchor(), b.fresh("PLAIN"), b.fresh("ELSEWHERE")
    b.statuses.update({implicit: "", other: ""})
    b.transitions.extend(
        [
            {"before": anchor, "after": implicit},
            {"before": anchor, "after": other, "trigger": f"to_{implicit}"},
            {"before": implicit, "after": anchor},
            {"before": other, "after": anchor},
        ]
    )


def _blank_terminal(b: _Breaking) -> None:
    b.terminal.append(" ")


def _no_before(b: _Breaking) -> None:
    b.transitions.append({"after": b.anchor()})


def _description_not_text(b: _Breaking) -> None:
    status = b.fresh("ODD")
    b.add_round_trip(status)
    b.statuses[status] = 42


def _transition_not_a_table(b: _Breaking) -> None:
    b.transitions.append("NEW -> OVERDUE")


def _name_not_text(b: _Breaking) -> None:
    b.lifecycle["name"] = 7


def _undeclared_initial(b: _Breaking) -> None:
    b.lifecycle["initial"] = b.fresh("GHOST")


def _missing_initial(b: _Breaking) -> None:
    del b.lifecycle["initial"]


def _blank_initial(b: _Breaking) -> None:
    b.lifecycle["initial"] = "  "


# Each mistake: what it does to a sound definition, and the problem codes it causes.
_MISTAKES: Final[dict[str, tuple[Callable[[_Breaking], None], tuple[str, ...]]]] = {
    "unknown top-level key": (_unknown_key, ("unknown-key",)),
    "unknown lifecycle key": (_unknown_lifecycle_key, ("unknown-key",)),
    "unknown transition key": (_unknown_transition_key, ("unknown-key",)),
    "self-loop": (_self_loop, ("self-loop",)),
    "duplicate pair": (_duplicate_pair, ("duplicate-pair",)),
    "unknown status in after": (_unknown_after, ("unknown-status",)),
    "unknown status in before": (_unknown_before, ("unknown-status",)),
    "unknown terminal status": (_unknown_terminal, ("unknown-status",)),
    "unreachable status": (_unreachable, ("unreachable",)),
    "dead end": (_dead_end, ("dead-end",)),
    "isolated status": (_isolated, ("dead-end", "unreachable")),
    "terminal status with a way out": (_terminal_exit, ("terminal-exit",)),
    "bad status name": (_bad_status_name, ("bad-name",)),
    "bad trigger name": (_bad_trigger_name, ("bad-name",)),
    "trigger not text": (_trigger_not_text, ("bad-value",)),
    "guard not callable": (_guard_not_callable, ("bad-value",)),
    "ambiguous trigger": (_ambiguous_trigger, ("ambiguous-trigger",)),
    "implicit trigger clash": (_implicit_trigger_clash, ("ambiguous-trigger",)),
    "blank terminal name": (_blank_terminal, ("blank-name",)),
    "transition without before": (_no_before, ("blank-name",)),
    "description not text": (_description_not_text, ("bad-value",)),
    "transition not a table": (_transition_not_a_table, ("bad-value",)),
    "name not text": (_name_not_text, ("bad-value",)),
    "undeclared initial": (_undeclared_initial, ("bad-initial",)),
    "missing initial": (_missing_initial, ("bad-initial",)),
    "blank initial": (_blank_initial, ("blank-name",)),
}
#: The mistakes :func:`broken_definitions` makes, and the codes each one causes.
MISTAKES: Final[dict[str, tuple[str, ...]]] = {name: codes for name, (_, codes) in _MISTAKES.items()}
# Without a usable initial status nothing can be called unreachable.
_NO_INITIAL: Final = frozenset({"undeclared initial", "missing initial", "blank initial"})
_ONCE: Final = frozenset({"name not text"}) | _NO_INITIAL


def _breakable(draw: st.DrawFn) -> _Breaking:
    """A sound definition in the one form every mistake can edit (statuses a table, terminal a list)."""
    data, shape = _sound(draw, 2, 5)
    data = copy.deepcopy(data)
    if isinstance(data["statuses"], list):
        data["statuses"] = dict.fromkeys(data["statuses"], "")
    terminal = data["lifecycle"].get("terminal", [])
    data["lifecycle"]["terminal"] = [terminal] if isinstance(terminal, str) else list(terminal)
    return _Breaking(draw, data, shape, set(shape.names))


@st.composite
def broken_definitions(draw: st.DrawFn, *, max_mistakes: int = 4) -> BrokenDefinition:
    """A definition with one to ``max_mistakes`` mistakes, and the exact codes the checks must report.

    The mistakes are independent by construction (each adds its own statuses,
    transitions or keys), so their codes simply add up; the one interaction,
    a missing or undeclared initial status switching off the reachability
    check, is accounted for.
    """
    breaking = _breakable(draw)
    chosen = draw(st.lists(st.sampled_from(sorted(_MISTAKES)), min_size=1, max_size=max_mistakes))
    done: list[str] = []
    for mistake in chosen:
        if mistake in _ONCE and any(m in _ONCE for m in done):
            continue
        done.append(mistake)
        _MISTAKES[mistake][0](breaking)
    codes = [code for mistake in done for code in MISTAKES[mistake]]
    if any(m in _NO_INITIAL for m in done):
        codes = [c for c in codes if c != "unreachable"]
    return BrokenDefinition(breaking.data, tuple(sorted(codes)), tuple(done))
