"""The change event: one legal status change of one loan, shaped like the API.

:class:`LoanChangeEvent` holds exactly the fields of the request object of
``alibaba.finance.xfd.loan.change.notify`` (``XfdLoanChangeExternalRequest``).
Validators run on construction, so an event that exists is well formed: every
text field is non-blank, at most 64 characters and printable (no control or
format characters),
the two statuses differ, and ``change_time`` is timezone-aware.

Whether the *pair* is legal depends on a lifecycle; build events through
:meth:`loanstate.LoanMachine.change` (or pass ``machine=`` to
:meth:`LoanChangeEvent.from_dict`) to have that checked too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from json.encoder import encode_basestring as _json_string
from typing import TYPE_CHECKING, Any, Final

import attrs

from loanstate._errors import IllegalTransition, InvalidEvent

if TYPE_CHECKING:
    from loanstate._machine import LoanMachine

__all__ = [
    "FIELDS",
    "MAX_FIELD_LENGTH",
    "TOP_TIMEZONE",
    "LoanChangeEvent",
    "Receipt",
    "derive_request_id",
    "format_top_time",
]

#: The open platform writes dates in GMT+8 (Beijing time, no daylight saving).
TOP_TIMEZONE: Final = timezone(timedelta(hours=8), "UTC+08:00")
#: Longest text the library accepts in any field of the event.
MAX_FIELD_LENGTH: Final = 64
#: The event's fields, in the API's (alphabetical) order.
FIELDS: Final = (
    "after_status",
    "before_status",
    "change_time",
    "customer_id",
    "institution_loan_no",
    "loan_apply_no",
    "request_id",
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Personalised so our ids never coincide with another system's BLAKE2b of the same text.
_RID_HASH: Final = hashlib.blake2b(digest_size=24, person=b"loanstate.rid1")
_REQUIRED: Final = frozenset(FIELDS) - {"customer_id", "institution_loan_no"}

_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _text_problem(value: object) -> str:
    """Say what is wrong with a text field's value (called only when something is)."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__} {value!r}"
    if not value.strip():
        return f"must not be blank, got {value!r}"
    if len(value) > MAX_FIELD_LENGTH:
        return f"must be at most {MAX_FIELD_LENGTH} characters, got {len(value)}: {value[:20]!r}..."
    return f"must not contain control or other non-printable characters, got {value!r}"


def _is_text(value: object) -> bool:
    """1-64 printable characters (no control or format characters), not all white space."""
    return value.__class__ is str and 0 < len(value) <= MAX_FIELD_LENGTH and value.isprintable() and not value.isspace()


# Validators run on every event made, so each decides the common case in one
# expression of C-level string methods and explains only on failure.


def _check_text(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not (
        value.__class__ is str and 0 < len(value) <= MAX_FIELD_LENGTH and value.isprintable() and not value.isspace()
    ):
        raise InvalidEvent({attribute.name: _text_problem(value)})


def _check_optional_text(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (
        value.__class__ is str and 0 < len(value) <= MAX_FIELD_LENGTH and value.isprintable() and not value.isspace()
    ):
        raise InvalidEvent({attribute.name: _text_problem(value)})


def _check_request_id(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value.__class__ is str and len(value) <= MAX_FIELD_LENGTH and value.isascii() and value.isalnum():
        return  # letters and digits only, as every derived (hex) id is: no pattern to run
    if value.__class__ is not str or _REQUEST_ID.fullmatch(value) is None:
        raise InvalidEvent({"request_id": f"must be 1-64 characters of [A-Za-z0-9_-], got {value!r}"})


# Status names every built LoanMachine declared. They passed the definition's
# name rule, which is stricter than the text rule, so membership settles the
# common case with one set lookup. Only ever grows by the statuses of machines
# a program builds: a handful of short strings.
_DECLARED_STATUSES: Final[set[str]] = set()


def _check_status(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not (
        value.__class__ is str
        and (
            value in _DECLARED_STATUSES
            or (0 < len(value) <= MAX_FIELD_LENGTH and value.isprintable() and not value.isspace())
        )
    ):
        raise InvalidEvent({attribute.name: _text_problem(value)})


def _check_after(inst: LoanChangeEvent, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_status(inst, attribute, value)
    if value == inst.before_status:
        raise InvalidEvent({"after_status": f"must differ from before_status, both are {value!r}"})


def _check_time(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, datetime):
        raise InvalidEvent({"change_time": f"must be a datetime, got {type(value).__name__} {value!r}"})
    if value.utcoffset() is None:
        raise InvalidEvent(
            {"change_time": f"must be timezone-aware, got naive {value.isoformat()!r} (attach a tzinfo)"},
        )
    # Only at the edges of datetime's range can a moment fail to be written in
    # GMT+8 (to_top_param) or UTC; the year test keeps the common case cheap.
    if value.year in (1, 9999):
        try:
            value.astimezone(TOP_TIMEZONE)
            value.astimezone(UTC)
        except OverflowError:
            raise InvalidEvent(
                {"change_time": f"must be writable in UTC and GMT+8, got {value.isoformat()!r} (out of range)"}
            ) from None


def format_top_time(moment: datetime) -> str:
    """Write an aware datetime the way the open platform reads dates.

    ``YYYY-MM-DD HH:MM:SS`` in GMT+8; sub-second digits are dropped.
    """
    return moment.astimezone(TOP_TIMEZONE).isoformat(" ", "seconds")[:19]


def derive_request_id(
    loan_apply_no: str,
    before_status: str,
    after_status: str,
    change_time: datetime,
    *,
    sequence: int | None = None,
) -> str:
    """Derive the idempotency key of a change from the change itself.

    The same change (same loan, statuses, instant and, when given, its
    ``sequence`` in the loan's history) always yields the same id, so a replay
    after a crash is recognised by the platform as the same request. Different
    changes get different ids: the id is the 48 hex digits of a 192-bit BLAKE2b
    digest of an unambiguous encoding of those values.
    ``change_time`` must be timezone-aware.
    """
    # Fields cannot contain control characters, so U+001F separates them
    # unambiguously. The instant is its distance from the epoch as timedelta
    # normalises it (days, seconds, microseconds: one spelling per duration),
    # so the same moment written in two time zones is the same change.
    since = change_time - _EPOCH
    seq = "" if sequence is None else sequence
    hasher = _RID_HASH.copy()
    hasher.update(
        f"{loan_apply_no}\x1f{before_status}\x1f{after_status}\x1f"
        f"{since.days}.{since.seconds}.{since.microseconds}\x1f{seq}".encode()
    )
    return hasher.hexdigest()


@attrs.frozen(slots=True, cache_hash=False)
class LoanChangeEvent:
    """One status change of one loan, as ``alibaba.finance.xfd.loan.change.notify`` takes it.

    Field names are the API's own. ``change_time`` must be timezone-aware; it
    is sent in GMT+8. ``request_id`` is the platform's idempotency key: every
    retry of this change carries it unchanged.
    """

    loan_apply_no: str = attrs.field(validator=_check_text)
    before_status: str = attrs.field(validator=_check_status)
    after_status: str = attrs.field(validator=_check_after)
    change_time: datetime = attrs.field(validator=_check_time)
    request_id: str = attrs.field(validator=_check_request_id)
    customer_id: str | None = attrs.field(default=None, validator=_check_optional_text)
    institution_loan_no: str | None = attrs.field(default=None, validator=_check_optional_text)

    def to_top_param(self) -> str:
        """The compact JSON for the ``param_xfd_loan_change_external_request`` form field.

        snake_case keys in sorted order, absent optionals omitted,
        ``change_time`` as ``YYYY-MM-DD HH:MM:SS`` in GMT+8, non-ASCII kept raw.
        """
        # Every value is a string, so the object is written directly with the
        # stdlib's own JSON string encoder: the same text as json.dumps(payload,
        # ensure_ascii=False, separators=(",", ":")), at a fraction of the cost
        # of building an encoder per call (this runs for every delivery).
        optional = ""
        if self.customer_id is not None:
            optional = ',"customer_id":' + _json_string(self.customer_id)
        if self.institution_loan_no is not None:
            optional += ',"institution_loan_no":' + _json_string(self.institution_loan_no)
        return (
            f'{{"after_status":{_json_string(self.after_status)},'
            f'"before_status":{_json_string(self.before_status)},'
            f'"change_time":"{format_top_time(self.change_time)}"{optional},'
            f'"loan_apply_no":{_json_string(self.loan_apply_no)},'
            f'"request_id":"{self.request_id}"}}'
        )

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict that :meth:`from_dict` turns back into an equal event.

        ``change_time`` is ISO 8601 with its offset and microseconds, so nothing
        is lost; absent optionals are omitted.
        """
        out = {
            "loan_apply_no": self.loan_apply_no,
            "before_status": self.before_status,
            "after_status": self.after_status,
            "change_time": self.change_time.isoformat(),
            "request_id": self.request_id,
        }
        if self.customer_id is not None:
            out["customer_id"] = self.customer_id
        if self.institution_loan_no is not None:
            out["institution_loan_no"] = self.institution_loan_no
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, machine: LoanMachine | None = None) -> LoanChangeEvent:
        """Build an event from a mapping such as :meth:`to_dict` returns.

        ``change_time`` may be an aware :class:`~datetime.datetime` or an ISO
        8601 string with an offset. With ``machine``, the statuses must be
        known to it and the pair legal. Raises :class:`InvalidEvent` naming
        *every* bad field at once (or :class:`IllegalTransition` for a
        well-formed but illegal pair).
        """
        if not isinstance(data, Mapping):
            raise InvalidEvent({"<event>": f"must be a mapping, got {type(data).__name__}"})
        errors: dict[str, str] = {}
        for key in data:
            if key not in _REQUIRED and key not in ("customer_id", "institution_loan_no"):
                errors[str(key)] = f"unknown field (expected some of: {', '.join(FIELDS)})"
        values: dict[str, Any] = {}
        for name in FIELDS:
            raw = data.get(name)
            if raw is None:
                if name in _REQUIRED:
                    errors[name] = "is required"
                continue
            if name == "change_time":
                parsed = _parse_time(raw)
                if isinstance(parsed, str):
                    errors[name] = parsed
                    continue
                values[name] = parsed
            else:
                values[name] = raw
        # Collect every field's problem, not just the first validator's.
        for name, value in values.items():
            try:
                _FIELD_CHECKS[name](None, _ATTRS[name], value)
            except InvalidEvent as exc:
                errors.update(exc.errors)
        if "after_status" not in errors and values.get("after_status") == values.get("before_status"):
            errors["after_status"] = f"must differ from before_status, both are {values.get('after_status')!r}"
        if machine is not None:
            for name in ("before_status", "after_status"):
                if name not in errors and name in values and values[name] not in machine.statuses:
                    errors[name] = f"unknown status {values[name]!r} (known: {', '.join(sorted(machine.statuses))})"
        if errors:
            raise InvalidEvent(errors)
        event = cls(**values)
        if machine is not None and not machine.is_legal(event.before_status, event.after_status):
            raise IllegalTransition(
                event.before_status,
                event.after_status,
                machine.allowed(event.before_status),
                loan_apply_no=event.loan_apply_no,
            )
        return event


def _parse_time(raw: object) -> datetime | str:
    """Parse ``change_time`` input; return the datetime or what is wrong with it."""
    if isinstance(raw, datetime):
        moment = raw
    elif isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return f"must be an ISO 8601 date-time with an offset, got {raw!r}"
    else:
        return f"must be a datetime or an ISO 8601 string, got {type(raw).__name__} {raw!r}"
    if moment.utcoffset() is None:
        return f"must be timezone-aware, got naive {raw!s} (add an offset such as +08:00)"
    return moment


_ATTRS: Final = {a.name: a for a in attrs.fields(LoanChangeEvent)}
_FIELD_CHECKS: Final = {
    "loan_apply_no": _check_text,
    "before_status": _check_status,
    "after_status": _check_status,
    "change_time": _check_time,
    "request_id": _check_request_id,
    "customer_id": _check_optional_text,
    "institution_loan_no": _check_optional_text,
}


@attrs.frozen
class Receipt:
    """What the platform said when it accepted a change notification.

    ``request_id`` is the event's idempotency key; ``trace_id``,
    ``response_code`` and ``response_message`` are the gateway's words (any
    may be ``None`` when the platform did not send them); ``delivered_at`` is
    when the acceptance was observed (aware datetime, from the notifier's clock).
    """

    request_id: str
    trace_id: str | None
    response_code: str | None
    response_message: str | None
    delivered_at: datetime
