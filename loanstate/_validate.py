"""The field rules of a loan change, written once.

Every module that judges a value of the API's request (the event, the machine,
the definition reader, the store, the audit, the import, the test strategies)
asks this module, so a rule means the same everywhere. The rules:

- **text** (``loan_apply_no``, ``customer_id``, ``institution_loan_no``, and a
  status on an event): a string of 1-64 printable characters, not all white
  space. "Printable" is :meth:`str.isprintable`: no control or format
  characters, no lone surrogates, no NUL; letters, CJK, emoji and spaces are fine.
- **status names** in a definition: stricter, 1-64 of ``[A-Za-z0-9_.-]``, not
  starting with ``.`` or ``-`` (they end up in diagrams, logs and SQL).
- **trigger names**: a Python identifier of at most 64 characters.
- **request ids**: 1-64 characters of ``[A-Za-z0-9_-]``.
- **times**: an aware :class:`~datetime.datetime` that can be written in UTC and
  GMT+8; the API writes them as ``yyyy-MM-dd HH:mm:ss`` in GMT+8
  (:func:`format_top_time`, :func:`parse_top_time`).
- **sequences** (a change's place in its loan's history): a non-negative int.

A ``str`` subclass (a :class:`~enum.StrEnum` member) is accepted as its string
value and returned as a plain ``str``; an ``int`` subclass (not ``bool``) as its
int value. Each ``check_*`` function returns the value in that plain form or
raises :class:`FieldProblem` saying what is wrong, quoting the value shortened
(the caller knows the field's name and builds the typed error). The ``is_*``
predicates answer the common case fast, for hot loops, and never raise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, TypeVar
from zoneinfo import ZoneInfo

from loanstate._errors import shorten

__all__ = [
    "MAX_TEXT_LENGTH",
    "REQUEST_ID",
    "STATUS_NAME",
    "TOP_TIMEZONE",
    "TOP_TIME_FORMAT",
    "TRIGGER_NAME",
    "FieldProblem",
    "check_optional_text",
    "check_request_id",
    "check_sequence",
    "check_status_name",
    "check_text",
    "check_time",
    "check_trigger_name",
    "format_top_time",
    "is_request_id",
    "is_text",
    "parse_iso_time",
    "parse_top_time",
    "plain_text",
    "problem",
]

#: Longest text accepted in any field of a change.
MAX_TEXT_LENGTH: Final = 64
#: The open platform writes dates in GMT+8 (Beijing time, no daylight saving).
TOP_TIMEZONE: Final = timezone(timedelta(hours=8), "UTC+08:00")
#: The platform's date format, in its own (Java) notation; always GMT+8.
TOP_TIME_FORMAT: Final = "yyyy-MM-dd HH:mm:ss"
#: A request id: what the platform accepts as an idempotency key, and every derived id.
REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A status name in a definition: what the API carries in before_status / after_status.
STATUS_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: A trigger name: a Python identifier, so it can be fired by name.
TRIGGER_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# ASCII digits only: re's \d would also take Arabic-Indic or full-width digits.
_TOP_TIME: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
# Time zones whose utcoffset() is the standard library's own code: it cannot
# raise or answer garbage, so an aware time in one of them is kept as given.
_TRUSTED_ZONES: Final = (timezone, ZoneInfo)

T = TypeVar("T")


class FieldProblem(ValueError):
    """What is wrong with one value; the message quotes it shortened and names no field."""


def problem(check: Callable[[object], object], value: object) -> str | None:
    """What ``check`` finds wrong with ``value``, or ``None`` when it passes."""
    try:
        check(value)
    except FieldProblem as exc:
        return str(exc)
    return None


def plain_text(value: str) -> str:
    """The plain ``str`` of a string (a ``str`` subclass, such as a StrEnum member, becomes its value)."""
    return value if value.__class__ is str else str.__str__(value)


# -- text ----------------------------------------------------------------------


def is_text(value: object) -> bool:
    """A plain ``str`` of 1-64 printable characters, not all white space (never raises)."""
    return value.__class__ is str and 0 < len(value) <= MAX_TEXT_LENGTH and value.isprintable() and not value.isspace()


def check_text(value: object) -> str:
    """``value`` as a plain string if it is text (see the module's rules), else :class:`FieldProblem`."""
    if not isinstance(value, str):
        raise FieldProblem(f"must be a string, got {type(value).__name__} {shorten(value)}")
    text = plain_text(value)
    if is_text(text):
        return text
    if not text.strip():
        raise FieldProblem(f"must not be blank, got {shorten(text)}")
    if len(text) > MAX_TEXT_LENGTH:
        raise FieldProblem(f"must be at most {MAX_TEXT_LENGTH} characters, got {len(text)}: {shorten(text, 20)}")
    raise FieldProblem(f"must not contain control or other non-printable characters, got {shorten(text)}")


def check_optional_text(value: object) -> str | None:
    """``None``, or ``value`` checked as text."""
    return None if value is None else check_text(value)


# -- names in a definition -------------------------------------------------------


def check_status_name(value: object) -> str:
    """``value`` as a plain string if it is a status name a definition may declare."""
    if not isinstance(value, str):
        raise FieldProblem(f"must be a status name (a string), got {type(value).__name__} {shorten(value)}")
    name = plain_text(value)
    if not name.strip():
        raise FieldProblem(f"is blank: {shorten(name)}")
    if STATUS_NAME.fullmatch(name) is None:
        raise FieldProblem(f"{shorten(name)} must be 1-64 characters of letters, digits, '_', '.', '-'")
    return name


def check_trigger_name(value: object) -> str:
    """``value`` as a plain string if it is a trigger name (a Python identifier of at most 64 characters)."""
    if not isinstance(value, str):
        raise FieldProblem(f"must be a name (a string), got {type(value).__name__} {shorten(value)}")
    name = plain_text(value)
    if TRIGGER_NAME.fullmatch(name) is None:
        raise FieldProblem(f"{shorten(name)} must be a Python identifier of at most {MAX_TEXT_LENGTH} characters")
    return name


# -- request ids and sequences ------------------------------------------------------


def is_request_id(value: object) -> bool:
    """A plain ``str`` of 1-64 characters of ``[A-Za-z0-9_-]`` (never raises)."""
    if value.__class__ is not str:
        return False
    if len(value) <= MAX_TEXT_LENGTH and value.isascii() and value.isalnum():
        return True  # letters and digits only, as every derived (hex) id is: no pattern to run
    return REQUEST_ID.fullmatch(value) is not None


def check_request_id(value: object) -> str:
    """``value`` as a plain string if it is a request id, else :class:`FieldProblem`."""
    if not isinstance(value, str):
        raise FieldProblem(f"must be a string, got {type(value).__name__} {shorten(value)}")
    text = plain_text(value)
    if is_request_id(text):
        return text
    raise FieldProblem(f"must be 1-64 characters of [A-Za-z0-9_-], got {shorten(value)}")


def check_sequence(value: object) -> int:
    """``value`` as a plain int if it is a change's sequence in its loan's history (0 or more)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return int.__index__(value)
    raise FieldProblem(f"must be a whole number, 0 or more (the loan's change sequence), got {shorten(value)}")


# -- times -----------------------------------------------------------------------------


def check_time(value: object) -> datetime:
    """``value`` if it is an aware datetime that UTC and GMT+8 can both write, else :class:`FieldProblem`.

    A time in a standard-library zone (:class:`~datetime.timezone`,
    :class:`~zoneinfo.ZoneInfo`) is returned as given. Any other ``tzinfo`` (or
    a ``datetime`` subclass) is asked for its offset once, and the moment comes
    back as a plain ``datetime`` at that fixed offset: a foreign zone whose
    ``utcoffset`` raises or changes its answer can do no harm later.
    """
    if not isinstance(value, datetime):
        raise FieldProblem(f"must be a datetime, got {type(value).__name__} {shorten(value)}")
    if value.__class__ is not datetime or value.tzinfo.__class__ not in _TRUSTED_ZONES:
        value = _fixed_offset(value)
    # Only at the edges of datetime's range can a moment fail to be written in
    # GMT+8 (to_top_param) or UTC; the year test keeps the common case cheap.
    if value.year in (1, 9999):
        try:
            value.astimezone(TOP_TIMEZONE)
            value.astimezone(UTC)
        except OverflowError:
            # The zone is a standard one by now, so the offset can be written too.
            raise FieldProblem(f"must be writable in UTC and GMT+8, got {value.isoformat()!r} (out of range)") from None
    return value


def _fixed_offset(value: datetime) -> datetime:
    """The same wall time as a plain datetime at the offset its tzinfo gives, asked once."""
    if value.tzinfo is None:
        raise FieldProblem(f"must be timezone-aware, got naive {_iso(value)} (attach a tzinfo)")
    try:
        offset = value.utcoffset()  # datetime checks the type and range of what the zone answers
        if offset is None:
            raise FieldProblem(f"must be timezone-aware, got naive {_iso(value)} (its tzinfo gives no offset)")
        fields = (value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond)
        return datetime(*fields, tzinfo=timezone(offset))
    except FieldProblem:
        raise
    except Exception as exc:
        raise FieldProblem(f"has a tzinfo whose utcoffset() fails: {shorten(exc)}") from None


def _iso(value: datetime) -> str:
    """``value`` in ISO 8601, quoted, without consulting its tzinfo (which may be hostile)."""
    try:
        return repr(datetime.isoformat(value.replace(tzinfo=None)))
    except Exception:
        return "<datetime>"


def format_top_time(moment: datetime) -> str:
    """Write an aware datetime the way the open platform reads dates.

    ``yyyy-MM-dd HH:mm:ss`` in GMT+8; sub-second digits are dropped.
    """
    return moment.astimezone(TOP_TIMEZONE).isoformat(" ", "seconds")[:19]


def parse_top_time(value: object) -> datetime:
    """Read the platform's ``yyyy-MM-dd HH:mm:ss`` (ASCII digits) as a moment in GMT+8.

    The inverse of :func:`format_top_time` for whole seconds; anything else is
    a :class:`FieldProblem`.
    """
    if not isinstance(value, str):
        raise FieldProblem(f"must be a string 'yyyy-MM-dd HH:mm:ss' (GMT+8), got {type(value).__name__}")
    value = plain_text(value)
    found = _TOP_TIME.fullmatch(value)
    if found is None:
        raise FieldProblem(f"must be 'yyyy-MM-dd HH:mm:ss' (GMT+8, the API's format), got {shorten(value)}")
    try:
        year, month, day, hour, minute, second = (int(part) for part in found.groups())
        moment = datetime(year, month, day, hour, minute, second, tzinfo=TOP_TIMEZONE)
    except ValueError as exc:
        raise FieldProblem(f"is not a real date and time: {shorten(value)} ({exc})") from None
    return check_time(moment)


def parse_iso_time(value: object) -> datetime:
    """An aware datetime, or an ISO 8601 string with an offset, as a checked aware datetime."""
    if isinstance(value, str):
        value = plain_text(value)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise FieldProblem(f"must be an ISO 8601 date-time with an offset, got {shorten(value)}") from None
        if moment.utcoffset() is None:
            raise FieldProblem(f"must be timezone-aware, got naive {shorten(value)} (add an offset such as +08:00)")
        return check_time(moment)
    if isinstance(value, datetime):
        return check_time(value)
    raise FieldProblem(f"must be a datetime or an ISO 8601 string, got {type(value).__name__} {shorten(value)}")
