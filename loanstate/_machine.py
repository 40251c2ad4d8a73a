"""The loan lifecycle: which ``before -> after`` changes are legal.

A :class:`LoanMachine` is built once from a definition and shared by every
loan: loans are rows in the caller's database, not objects here, so the
library holds nothing per loan. Underneath sits one ``transitions.Machine``
(no models attached, ``auto_transitions=False``) whose condition machinery
evaluates guards; a plain pair is answered from a table compiled from the
same definition. The test suite proves the two agree on every pair.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import transitions
from transitions.core import EventData

from loanstate._definition import (
    Definition,
    Guard,
    Problem,
    Transition,
    find_problems,
    parse_mapping,
    read_file,
)
from loanstate._errors import IllegalTransition, InvalidDefinition, InvalidEvent
from loanstate._events import _DECLARED_STATUSES, LoanChangeEvent, derive_request_id

__all__ = ["LoanMachine", "Transition", "default_machine"]

_DEFAULT_FILE: Final = "xfd_default.toml"


class LoanMachine:
    """An immutable lifecycle: statuses, the initial one, terminal ones, legal changes.

    Build it with :meth:`define`, :meth:`from_file` or :meth:`from_dict`; any
    mistake in the definition raises :class:`~loanstate.InvalidDefinition`
    listing every problem at once. One machine serves every loan and every
    thread: it holds no per-loan state.
    """

    __slots__ = ("_definition", "_engine", "_guarded", "_rules", "_table", "_triggers")

    _definition: Definition
    _table: Mapping[str, frozenset[str]]
    _rules: dict[tuple[str, str], bool]
    _guarded: Mapping[tuple[str, str], tuple[tuple[str, transitions.Transition], ...]]
    _triggers: Mapping[tuple[str, str], str]
    _engine: transitions.Machine

    def __init__(self, definition: Definition) -> None:
        """Build from a checked :class:`Definition`; prefer the ``define``/``from_*`` constructors."""
        problems = find_problems(definition)
        if problems:
            raise InvalidDefinition(problems, definition.source)
        table: dict[str, set[str]] = {s: set() for s in definition.statuses}
        guards: dict[tuple[str, str], list[Guard]] = {}
        triggers: dict[tuple[str, str], str] = {}
        specs: list[dict[str, Any]] = []
        for t in definition.transitions:
            trigger = t.trigger or f"to_{t.after}"
            for before in t.before:
                table[before].add(t.after)
                triggers[(before, trigger)] = t.after
                spec: dict[str, Any] = {"trigger": trigger, "source": before, "dest": t.after}
                if t.guard is not None:
                    guards.setdefault((before, t.after), []).append(t.guard)
                    spec["conditions"] = [t.guard]
                specs.append(spec)
        engine = transitions.Machine(
            model=None,
            states=list(definition.statuses),
            initial=definition.initial,
            transitions=specs,
            auto_transitions=False,
            send_event=False,
            name=definition.name,
        )
        guarded: dict[tuple[str, str], tuple[tuple[str, transitions.Transition], ...]] = {}
        for before, after in guards:
            found = []
            for name, event in engine.events.items():
                for candidate in event.transitions.get(before, ()):
                    if candidate.dest == after:
                        found.append((name, candidate))
            guarded[(before, after)] = tuple(found)
        _DECLARED_STATUSES.update(definition.statuses)
        set_ = object.__setattr__
        set_(self, "_definition", definition)
        set_(self, "_table", MappingProxyType({s: frozenset(a) for s, a in table.items()}))
        set_(self, "_guarded", MappingProxyType(guarded))
        # The compiled table change() consults: one lookup per call answers both
        # "is the pair declared?" (a key) and "does a guard decide?" (its value).
        rules = {(before, after): (before, after) in guarded for before, afters in table.items() for after in afters}
        set_(self, "_rules", rules)
        set_(self, "_triggers", MappingProxyType(triggers))
        set_(self, "_engine", engine)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LoanMachine is immutable: cannot set {name!r}")

    def __repr__(self) -> str:
        return (
            f"<LoanMachine {self.name!r}: {len(self._table)} statuses, "
            f"{sum(len(a) for a in self._table.values())} transitions, initial {self.initial!r}>"
        )

    # -- construction ---------------------------------------------------------

    @classmethod
    def define(
        cls,
        *,
        statuses: Mapping[str, str] | Iterable[str],
        initial: str,
        transitions: Sequence[Transition],
        terminal: Iterable[str] = (),
        name: str = "lifecycle",
    ) -> LoanMachine:
        """Declare a lifecycle in Python.

        ``statuses`` maps each status to a human description (or lists the
        names); ``transitions`` are :class:`Transition` values.
        """
        if isinstance(statuses, Mapping):
            described = {str(k): str(v) for k, v in statuses.items()}
        elif isinstance(statuses, str):
            described = {statuses: ""}
        else:
            # Non-text entries become their text, as mapping keys do: the name check then reports them.
            described = dict.fromkeys((s if isinstance(s, str) else str(s) for s in statuses), "")
        problems: list[Problem] = []
        kept: list[Transition] = []
        for index, t in enumerate(transitions, start=1):
            if isinstance(t, Transition):
                kept.append(t)
            else:
                problems.append(Problem("bad-value", f"must be a Transition, got {t!r}", f"transitions[{index}]"))
        terminal_list = [terminal] if isinstance(terminal, str) else list(terminal)
        definition = Definition(name, described, initial, tuple(terminal_list), tuple(kept))
        problems.extend(find_problems(definition))
        if problems:
            raise InvalidDefinition(problems)
        return cls(definition)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> LoanMachine:
        """Build from a mapping shaped like the TOML schema (``lifecycle``, ``statuses``, ``transitions``)."""
        definition, problems = parse_mapping(data, source=source)
        return cls._build(definition, problems)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LoanMachine:
        """Build from a TOML definition file; problems name the file and line."""
        definition, problems = read_file(path)
        return cls._build(definition, problems)

    @classmethod
    def _build(cls, definition: Definition | None, problems: list[Problem]) -> LoanMachine:
        if definition is not None:
            problems = problems + find_problems(definition)
        if problems or definition is None:
            raise InvalidDefinition(problems, definition.source if definition else problems[0].source)
        return cls(definition)

    @staticmethod
    def problems_in_file(path: str | os.PathLike[str]) -> list[Problem]:
        """Every problem in a definition file, without raising (empty when it is sound)."""
        definition, problems = read_file(path)
        return problems + (find_problems(definition) if definition else [])

    @staticmethod
    def problems_in_dict(data: Mapping[str, Any]) -> list[Problem]:
        """Every problem in a definition mapping, without raising."""
        definition, problems = parse_mapping(data)
        return problems + (find_problems(definition) if definition else [])

    def check(self) -> list[Problem]:
        """Run the static checks again; a built machine always passes, so this is ``[]``.

        It never raises. Use :meth:`problems_in_file` / :meth:`problems_in_dict`
        to check a definition you have not built.
        """
        return find_problems(self._definition)

    # -- reading --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The lifecycle's name (``lifecycle.name`` in the file)."""
        return self._definition.name

    @property
    def statuses(self) -> frozenset[str]:
        """Every declared status."""
        return frozenset(self._table)

    @property
    def descriptions(self) -> Mapping[str, str]:
        """Each status's human description, in declaration order."""
        return MappingProxyType(dict(self._definition.statuses))

    @property
    def initial(self) -> str:
        """The status a new loan starts in."""
        return self._definition.initial

    @property
    def terminal(self) -> frozenset[str]:
        """Statuses with no way out."""
        return frozenset(self._definition.terminal)

    @property
    def transitions(self) -> tuple[Transition, ...]:
        """The declared transitions, in declaration order."""
        return self._definition.transitions

    @property
    def source(self) -> str | None:
        """The file this machine was read from, if any."""
        return self._definition.source

    def is_legal(self, before: str, after: str) -> bool:
        """Whether ``before -> after`` is declared (guards aside). Unknown statuses are not legal."""
        try:
            allowed = self._table.get(before)
            return allowed is not None and after in allowed
        except TypeError:  # an unhashable value is no status
            return False

    def allowed(self, before: str) -> frozenset[str]:
        """The statuses a loan in ``before`` may change to (guards aside).

        Raises :class:`~loanstate.InvalidEvent` for an unknown status.
        """
        allowed = self._table.get(before) if _hashable(before) else None
        if allowed is None:
            raise InvalidEvent({"before_status": self._unknown(before)})
        return allowed

    def is_guarded(self, before: str, after: str) -> bool:
        """Whether ``before -> after`` is legal only when a guard agrees."""
        return (before, after) in self._guarded

    def after(self, before: str, trigger: str) -> str:
        """The status that ``trigger`` leads to from ``before`` (fire by name).

        Raises :class:`~loanstate.IllegalTransition` when ``trigger`` does not
        apply to ``before``.
        """
        try:
            return self._triggers[(before, trigger)]
        except (KeyError, TypeError):  # TypeError: an unhashable argument is no trigger either
            names = sorted({t for (b, t) in self._triggers if b == before})
            raise IllegalTransition(
                before,
                f"<{trigger}>",
                self.allowed(before),
                reason=f"trigger {trigger!r} does not apply (triggers from {before!r}: {', '.join(names) or 'none'})",
            ) from None

    # -- changing -------------------------------------------------------------

    def change(
        self,
        *,
        loan_apply_no: str,
        before: str,
        after: str,
        at: datetime,
        customer_id: str | None = None,
        institution_loan_no: str | None = None,
        request_id: str | None = None,
    ) -> LoanChangeEvent:
        """Make one change: return its validated event, or raise.

        Raises :class:`~loanstate.IllegalTransition` (with the allowed set) when
        both statuses are known but the pair is not legal or its guard says
        no, and :class:`~loanstate.InvalidEvent` for anything else that is
        wrong: an unknown status, a naive ``at``, a blank or over-long field.
        ``request_id`` defaults to :func:`~loanstate.derive_request_id` of the
        change, so replaying the same change yields the same id.
        """
        try:
            guarded = self._rules.get((before, after))
        except TypeError:  # an unhashable value is no status; _refusal says which
            guarded = None
        if guarded is None:
            raise self._refusal(loan_apply_no, before, after)
        if request_id is None:
            try:
                request_id = derive_request_id(loan_apply_no, before, after, at)
            except (TypeError, AttributeError, ValueError):  # ValueError: UnicodeEncodeError of a lone surrogate
                # Let the event's validators say which field is wrong (with a stand-in id).
                LoanChangeEvent(loan_apply_no, before, after, at, "0", customer_id, institution_loan_no)
                raise
        event = LoanChangeEvent(loan_apply_no, before, after, at, request_id, customer_id, institution_loan_no)
        if guarded:
            self._check_guards(event)
        return event

    def _refusal(self, loan_apply_no: str, before: str, after: str) -> Exception:
        errors = {}
        if not _hashable(before) or before not in self._table:
            errors["before_status"] = self._unknown(before)
        if not _hashable(after) or after not in self._table:
            errors["after_status"] = self._unknown(after)
        if errors:
            return InvalidEvent(errors)
        if before == after:
            return IllegalTransition(
                before, after, self._table[before], loan_apply_no=loan_apply_no, reason="not a change (same status)"
            )
        return IllegalTransition(before, after, self._table[before], loan_apply_no=loan_apply_no)

    def _unknown(self, status: object) -> str:
        return f"unknown status {status!r} (known: {', '.join(sorted(self._table))})"

    def _check_guards(self, event: LoanChangeEvent) -> None:
        """Ask ``transitions`` whether any guarded transition for the pair lets the change through."""
        state = self._engine.get_state(event.before_status)
        for trigger, candidate in self._guarded[(event.before_status, event.after_status)]:
            data = EventData(state, self._engine.events[trigger], self._engine, None, (event,), {})
            if all(condition.check(data) for condition in candidate.conditions):
                return
        raise IllegalTransition(
            event.before_status,
            event.after_status,
            self._table[event.before_status],
            loan_apply_no=event.loan_apply_no,
            reason="refused by its guard",
        )

    # -- diagrams -------------------------------------------------------------

    def _edges(self) -> list[tuple[str, str, str | None]]:
        return [(before, t.after, t.trigger) for t in self.transitions for before in t.before]

    def to_mermaid(self) -> str:
        """The lifecycle as a Mermaid ``stateDiagram-v2`` (deterministic text)."""
        ids = _mermaid_ids(self._definition.statuses)
        out = ["stateDiagram-v2"]
        for status, description in self._definition.statuses.items():
            if description:
                out.append(f"    {ids[status]} : {status}: {_mermaid_text(description)}")
            elif ids[status] != status:
                out.append(f"    {ids[status]} : {status}")
        out.append(f"    [*] --> {ids[self.initial]}")
        for before, after, trigger in self._edges():
            label = f" : {trigger}" if trigger else ""
            out.append(f"    {ids[before]} --> {ids[after]}{label}")
        for status in self._definition.terminal:
            out.append(f"    {ids[status]} --> [*]")
        return "\n".join(out) + "\n"

    def to_dot(self) -> str:
        """The lifecycle as a Graphviz ``digraph`` (deterministic text)."""
        out = [f"digraph {_dot_string(self.name)} {{", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
        out.append('    "__start__" [shape=point, label=""];')
        for status, description in self._definition.statuses.items():
            shape = ", peripheries=2" if status in self.terminal else ""
            # The description is raw text; the "\\n" between is dot's line break.
            label = f"{status}\\n{_dot_text(description)}" if description else status
            out.append(f"    {_dot_string(status)} [label={_dot_string(label, escaped=True)}{shape}];")
        out.append(f'    "__start__" -> {_dot_string(self.initial)};')
        for before, after, trigger in self._edges():
            label = f" [label={_dot_string(trigger)}]" if trigger else ""
            out.append(f"    {_dot_string(before)} -> {_dot_string(after)}{label};")
        out.append("}")
        return "\n".join(out) + "\n"


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _mermaid_ids(statuses: Iterable[str]) -> dict[str, str]:
    """A distinct Mermaid id per status: '.' and '-' become '_', with a suffix where two would meet."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for status in statuses:
        base = candidate = status.replace(".", "_").replace("-", "_")
        n = 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        ids[status] = candidate
        taken.add(candidate)
    return ids


def _dot_text(text: str) -> str:
    # Quotes are escaped by _dot_string(escaped=True); a backslash must be doubled first.
    return text.replace("\\", "\\\\")


def _mermaid_text(text: str) -> str:
    return text.replace("\n", " ").replace(":", "∶").replace(";", ",")


def _dot_string(text: str, *, escaped: bool = False) -> str:
    body = text.replace('"', '\\"') if escaped else text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{body}"'


_DEFAULT: list[LoanMachine] = []


def default_machine() -> LoanMachine:
    """The shipped ``xfd_default`` lifecycle (an assumption to confirm with Alibaba).

    Alibaba publishes no official status list; see the docs page on the
    default lifecycle before relying on it. Built once, then shared.
    """
    if not _DEFAULT:
        ref = resources.files("loanstate.lifecycles").joinpath(_DEFAULT_FILE)
        with resources.as_file(ref) as path:
            _DEFAULT.append(LoanMachine.from_file(path))
    return _DEFAULT[0]
