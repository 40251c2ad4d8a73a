"""Hypothesis strategies for loanstate's own tests: the kit's, re-exported, plus test-only ones.

The hostile ones (:func:`hostile_values`, :func:`hostile_texts`,
:func:`hostile_times`) draw what a careless or malicious caller may pass to a
public entry point: wrong types, str and int subclasses, objects whose
``__repr__``, ``__hash__``, ``__eq__`` or ``__str__`` raise, strings with NUL,
lone surrogates or terminal escapes, a megabyte of text, deep nesting, huge
integers, naive datetimes and datetimes whose ``tzinfo`` misbehaves. A public
entry point given any of them must give a typed error or a correct result.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from hypothesis import strategies as st

from loanstate import LoanMachine
from loanstate.testing import (
    broken_definitions,
    change_events,
    change_times,
    definitions,
    histories,
    illegal_pairs,
    legal_pairs,
    lifecycles,
    loan_numbers,
    statuses,
    texts,
    timezones,
)

__all__ = [
    "FickleZone",
    "GarbageZone",
    "Hostile",
    "HostileStr",
    "Number",
    "RaisingZone",
    "Status",
    "broken_definitions",
    "change_events",
    "change_times",
    "definitions",
    "histories",
    "hostile_texts",
    "hostile_times",
    "hostile_values",
    "illegal_pairs",
    "legal_pairs",
    "lifecycles",
    "loan_numbers",
    "machines",
    "statuses",
    "texts",
    "timezones",
]


def _build(data: dict[str, Any]) -> LoanMachine:
    return LoanMachine.from_dict(data)


def machines(*, max_statuses: int = 6) -> st.SearchStrategy[LoanMachine]:
    """Random sound lifecycles, built (not only the shipped one)."""
    return definitions(max_statuses=max_statuses).map(_build)


class Status(enum.StrEnum):
    """Statuses as a team might declare them: StrEnum members, taken as their string value."""

    NEW = "NEW"
    OVERDUE = "OVERDUE"
    SETTLED = "SETTLED"
    INVALID = "INVALID"


class Number(enum.IntEnum):
    """An int subclass, taken as its value where a number is wanted."""

    ONE = 1


class Hostile:
    """An object every dunder of which raises: repr, str, hash, eq, iteration, length, format."""

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError("hostile object")

    __repr__ = __str__ = __hash__ = __eq__ = __iter__ = __len__ = __format__ = __bool__ = _refuse


class HostileStr(str):
    """A str subclass whose own methods raise: only its plain value may ever be used."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError("hostile str subclass")

    __hash__ = __eq__ = __repr__ = __str__ = __format__ = __len__ = __iter__ = _refuse
    strip = isprintable = isspace = encode = _refuse


class RaisingZone(tzinfo):
    """A tzinfo whose utcoffset raises."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset today")

    def dst(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no dst today")

    def tzname(self, dt: datetime | None) -> str:
        return "raising"


class GarbageZone(tzinfo):
    """A tzinfo whose utcoffset answers something that is not an offset."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def utcoffset(self, dt: datetime | None) -> Any:
        return self.answer

    def dst(self, dt: datetime | None) -> Any:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return "garbage"


class FickleZone(tzinfo):
    """A tzinfo that answers a different offset every time it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    def utcoffset(self, dt: datetime | None) -> timedelta:
        self.calls += 1
        return timedelta(hours=self.calls % 24)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "fickle"


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _among(values: list[Any]) -> st.SearchStrategy[Any]:
    """One of ``values``, drawn by index: Hypothesis never needs their repr (some raise, some are huge)."""
    return st.sampled_from(range(len(values))).map(values.__getitem__)


_HOSTILE_TEXTS: list[Any] = [
    "",
    "   ",
    "FI\x00001",
    "FI\ud800",
    "\udfff",
    "\x1b[31mRED\x1b[0m",
    "line\nbreak",
    "tab\there",
    "\u200bzero-width",
    "\u2028",
    "x" * 65,
    "贷" * 65,
    "A" * 1_000_000,
    HostileStr("FI1"),
    Status.NEW,
]
_MOMENT = datetime(2024, 1, 1, 9, 30)
_HOSTILE_TIMES: list[Any] = [
    _MOMENT,
    _MOMENT.replace(tzinfo=RaisingZone()),
    _MOMENT.replace(tzinfo=GarbageZone("eight hours")),
    _MOMENT.replace(tzinfo=GarbageZone(timedelta(hours=30))),
    _MOMENT.replace(tzinfo=GarbageZone(None)),
    _MOMENT.replace(tzinfo=GarbageZone(8)),
    _MOMENT.replace(tzinfo=FickleZone()),
    datetime(9999, 12, 31, 23, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=GarbageZone(timedelta(hours=14))),
    "2024-01-01 09:30:00",
    1704072600,
    _MOMENT.date(),
]
_HOSTILE_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    10**5000,
    1.5,
    float("nan"),
    b"NEW",
    bytearray(b"NEW"),
    [],
    ["NEW"],
    {},
    {"NEW": 1},
    ("NEW", "OVERDUE"),
    {"NEW"},
    object(),
    Hostile(),
    Number.ONE,
    _nested(5_000),
    datetime,
    print,
]


def hostile_texts() -> st.SearchStrategy[Any]:
    """Strings no text field accepts (or only as a plain value): control characters, NUL, lone surrogates, ESC, huge."""
    return st.one_of(
        _among(_HOSTILE_TEXTS),
        st.text(st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp"]), min_size=1, max_size=70),
        st.text(min_size=65, max_size=80),
    )


def hostile_times() -> st.SearchStrategy[Any]:
    """Datetimes no change may carry (naive, zones that raise or lie) and ones it must pin to a fixed offset."""
    return _among(_HOSTILE_TIMES)


def hostile_values() -> st.SearchStrategy[Any]:
    """Anything a wrong caller might pass where a string, time, number or collection is wanted."""
    return st.one_of(
        _among(_HOSTILE_VALUES),
        st.builds(lambda: iter(["NEW"])),
        hostile_texts(),
        hostile_times(),
        st.integers(),
        st.binary(max_size=10),
    )
