"""The loan lifecycle: which ``before -> after`` changes are legal.

A :class:`LoanMachine` is built once from a definition and shared by every
loan: loans are rows in the caller's database, not objects here, so the
library holds nothing per loan. Underneath sits one ``transitions.Machine``
(no models attached, ``auto_transitions=False``) whose condition machinery
evaluates guards; a plain pair is answered from a table compiled from the
same definition. The test suite proves the two agree on every pair.

Every public method takes any value without failing in an untyped way: a
status that is not a declared one (of any type) is unknown, a ``str`` subclass
such as a StrEnum member counts as its string value, and a wrong argument is
an :class:`~loanstate.InvalidEvent` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo

import transitions
from transitions.core import EventData

from loanstate import _diagrams
from loanstate import _validate as v
from loanstate._checks import find_problems
from loanstate._definition import Definition, Problem, Transition, from_python, parse_mapping, read_file
from loanstate._errors import IllegalTransition, InvalidDefinition, InvalidEvent, shorten
from loanstate._events import LoanChangeEvent, derive_request_id_unchecked

__all__ = ["LoanMachine", "Transition", "default_machine"]

_DEFAULT_FILE: Final = "xfd_default.toml"
_SEQUENCE_NEEDED: Final = (
    "is required when no request_id is given: the loan's change sequence (1 for its first change, "
    "then 2, 3, ...) keeps two changes of one loan from sharing a request_id"
)


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
    _rules: dict[tuple[str, str], tuple[str, str, bool]]
    _guarded: Mapping[tuple[str, str], tuple[tuple[str, transitions.Transition], ...]]
    _triggers: Mapping[tuple[str, str], str]
    _engine: transitions.Machine

    def __init__(self, definition: Definition) -> None:
        """Build from a checked :class:`Definition`; prefer the ``define``/``from_*`` constructors."""
        problems = find_problems(definition)
        if problems:
            raise InvalidDefinition(problems, definition.source if isinstance(definition, Definition) else None)
        table: dict[str, set[str]] = {s: set() for s in definition.statuses}
        triggers: dict[tuple[str, str], str] = {}
        specs: list[dict[str, Any]] = []
        for t in definition.transitions:
            for before in t.before:
                table[before].add(t.after)
                triggers[(before, t.fired_by)] = t.after
                spec: dict[str, Any] = {"trigger": t.fired_by, "source": before, "dest": t.after}
                if t.guard is not None:
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
        guarded = _guarded_transitions(definition, engine)
        set_ = object.__setattr__
        set_(self, "_definition", definition)
        set_(self, "_table", MappingProxyType({s: frozenset(a) for s, a in table.items()}))
        set_(self, "_guarded", MappingProxyType(guarded))
        # The compiled table change() consults: one lookup per call answers "is
        # the pair declared?" (a key), gives the machine's own spelling of both
        # statuses (so a StrEnum member becomes its plain string) and says
        # whether a guard decides.
        rules = {(b, a): (b, a, (b, a) in guarded) for b, afters in table.items() for a in afters}
        set_(self, "_rules", rules)
        set_(self, "_triggers", MappingProxyType(triggers))
        set_(self, "_engine", engine)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LoanMachine is immutable: cannot set {name!r}")

    def __repr__(self) -> str:
        return (
            f"<LoanMachine {shorten(self.name)}: {len(self._table)} statuses, "
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
        definition, problems = from_python(
            name=name, statuses=statuses, initial=initial, terminal=terminal, transitions=transitions
        )
        return cls._build(definition, problems)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> LoanMachine:
        """Build from a mapping shaped like the TOML schema (``lifecycle``, ``statuses``, ``transitions``)."""
        definition, problems = parse_mapping(data, source=source if isinstance(source, str) else None)
        return cls._build(definition, problems)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LoanMachine:
        """Build from a TOML definition file; problems name the file and line.

        The file must be a regular file of at most 1 MiB: a FIFO, a device or
        a directory is refused without reading it.
        """
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
        """Whether ``before -> after`` is declared (guards aside). Anything not a declared status is not legal."""
        return self._rule(before, after) is not None

    def allowed(self, before: str) -> frozenset[str]:
        """The statuses a loan in ``before`` may change to (guards aside).

        Raises :class:`~loanstate.InvalidEvent` for an unknown status.
        """
        allowed = self._table.get(v.plain_text(before)) if isinstance(before, str) else None
        if allowed is None:
            raise InvalidEvent({"before_status": self._unknown(before)})
        return allowed

    def is_guarded(self, before: str, after: str) -> bool:
        """Whether ``before -> after`` is legal only when a guard agrees."""
        rule = self._rule(before, after)
        return rule is not None and rule[2]

    def after(self, before: str, trigger: str) -> str:
        """The status that ``trigger`` leads to from ``before`` (fire by name).

        Raises :class:`~loanstate.IllegalTransition` when ``trigger`` does not
        apply to ``before`` (:class:`~loanstate.InvalidEvent` when ``before`` is
        not a declared status).
        """
        if isinstance(before, str) and isinstance(trigger, str):
            found = self._triggers.get((v.plain_text(before), v.plain_text(trigger)))
            if found is not None:
                return found
        allowed = self.allowed(before)
        known = v.plain_text(before)  # allowed() has just said it is a declared status
        names = sorted({t for (b, t) in self._triggers if b == known})
        raise IllegalTransition(
            known,
            f"<{_printable_name(trigger)}>",
            allowed,
            reason=f"trigger {shorten(trigger)} does not apply "
            f"(triggers from {shorten(known)}: {', '.join(names) or 'none'})",
        )

    def _rule(self, before: object, after: object) -> tuple[str, str, bool] | None:
        """The compiled rule for a pair, or ``None`` for any pair that is not declared (of any type)."""
        if isinstance(before, str) and isinstance(after, str):
            # A str subclass is looked up as its plain value: its own __hash__ and __eq__ are never called.
            return self._rules.get((v.plain_text(before), v.plain_text(after)))
        return None

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
        sequence: int | None = None,
    ) -> LoanChangeEvent:
        """Make one change: return its validated event, or raise.

        Raises :class:`~loanstate.IllegalTransition` (with the allowed set) when
        both statuses are known but the pair is not legal or its guard says
        no, and :class:`~loanstate.InvalidEvent` for anything else that is
        wrong: an unknown status, a naive ``at``, a blank or over-long field.

        ``request_id`` defaults to :func:`~loanstate.derive_request_id` of the
        change and ``sequence``, the change's number in the loan's history (1
        for its first change, then 2, 3, ...). Without a ``request_id``,
        ``sequence`` is required: two changes of one loan can be the same pair
        at the same instant (NEW -> OVERDUE, OVERDUE -> NEW, NEW -> OVERDUE),
        and only their place in the history tells them apart. Replaying a
        change with the same sequence yields the same id.
        """
        rule = self._rules.get((before, after)) if before.__class__ is str and after.__class__ is str else None
        if rule is None:
            rule = self._rule(before, after)
            if rule is None:
                raise self._refusal(loan_apply_no, before, after)
        before, after, guarded = rule
        if request_id is None:
            if not (
                sequence.__class__ is int
                and sequence >= 0
                and loan_apply_no.__class__ is str
                and at.__class__ is datetime
                and (at.tzinfo.__class__ is timezone or at.tzinfo.__class__ is ZoneInfo)
            ):
                loan_apply_no, at, sequence = self._plain_inputs(loan_apply_no, at, sequence)
            request_id = derive_request_id_unchecked(loan_apply_no, before, after, at, sequence)
        elif sequence is not None:
            wrong = v.problem(v.check_sequence, sequence)
            if wrong is not None:
                raise InvalidEvent({"sequence": wrong})
        event = LoanChangeEvent(loan_apply_no, before, after, at, request_id, customer_id, institution_loan_no)
        if guarded:
            self._check_guards(event)
        return event

    @staticmethod
    def _plain_inputs(loan_apply_no: object, at: object, sequence: object) -> tuple[str, datetime, int]:
        """What a request id is derived from, in its plain form, or InvalidEvent naming each bad one."""
        errors: dict[str, str] = {}
        found: dict[str, Any] = {}
        checks = (
            ("loan_apply_no", v.check_text, loan_apply_no),
            ("change_time", v.check_time, at),
            ("sequence", v.check_sequence, sequence),
        )
        for name, check, value in checks:
            if name == "sequence" and value is None:
                errors[name] = _SEQUENCE_NEEDED
                continue
            try:
                found[name] = check(value)
            except v.FieldProblem as exc:
                errors[name] = str(exc)
        if errors:
            raise InvalidEvent(errors)
        return found["loan_apply_no"], found["change_time"], found["sequence"]

    def _refusal(self, loan_apply_no: object, before: object, after: object) -> Exception:
        errors = {}
        if not self._is_status(before):
            errors["before_status"] = self._unknown(before)
        if not self._is_status(after):
            errors["after_status"] = self._unknown(after)
        if errors:
            return InvalidEvent(errors)
        known_before, known_after = v.plain_text(before), v.plain_text(after)  # type: ignore[arg-type]
        loan = loan_apply_no if isinstance(loan_apply_no, str) else shorten(loan_apply_no)
        if known_before == known_after:
            reason = "not a change (same status)"
            return IllegalTransition(
                known_before, known_after, self._table[known_before], loan_apply_no=loan, reason=reason
            )
        return IllegalTransition(known_before, known_after, self._table[known_before], loan_apply_no=loan)

    def _is_status(self, value: object) -> bool:
        return isinstance(value, str) and v.plain_text(value) in self._table

    def _unknown(self, status: object) -> str:
        return f"unknown status {shorten(status)} (known: {', '.join(sorted(self._table))})"

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

    def to_mermaid(self) -> str:
        """The lifecycle as a Mermaid ``stateDiagram-v2`` (deterministic text, no control characters)."""
        return _diagrams.to_mermaid(self._definition)

    def to_dot(self) -> str:
        """The lifecycle as a Graphviz ``digraph`` (deterministic text, no control characters)."""
        return _diagrams.to_dot(self._definition)


def _printable_name(value: object) -> str:
    """A trigger, as an ``after`` placeholder in an error: itself when it is short printable text."""
    if isinstance(value, str):
        value = v.plain_text(value)
        if len(value) <= 64 and value.isprintable():
            return value
    return shorten(value, 40)


def _guarded_transitions(
    definition: Definition, engine: transitions.Machine
) -> dict[tuple[str, str], tuple[tuple[str, transitions.Transition], ...]]:
    """For each guarded pair, the engine's transitions (and their triggers) that may take it."""
    pairs = {(before, t.after) for t in definition.transitions if t.guard is not None for before in t.before}
    guarded: dict[tuple[str, str], tuple[tuple[str, transitions.Transition], ...]] = {}
    for before, after in sorted(pairs):
        found = []
        for name, event in engine.events.items():
            for candidate in event.transitions.get(before, ()):
                if candidate.dest == after:
                    found.append((name, candidate))
        guarded[(before, after)] = tuple(found)
    return guarded


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
