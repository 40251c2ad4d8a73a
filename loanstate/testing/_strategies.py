"""Hypothesis strategies for statuses, pairs, timestamps, change events and lifecycles.

Every strategy takes the :class:`~loanstate.LoanMachine` it draws for
(``None`` means :func:`~loanstate.default_machine`), so a team tests against
*its* lifecycle. What a caller may rely on:

- :func:`statuses` draws declared statuses; :func:`legal_pairs` pairs the
  machine declares (guards aside); :func:`illegal_pairs` pairs of *known*
  statuses that are not legal, same-status pairs included.
- :func:`change_times` draws aware datetimes in fixed-offset zones: UTC, UTC+8
  (the platform's), half- and quarter-hour offsets, the extremes -12:00 and
  +14:00, and one offset with seconds; microseconds vary.
- :func:`change_events` draws events :meth:`~loanstate.LoanMachine.change`
  accepts: non-ASCII text up to 64 characters, optional fields present or
  absent, explicit ``request_id`` or one derived with a drawn sequence.
- :func:`lifecycles` draws one loan's legal path from the initial status, with
  strictly increasing instants (each event may be written in a different zone).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from hypothesis import reject
from hypothesis import strategies as st

from loanstate._errors import IllegalTransition
from loanstate._events import LoanChangeEvent
from loanstate._machine import LoanMachine, default_machine
from loanstate._validate import MAX_TEXT_LENGTH, is_text

__all__ = [
    "change_events",
    "change_times",
    "illegal_pairs",
    "legal_pairs",
    "lifecycles",
    "loan_numbers",
    "statuses",
    "texts",
    "timezones",
]

# Offsets in seconds: the platform's UTC+8, UTC, India, Nepal, Newfoundland,
# the Chatham Islands, the two extremes, and a historic offset with seconds
# (Amsterdam's +00:19:32) that ISO 8601 writers often get wrong.
_OFFSETS: Final = (
    0,
    8 * 3600,
    5 * 3600 + 30 * 60,
    5 * 3600 + 45 * 60,
    -(3 * 3600 + 30 * 60),
    12 * 3600 + 45 * 60,
    -12 * 3600,
    14 * 3600,
    -5 * 3600,
    9 * 3600 + 30 * 60,
    19 * 60 + 32,
)
_ZONES: Final = tuple(UTC if o == 0 else timezone(timedelta(seconds=o)) for o in _OFFSETS)
_EARLIEST: Final = datetime(2000, 1, 1)
_LATEST: Final = datetime(2060, 12, 31)
# Characters the event accepts: printable ones (letters, marks, numbers,
# punctuation, symbols, CJK, emoji) and the ASCII space; no control, format or
# private-use characters, no lone surrogates, no other separators.
_CHARACTERS: Final = st.characters(exclude_categories=("C", "Z"), include_characters=" ")
_REQUEST_IDS: Final = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
# Gaps between two changes of one loan: from one microsecond (the edge) to years.
_GAPS: Final = st.one_of(
    st.integers(1, 10**6),
    st.integers(1, 3 * 365 * 86_400 * 10**6),
).map(lambda micros: timedelta(microseconds=micros))


def _machine(machine: LoanMachine | None) -> LoanMachine:
    return default_machine() if machine is None else machine


def timezones() -> st.SearchStrategy[timezone]:
    """Fixed-offset zones, UTC and UTC+8 first (so failures shrink towards them)."""
    return st.sampled_from(_ZONES)


@functools.cache  # one strategy per bounds: kits draw it per event, and a new one each time misses Hypothesis's cache
def change_times(*, min_value: datetime = _EARLIEST, max_value: datetime = _LATEST) -> st.SearchStrategy[datetime]:
    """Aware datetimes (instants between the naive UTC bounds), written in a drawn zone."""
    return st.builds(
        lambda naive, zone: naive.replace(tzinfo=UTC).astimezone(zone),
        st.datetimes(min_value=min_value, max_value=max_value),
        timezones(),
    )


def texts() -> st.SearchStrategy[str]:
    """Text the event accepts in any field: 1-64 printable characters, not all spaces.

    Mostly arbitrary Unicode (CJK, emoji, combining marks, leading and trailing spaces), sometimes
    a realistic ASCII reference number.
    """
    return st.one_of(
        st.from_regex(r"[A-Z]{2}[0-9]{6,18}", fullmatch=True),
        st.text(_CHARACTERS, min_size=1, max_size=MAX_TEXT_LENGTH).filter(is_text),
    )


def loan_numbers() -> st.SearchStrategy[str]:
    """Valid ``loan_apply_no`` values (see :func:`texts`)."""
    return texts()


def statuses(machine: LoanMachine | None = None) -> st.SearchStrategy[str]:
    """A status the machine declares."""
    return st.sampled_from(sorted(_machine(machine).statuses))


def _legal(machine: LoanMachine) -> list[tuple[str, str]]:
    return sorted((before, after) for before in machine.statuses for after in machine.allowed(before))


def legal_pairs(machine: LoanMachine | None = None) -> st.SearchStrategy[tuple[str, str]]:
    """A ``(before, after)`` pair the machine declares legal (guards aside)."""
    return st.sampled_from(_legal(_machine(machine)))


def illegal_pairs(machine: LoanMachine | None = None) -> st.SearchStrategy[tuple[str, str]]:
    """A pair of known statuses that is not legal, same-status pairs included."""
    m = _machine(machine)
    known = sorted(m.statuses)
    return st.sampled_from([(b, a) for b in known for a in known if not m.is_legal(b, a)])


def _optional(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), strategy)


@st.composite
def change_events(draw: st.DrawFn, machine: LoanMachine | None = None) -> LoanChangeEvent:
    """A valid event for a legal pair of the machine (its guards, if any, agree)."""
    m = _machine(machine)
    before, after = draw(legal_pairs(m))
    try:
        return m.change(
            loan_apply_no=draw(loan_numbers()),
            before=before,
            after=after,
            at=draw(change_times()),
            customer_id=draw(_optional(texts())),
            institution_loan_no=draw(_optional(texts())),
            request_id=draw(_optional(_REQUEST_IDS)),
            sequence=draw(st.integers(1, 10**6)),
        )
    except IllegalTransition:  # a guard said no: not a valid event for this machine
        reject()


def _next_status(draw: st.DrawFn, machine: LoanMachine, status: str, *, keep_going: bool) -> list[str]:
    """The statuses to try after ``status``, in drawn order.

    With ``keep_going`` (more steps are wanted), statuses that have a way out
    come first, so a path does not stop at a terminal status when it need not.
    """
    options = sorted(machine.allowed(status))
    if not options:
        return []
    onward = [s for s in options if machine.allowed(s)]
    first = draw(st.sampled_from(onward if keep_going and onward else options))
    return [first] + [s for s in options if s != first]


def walk(
    draw: st.DrawFn,
    machine: LoanMachine,
    *,
    loan_apply_no: str,
    steps: int,
    start: datetime,
    customer_id: str | None = None,
    institution_loan_no: str | None = None,
    avoid_dead_end: bool = False,
) -> list[LoanChangeEvent]:
    """Draw up to ``steps`` legal changes of one loan from the initial status.

    Instants strictly increase from ``start`` (the first change is later than
    it); each change is written in a drawn zone; its request id is derived
    with its sequence in the loan's history (1, 2, 3, ...). The walk stops early only at a
    status with no way out. With ``avoid_dead_end``, the last status has a way
    out whenever the lifecycle allows that.
    """
    events: list[LoanChangeEvent] = []
    status = machine.initial
    moment = start
    for step in range(steps):
        keep_going = step < steps - 1 or avoid_dead_end
        candidates = _next_status(draw, machine, status, keep_going=keep_going)
        moment = moment + draw(_GAPS)
        at = moment.astimezone(draw(timezones()))
        event = None
        for after in candidates:
            try:
                event = machine.change(
                    loan_apply_no=loan_apply_no,
                    before=status,
                    after=after,
                    at=at,
                    customer_id=customer_id,
                    institution_loan_no=institution_loan_no,
                    sequence=len(events) + 1,
                )
            except IllegalTransition:  # its guard refused this change: try another
                continue
            break
        if event is None:
            break
        events.append(event)
        status = event.after_status
    return events


@st.composite
def lifecycles(
    draw: st.DrawFn,
    machine: LoanMachine | None = None,
    *,
    loan_apply_no: str | None = None,
    min_size: int = 0,
    max_size: int = 10,
    start: datetime | None = None,
) -> list[LoanChangeEvent]:
    """One loan's legal path from the initial status, as its change events, oldest first.

    Each event's ``before_status`` is the previous one's ``after_status`` (the
    first starts at ``machine.initial``); instants strictly increase (by one
    microsecond to years), later than ``start`` when given. The path has
    ``min_size`` to ``max_size`` changes; it is shorter than ``min_size`` only
    when the lifecycle cannot go on (it avoids terminal statuses while more
    changes are wanted). ``customer_id`` / ``institution_loan_no`` are drawn
    once per loan, each present or absent.
    """
    m = _machine(machine)
    return walk(
        draw,
        m,
        loan_apply_no=loan_apply_no if loan_apply_no is not None else draw(loan_numbers()),
        steps=draw(st.integers(min_size, max_size)),
        start=start if start is not None else draw(change_times()),
        customer_id=draw(_optional(texts())),
        institution_loan_no=draw(_optional(texts())),
    )
