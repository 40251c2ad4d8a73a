"""Argument checks for the store's public methods, run before any value reaches a database.

A value of the wrong type must never reach SQL: MySQL/MariaDB compare a
number with a string column numerically (``skip(13)`` would match a request id
starting ``13a3...``; ``status(0)`` a loan that does not exist), and NUL
characters or lone surrogates make the drivers raise their own errors. Text
and request ids follow the one set of field rules (loanstate._validate); ``str`` subclasses such as
``StrEnum`` members are taken as their plain string value. Messages show a
value shortened to a readable length.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from loanstate import _validate as v
from loanstate._errors import InvalidConfiguration, InvalidEvent
from loanstate._errors import shorten as _shorten

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
    return _shorten(value, _SHOWN)


class _Shown:
    """Stands for a bad setting in :class:`InvalidConfiguration`, so its message shows a shortened repr."""

    def __init__(self, value: object) -> None:
        self.text = shorten(value)

    def __repr__(self) -> str:
        return self.text


def configuration_error(setting: str, value: object, problem: str) -> InvalidConfiguration:
    """An InvalidConfiguration for ``setting`` whose message shows ``value`` shortened."""
    return InvalidConfiguration(setting, _Shown(value), problem)


def check_text(field: str, value: object) -> str:
    """``value`` as a plain str if it is event text (1-64 printable characters), else InvalidEvent naming ``field``."""
    try:
        return v.check_text(value)
    except v.FieldProblem as exc:
        raise InvalidEvent({field: str(exc)}) from None


def check_request_id(value: object) -> str:
    """``value`` as a plain str if it is a well-formed request id (1-64 of ``[A-Za-z0-9_-]``), else InvalidEvent."""
    try:
        return v.check_request_id(value)
    except v.FieldProblem as exc:
        raise InvalidEvent({"request_id": str(exc)}) from None


def check_search(field: str, value: object) -> str:
    """Text to search for: 1-1000 printable characters, not all blank, else InvalidEvent."""
    if not isinstance(value, str):
        raise InvalidEvent({field: f"must be a string, got {type(value).__name__} {shorten(value)}"})
    value = v.plain_text(value)
    if value.isspace() or not 0 < len(value) <= _MAX_SEARCH or not value.isprintable():
        raise InvalidEvent(
            {field: f"must be 1-{_MAX_SEARCH} printable characters, not all blank, got {shorten(value)}"}
        )
    return value


def check_at(at: object, field: str = "change_time") -> datetime:
    """An aware datetime UTC can write (a foreign tzinfo pinned to its offset), else InvalidEvent naming ``field``."""
    try:
        return v.check_time(at)
    except v.FieldProblem as exc:
        raise InvalidEvent({field: str(exc)}) from None


def check_owner(owner: object) -> str:
    """A worker name for leases: 1-128 printable characters, else InvalidConfiguration."""
    owner = v.plain_text(owner) if isinstance(owner, str) else owner
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
