"""Argument checks for the store's public methods, run before any value reaches a database.

A value of the wrong type must never reach SQL: MySQL/MariaDB compare a
number with a string column numerically (``skip(13)`` would match a request id
starting ``13a3...``; ``status(0)`` a loan that does not exist), and NUL
characters or lone surrogates make the drivers raise their own errors. Text
follows the event's own rule (loanstate._events); ``str`` subclasses such as
``StrEnum`` members are taken as their plain string value. Messages show a
value shortened to a readable length.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from loanstate._errors import InvalidConfiguration, InvalidEvent
from loanstate._events import MAX_FIELD_LENGTH, _check_request_id, _is_text, _text_problem

__all__ = [
    "check_at",
    "check_count",
    "check_instances",
    "check_lease",
    "check_owner",
    "check_request_id",
    "check_search",
    "check_text",
    "configuration_error",
    "shorten",
]

_SHOWN: Final = 60  # characters of a bad value's repr an error message shows
_MAX_OWNER: Final = 128  # the lease_owner column
_MAX_SEARCH: Final = 1000


def shorten(value: object) -> str:
    """``repr(value)``, cut to a readable length (a 1 MB bad value must not make a 1 MB message)."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not replace the error we are raising
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}...({len(text)} characters)"


class _Shown:
    """Stands for a bad setting in :class:`InvalidConfiguration`, so its message shows a shortened repr."""

    def __init__(self, value: object) -> None:
        self.text = shorten(value)

    def __repr__(self) -> str:
        return self.text


def configuration_error(setting: str, value: object, problem: str) -> InvalidConfiguration:
    """An InvalidConfiguration for ``setting`` whose message shows ``value`` shortened."""
    return InvalidConfiguration(setting, _Shown(value), problem)


def _plain(value: object) -> object:
    # str.__str__ of a str subclass (a StrEnum member) is a plain str of the same characters.
    return str.__str__(value) if isinstance(value, str) and value.__class__ is not str else value


def check_text(field: str, value: object) -> str:
    """``value`` as a plain str if it is event text (1-64 printable characters), else InvalidEvent naming ``field``."""
    value = _plain(value)
    if _is_text(value):
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise InvalidEvent({field: f"must be a string, got {type(value).__name__} {shorten(value)}"})
    if len(value) > MAX_FIELD_LENGTH:
        raise InvalidEvent(
            {field: f"must be at most {MAX_FIELD_LENGTH} characters, got {len(value)}: {shorten(value)}"}
        )
    raise InvalidEvent({field: _text_problem(value)})


def check_request_id(value: object) -> str:
    """``value`` as a plain str if it is a well-formed request id (1-64 of ``[A-Za-z0-9_-]``), else InvalidEvent."""
    value = _plain(value)
    if not isinstance(value, str):
        raise InvalidEvent({"request_id": f"must be a string, got {type(value).__name__} {shorten(value)}"})
    if len(value) > MAX_FIELD_LENGTH:
        raise InvalidEvent({"request_id": f"must be 1-64 characters of [A-Za-z0-9_-], got {shorten(value)}"})
    _check_request_id(None, None, value)  # type: ignore[arg-type]
    return value


def check_search(field: str, value: object) -> str:
    """Text to search for: 1-1000 printable characters, not all blank, else InvalidEvent."""
    value = _plain(value)
    if not isinstance(value, str):
        raise InvalidEvent({field: f"must be a string, got {type(value).__name__} {shorten(value)}"})
    if value.isspace() or not 0 < len(value) <= _MAX_SEARCH or not value.isprintable():
        raise InvalidEvent(
            {field: f"must be 1-{_MAX_SEARCH} printable characters, not all blank, got {shorten(value)}"}
        )
    return value


def check_at(at: object, field: str = "change_time") -> datetime:
    """An aware datetime, else InvalidEvent naming ``field``."""
    if not isinstance(at, datetime):
        raise InvalidEvent({field: f"must be a datetime, got {type(at).__name__} {shorten(at)}"})
    try:
        offset = at.utcoffset()
    except Exception as exc:  # a hostile tzinfo
        raise InvalidEvent({field: f"has a tzinfo that fails: {type(exc).__name__}"}) from None
    if offset is None:
        raise InvalidEvent({field: f"must be timezone-aware, got naive {at.isoformat()!r} (attach a tzinfo)"})
    if at.year in (1, 9999):  # only there can a moment fail to be written in UTC
        try:
            at.astimezone(UTC)
        except OverflowError:
            raise InvalidEvent({field: f"must be writable in UTC, got {at.isoformat()!r} (out of range)"}) from None
    return at


def check_owner(owner: object) -> str:
    """A worker name for leases: 1-128 printable characters, else InvalidConfiguration."""
    owner = _plain(owner)
    if not (isinstance(owner, str) and 0 < len(owner) <= _MAX_OWNER and owner.isprintable() and not owner.isspace()):
        raise configuration_error("owner", owner, f"must be 1-{_MAX_OWNER} printable characters")
    return owner


def check_count(setting: str, value: object) -> int:
    """A whole number >= 0 (not a bool), else InvalidConfiguration."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise configuration_error(setting, value, "must be a whole number >= 0")
    return value


def check_lease(lease: object) -> timedelta:
    """A positive timedelta, else InvalidConfiguration."""
    if not isinstance(lease, timedelta) or lease <= timedelta(0):
        raise configuration_error("lease", lease, "must be a positive datetime.timedelta")
    return lease


def check_instances(setting: str, values: object, kind: type, *, error: Callable[[str], Exception]) -> list[object]:
    """A list of ``kind`` instances from a sequence (a str is not one), else ``error(message)``."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise error(f"{setting} must be a sequence of {kind.__name__}, got {type(values).__name__} {shorten(values)}")
    items = list(values)
    for item in items:
        if not isinstance(item, kind):
            raise error(f"{setting} must hold {kind.__name__} objects, got {type(item).__name__} {shorten(item)}")
    return items
