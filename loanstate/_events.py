"""The change event: one legal status change of one loan, shaped like the API.

:class:`LoanChangeEvent` holds exactly the fields of the request object of
``alibaba.finance.xfd.loan.change.notify`` (``XfdLoanChangeExternalRequest``).
Every way of making one checks it (the constructor, :func:`attrs.evolve`,
:meth:`~LoanChangeEvent.from_dict`, :meth:`~LoanChangeEvent.from_top_param`),
so an event that exists is well formed by the rules of :mod:`loanstate._validate`:
every text field is 1-64 printable characters, the two statuses differ,
``change_time`` is timezone-aware and ``request_id`` is 1-64 of ``[A-Za-z0-9_-]``.

Whether the *pair* is legal depends on a lifecycle; build events through
:meth:`loanstate.LoanMachine.change` (or pass ``machine=`` to the ``from_*``
readers) to have that checked too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timezone
from json.encoder import encode_basestring as _json_string
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import attrs

from loanstate import _validate as v
from loanstate._errors import IllegalTransition, InvalidEvent, shorten

__all__ = [
    "FIELDS",
    "MAX_FIELD_LENGTH",
    "TOP_TIMEZONE",
    "LoanChangeEvent",
    "Receipt",
    "derive_request_id",
    "derive_request_id_unchecked",
    "format_top_time",
]

TOP_TIMEZONE: Final = v.TOP_TIMEZONE
MAX_FIELD_LENGTH: Final = v.MAX_TEXT_LENGTH
format_top_time: Final = v.format_top_time
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
_OPTIONAL: Final = frozenset({"customer_id", "institution_loan_no"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Personalised so our ids never coincide with another system's BLAKE2b of the same text.
_NEW_RID_HASH: Final = hashlib.blake2b(digest_size=24, person=b"loanstate.rid1").copy
_RID_MATCH: Final = v.REQUEST_ID.fullmatch

# The rule each field follows. A status on an event follows the text rule: the
# event alone knows no lifecycle (a machine's status names are stricter still).
_CHECKS: Final[dict[str, Callable[[object], object]]] = {
    "loan_apply_no": v.check_text,
    "before_status": v.check_text,
    "after_status": v.check_text,
    "change_time": v.check_time,
    "request_id": v.check_request_id,
    "customer_id": v.check_optional_text,
    "institution_loan_no": v.check_optional_text,
}


class Lifecycle(Protocol):
    """What the ``from_*`` readers ask of a lifecycle (a :class:`~loanstate.LoanMachine` is one)."""

    @property
    def statuses(self) -> frozenset[str]:
        """Every declared status."""
        ...

    def is_legal(self, before: str, after: str) -> bool:
        """Whether ``before -> after`` is declared."""
        ...

    def allowed(self, before: str) -> frozenset[str]:
        """The statuses a loan in ``before`` may change to."""
        ...


@attrs.frozen(slots=True, cache_hash=False)
class LoanChangeEvent:
    """One status change of one loan, as ``alibaba.finance.xfd.loan.change.notify`` takes it.

    Field names are the API's own. ``change_time`` must be timezone-aware; it
    is sent in GMT+8. ``request_id`` is the platform's idempotency key: every
    retry of this change carries it unchanged. A bad field raises
    :class:`~loanstate.InvalidEvent` naming every bad field; a ``str`` subclass
    (a StrEnum member) is kept as its plain string value, and a time in a
    foreign ``tzinfo`` as the same moment at a fixed offset.
    """

    loan_apply_no: str
    before_status: str
    after_status: str
    change_time: datetime
    request_id: str
    customer_id: str | None = None
    institution_loan_no: str | None = None

    def __attrs_post_init__(self) -> None:
        # One check of every field, rather than a validator per field: events
        # are made on the hot path (seven validator calls cost more than the
        # object), and attrs.validators.set_disabled() cannot switch it off.
        # The common case is decided by C-level string methods in one
        # expression; anything else goes to _settle, which explains or normalises.
        loan, before, after = self.loan_apply_no, self.before_status, self.after_status
        moment, rid = self.change_time, self.request_id
        customer, number = self.customer_id, self.institution_loan_no
        if not (
            loan.__class__ is str
            and 0 < len(loan) <= 64
            and loan.isprintable()
            and not loan.isspace()
            and before.__class__ is str
            and 0 < len(before) <= 64
            and before.isprintable()
            and not before.isspace()
            and after.__class__ is str
            and 0 < len(after) <= 64
            and after.isprintable()
            and not after.isspace()
            and after != before
            and moment.__class__ is datetime
            and (moment.tzinfo.__class__ is timezone or moment.tzinfo.__class__ is ZoneInfo)
            and 1 < moment.year < 9999
            and rid.__class__ is str
            and len(rid) <= 64
            and rid.isascii()
            and (rid.isalnum() or _RID_MATCH(rid) is not None)
            and (
                customer is None
                or (
                    customer.__class__ is str
                    and 0 < len(customer) <= 64
                    and customer.isprintable()
                    and not customer.isspace()
                )
            )
            and (
                number is None
                or (number.__class__ is str and 0 < len(number) <= 64 and number.isprintable() and not number.isspace())
            )
        ):
            _settle(self)

    def to_top_param(self) -> str:
        """The compact JSON for the ``param_xfd_loan_change_external_request`` form field.

        snake_case keys in sorted order, absent optionals omitted,
        ``change_time`` as ``yyyy-MM-dd HH:mm:ss`` in GMT+8, non-ASCII kept raw.
        :meth:`from_top_param` reads it back.
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
            f'"change_time":"{v.format_top_time(self.change_time)}"{optional},'
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
    def from_dict(cls, data: Mapping[str, object], *, machine: Lifecycle | None = None) -> LoanChangeEvent:
        """Build an event from a mapping such as :meth:`to_dict` returns.

        ``change_time`` may be an aware :class:`~datetime.datetime` or an ISO
        8601 string with an offset. With ``machine``, the statuses must be
        known to it and the pair legal. Raises :class:`InvalidEvent` naming
        *every* bad field at once (or :class:`IllegalTransition` for a
        well-formed but illegal pair).
        """
        if not isinstance(data, Mapping):
            raise InvalidEvent({"<event>": f"must be a mapping, got {type(data).__name__}"})
        return _build(data, v.parse_iso_time, machine)

    @classmethod
    def from_top_param(cls, text: str, *, machine: Lifecycle | None = None) -> LoanChangeEvent:
        """Read the JSON that :meth:`to_top_param` writes: its exact inverse.

        ``change_time`` is the API's ``yyyy-MM-dd HH:mm:ss``, read as GMT+8;
        every value is a JSON string (an absent optional may also be
        ``null``); each key appears once. The event equals the one written, at
        the same instant (the API's format keeps whole seconds). Raises
        :class:`InvalidEvent` naming every bad field (``<param>`` when the text
        is not a JSON object at all), or :class:`IllegalTransition` for an
        illegal pair when ``machine`` is given.
        """
        data = _read_json_object(text)
        errors = {
            _key_name(key): f"must be a JSON string, got {shorten(value)}"
            for key, value in data.items()
            if value is not None and not isinstance(value, str)
        }
        strings = {key: value for key, value in data.items() if _key_name(key) not in errors}
        return _build(strings, v.parse_top_time, machine, errors)


def _settle(event: LoanChangeEvent) -> None:
    """The slow path of the event's check: normalise its fields in place, or raise naming every bad one."""
    given = {name: getattr(event, name) for name in FIELDS}
    values, errors = _check_fields(given)
    if errors:
        raise InvalidEvent(errors)
    for name, value in values.items():
        if value is not given[name]:
            object.__setattr__(event, name, value)  # still inside construction: the frozen value is being made


def _check_fields(given: Mapping[str, object]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each field's checked value, and what is wrong with each field that is bad."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in given.items():
        try:
            values[name] = _CHECKS[name](value)
        except v.FieldProblem as exc:
            errors[name] = str(exc)
    before, after = values.get("before_status"), values.get("after_status")
    if after is not None and after == before:
        errors["after_status"] = f"must differ from before_status, both are {shorten(after)}"
    return values, errors


def _key_name(key: object) -> str:
    """A key of an input mapping as it may be named in an error (shortened, never raising)."""
    if isinstance(key, str):
        key = v.plain_text(key)
        if len(key) <= 40 and key.isprintable():
            return key
    return shorten(key, 40)


def _build(
    data: Mapping[Any, object],
    read_time: Callable[[object], datetime],
    machine: Lifecycle | None,
    errors: dict[str, str] | None = None,
) -> LoanChangeEvent:
    """The event the mapping describes, or :class:`InvalidEvent` naming every bad field."""
    errors = dict(errors or {})
    for key in data:
        if key not in _CHECKS:
            errors[_key_name(key)] = f"unknown field (expected some of: {', '.join(FIELDS)})"
    given: dict[str, object] = {}
    for name in FIELDS:
        raw = data.get(name)
        if raw is None:
            if name not in _OPTIONAL and name not in errors:
                errors[name] = "is required"
        elif name == "change_time":
            try:
                given[name] = read_time(raw)
            except v.FieldProblem as exc:
                errors[name] = str(exc)
        else:
            given[name] = raw
    values, problems = _check_fields(given)
    errors.update(problems)
    if machine is not None:
        _check_statuses(values, machine, errors)
    if errors:
        raise InvalidEvent(errors)
    event = LoanChangeEvent(**values)
    if machine is not None and not machine.is_legal(event.before_status, event.after_status):
        raise IllegalTransition(
            event.before_status,
            event.after_status,
            machine.allowed(event.before_status),
            loan_apply_no=event.loan_apply_no,
        )
    return event


def _check_statuses(values: Mapping[str, Any], machine: Lifecycle, errors: dict[str, str]) -> None:
    known = machine.statuses
    for name in ("before_status", "after_status"):
        if name not in errors and name in values and values[name] not in known:
            errors[name] = f"unknown status {shorten(values[name])} (known: {', '.join(sorted(known))})"


def _read_json_object(text: object) -> dict[Any, object]:
    """The JSON object ``text`` holds, each key once, or :class:`InvalidEvent` on ``<param>``."""
    if not isinstance(text, str):
        raise InvalidEvent({"<param>": f"must be the JSON text of the request object, got {type(text).__name__}"})
    duplicated: list[str] = []

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        found = dict(pairs)
        if len(found) != len(pairs):
            duplicated.extend(key for key in found if sum(1 for k, _ in pairs if k == key) > 1)
        return found

    try:
        data = json.loads(text, object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer too long to read
        raise InvalidEvent({"<param>": f"is not JSON: {shorten(str(exc), 80)}"}) from None
    if not isinstance(data, dict):
        raise InvalidEvent({"<param>": f"must be a JSON object, got {type(data).__name__}"})
    if duplicated:
        raise InvalidEvent({_key_name(key): "appears more than once" for key in duplicated})
    return data


def derive_request_id_unchecked(
    loan_apply_no: str, before_status: str, after_status: str, change_time: datetime, sequence: int
) -> str:
    """The id :func:`derive_request_id` gives, without checking the values first.

    Only for values that are already known to be right: plain strings, an
    aware datetime in a standard-library zone, an int of 0 or more.
    :meth:`LoanMachine.change <loanstate.LoanMachine.change>` uses it and then
    checks the event it makes, which discards the id of anything malformed.
    """
    # Fields cannot contain control characters, so U+001F separates them
    # unambiguously. The instant is its distance from the epoch as timedelta
    # normalises it (days, seconds, microseconds: one spelling per duration),
    # so the same moment written in two time zones is the same change.
    # "surrogatepass" lets a lone surrogate through here (same bytes for every
    # valid string) so that the event, not the encoder, refuses it.
    since = change_time - _EPOCH
    hasher = _NEW_RID_HASH()
    hasher.update(
        f"{loan_apply_no}\x1f{before_status}\x1f{after_status}\x1f"
        f"{since.days}.{since.seconds}.{since.microseconds}\x1f{sequence}".encode("utf-8", "surrogatepass")
    )
    return hasher.hexdigest()


def derive_request_id(
    loan_apply_no: str,
    before_status: str,
    after_status: str,
    change_time: datetime,
    *,
    sequence: int,
) -> str:
    """Derive the idempotency key of a change from the change itself and its place in the loan's history.

    ``sequence`` is the change's number in its loan's history (the store
    counts 1, 2, 3, ...). The same change (same loan, statuses, instant and
    sequence) always yields the same id, so a replay after a crash is
    recognised by the platform as the same request. Two different changes of a
    loan never share one: they differ in sequence, or (for the same sequence)
    in what changed. The id is the 48 hex digits of a 192-bit BLAKE2b digest
    of an unambiguous encoding of those values.

    The values follow the event's rules (see :class:`LoanChangeEvent`);
    anything else raises :class:`~loanstate.InvalidEvent` naming each bad one.
    """
    if not (
        v.is_text(loan_apply_no)
        and v.is_text(before_status)
        and v.is_text(after_status)
        and change_time.__class__ is datetime
        and change_time.tzinfo.__class__ in (timezone, ZoneInfo)
        and sequence.__class__ is int
        and sequence >= 0
    ):
        loan_apply_no, before_status, after_status, change_time, sequence = _request_id_inputs(
            loan_apply_no, before_status, after_status, change_time, sequence
        )
    return derive_request_id_unchecked(loan_apply_no, before_status, after_status, change_time, sequence)


def _request_id_inputs(*given: object) -> tuple[str, str, str, datetime, int]:
    """The inputs of derive_request_id in their plain form, or InvalidEvent naming each bad one."""
    names = ("loan_apply_no", "before_status", "after_status", "change_time", "sequence")
    checks = (v.check_text, v.check_text, v.check_text, v.check_time, v.check_sequence)
    values: list[Any] = []
    errors: dict[str, str] = {}
    for name, check, value in zip(names, checks, given, strict=True):
        try:
            values.append(check(value))
        except v.FieldProblem as exc:
            errors[name] = str(exc)
    if errors:
        raise InvalidEvent(errors)
    return values[0], values[1], values[2], values[3], values[4]


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
