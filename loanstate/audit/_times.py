"""How the audit reads ``change_time``: ISO 8601 with an offset, the API's own form, or an assumed offset.

Three forms are read without being told anything:

- ISO 8601 with a UTC offset or ``Z`` (``2024-01-01T08:00:00+08:00``);
- the API's own ``yyyy-MM-dd HH:mm:ss`` (``2024-01-01 08:00:00``), which the
  protocol defines as GMT+8, so it is read as GMT+8 (as ``to_top_param()`` writes it).

Any other date-time without an offset (``2024-01-01T08:00:00``,
``2024-01-01 08:00:00.5``) is refused unless the caller names the offset it
was written in (``assume_offset``, ``--assume-offset +08:00``): guessing a
zone would silently move every change by hours.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from loanstate._events import TOP_TIMEZONE

__all__ = ["API_FORM", "OUT_OF_RANGE", "parse_offset", "read_time"]

#: ``raw[4:17:3]`` of the API's ``yyyy-MM-dd HH:mm:ss`` (its separators), for a 19-character string.
API_FORM: Final = "-- ::"
#: The API's zone, as the offset to subtract to reach UTC.
API_OFFSET: Final = timedelta(hours=8)
# Stands for a change_time that parses but leaves the datetime range once in UTC.
OUT_OF_RANGE: Final = object()
_OFFSET: Final = re.compile(r"([+-])(\d\d):(\d\d)", re.ASCII)
# The offset-less date-times an assumed offset applies to: a date, a time, nothing else.
_NAIVE: Final = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?", re.ASCII)


def parse_offset(text: str) -> timedelta:
    """The UTC offset ``+HH:MM`` / ``-HH:MM`` names, in ASCII digits, under 24 hours; ValueError otherwise."""
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise ValueError(f"not a UTC offset like +08:00: {text[:20]!r}")
    offset = timedelta(hours=int(match[2]), minutes=int(match[3]))
    if offset >= timedelta(hours=24) or int(match[3]) >= 60:
        raise ValueError(f"not a UTC offset like +08:00: {text[:20]!r}")
    return -offset if match[1] == "-" else offset


def read_time(raw: object, assume: timezone | None) -> datetime | object | str:
    """An aware change_time, :data:`OUT_OF_RANGE`, or what is wrong with it (a str); ``None`` is not handled here.

    Accepts an aware :class:`~datetime.datetime` as it is (records built in memory).
    """
    moment: datetime | str
    if isinstance(raw, datetime):
        moment = raw
    elif isinstance(raw, str):
        moment = _parse(raw, assume)
        if isinstance(moment, str):
            return moment
    else:
        return f"must be an ISO 8601 date-time with a UTC offset, got {type(raw).__name__}"
    if moment.utcoffset() is None:
        return f"has no UTC offset: {raw!s:.40} (write it like 2024-01-01T08:00:00+08:00)"
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return OUT_OF_RANGE
    return moment


def _parse(raw: str, assume: timezone | None) -> datetime | str:
    shown = repr(raw) if len(raw) <= 40 else repr(raw[:37]) + "..."
    expected = "an ISO 8601 date-time with a UTC offset or the API's yyyy-MM-dd HH:mm:ss"
    # fromisoformat reads "2024-01-04+08:00" as 08:00 on a date with no time: insist on a time part.
    if not raw.isascii() or len(raw) < 16 or raw[10] not in "T ":
        return f"must be {expected}, got {shown}"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return f"must be {expected}, got {shown}"
    if moment.tzinfo is not None:
        return moment
    if len(raw) == 19 and raw[4:17:3] == API_FORM:
        return moment.replace(tzinfo=TOP_TIMEZONE)
    if assume is not None and _NAIVE.fullmatch(raw):
        return moment.replace(tzinfo=assume)
    return f"has no UTC offset: {shown} (write it like 2024-01-01T08:00:00+08:00, or give --assume-offset)"
