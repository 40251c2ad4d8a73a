"""LoanChangeEvent: validation, the API's JSON, round trips and request ids."""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import given
from strategies import FickleZone, GarbageZone, RaisingZone, change_events

from loanstate import IllegalTransition, InvalidEvent, LoanChangeEvent, default_machine, derive_request_id
from loanstate._events import TOP_TIMEZONE, format_top_time

AT = datetime(2024, 1, 1, tzinfo=UTC)


def _event(**changes: object) -> LoanChangeEvent:
    fields: dict[str, object] = {
        "loan_apply_no": "FI123123121",
        "before_status": "NEW",
        "after_status": "OVERDUE",
        "change_time": AT,
        "request_id": "123123131",
    }
    fields.update(changes)
    return LoanChangeEvent(**fields)  # type: ignore[arg-type]


def test_fields_are_exactly_the_apis() -> None:
    """The event has the seven fields of XfdLoanChangeExternalRequest and nothing else."""
    assert {a.name for a in attrs.fields(LoanChangeEvent)} == {
        "after_status",
        "before_status",
        "change_time",
        "customer_id",
        "institution_loan_no",
        "loan_apply_no",
        "request_id",
    }


def test_event_is_frozen_and_slotted() -> None:
    """An event cannot be changed after it is made and carries no __dict__."""
    event = _event()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.after_status = "SETTLED"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_top_param_matches_the_api_example() -> None:
    """to_top_param() writes the compact JSON of the API's own example."""
    event = _event(change_time=datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=8))), customer_id="123")
    assert event.to_top_param() == (
        '{"after_status":"OVERDUE","before_status":"NEW","change_time":"2024-01-01 00:00:00",'
        '"customer_id":"123","loan_apply_no":"FI123123121","request_id":"123123131"}'
    )


def test_top_param_keeps_non_ascii_raw() -> None:
    """Chinese text goes out as UTF-8 characters, not \\u escapes."""
    param = _event(institution_loan_no="借据-7").to_top_param()
    assert '"institution_loan_no":"借据-7"' in param
    assert json.loads(param)["institution_loan_no"] == "借据-7"


def test_top_time_is_gmt8_without_fraction() -> None:
    """Dates are written in GMT+8, to the second."""
    assert format_top_time(datetime(2023, 12, 31, 16, 0, 0, 999_999, tzinfo=UTC)) == "2024-01-01 00:00:00"


def test_to_dict_round_trips_exactly() -> None:
    """from_dict(to_dict(e)) == e, microseconds and offset included."""
    event = _event(change_time=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=-3, minutes=-30))))
    data = event.to_dict()
    assert data["change_time"] == "2024-05-06T07:08:09.123456-03:30"
    assert LoanChangeEvent.from_dict(data) == event
    assert LoanChangeEvent.from_dict(json.loads(json.dumps(data))) == event


def test_from_dict_names_every_bad_field() -> None:
    """from_dict reports all bad fields in one InvalidEvent."""
    with pytest.raises(InvalidEvent) as info:
        LoanChangeEvent.from_dict(
            {
                "loan_apply_no": " ",
                "before_status": "NEW",
                "after_status": "NEW",
                "change_time": "2024-01-01 00:00:00",
                "customer_id": 5,
                "colour": "red",
            }
        )
    assert set(info.value.errors) == {
        "loan_apply_no",
        "after_status",
        "change_time",
        "request_id",
        "customer_id",
        "colour",
    }
    assert "naive" in info.value.errors["change_time"]


def test_from_dict_with_machine_checks_statuses_and_pair() -> None:
    """With a machine, unknown statuses are InvalidEvent and an illegal pair IllegalTransition."""
    machine = default_machine()
    with pytest.raises(InvalidEvent, match="unknown status 'LOST'"):
        LoanChangeEvent.from_dict(_event(after_status="LOST").to_dict(), machine=machine)
    with pytest.raises(IllegalTransition):
        LoanChangeEvent.from_dict(_event(before_status="INVALID", after_status="NEW").to_dict(), machine=machine)
    assert LoanChangeEvent.from_dict(_event().to_dict(), machine=machine) == _event()


def test_from_dict_rejects_non_mappings() -> None:
    """A list or string is not an event."""
    with pytest.raises(InvalidEvent, match="must be a mapping"):
        LoanChangeEvent.from_dict(["x"])  # type: ignore[arg-type]


def test_naive_time_is_an_error_not_a_guess() -> None:
    """A datetime without tzinfo is refused rather than assumed to be some zone."""
    with pytest.raises(InvalidEvent, match="timezone-aware"):
        _event(change_time=datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "moment",
    [datetime(9999, 12, 31, 23, 0, tzinfo=UTC), datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))],
    ids=["after-max-in-gmt8", "before-min-in-utc"],
)
def test_time_that_cannot_be_written_in_gmt8_is_refused(moment: datetime) -> None:
    """A moment at datetime's edge that GMT+8 cannot hold is an InvalidEvent naming it, never an OverflowError later."""
    with pytest.raises(InvalidEvent, match="out of range") as caught:
        _event(change_time=moment)
    assert moment.isoformat() in str(caught.value)
    with pytest.raises(InvalidEvent, match="out of range"):
        default_machine().change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=moment, sequence=1)
    edge = datetime(9999, 12, 31, 15, 59, 59, tzinfo=UTC)  # the last second GMT+8 can write
    assert json.loads(_event(change_time=edge).to_top_param())["change_time"] == "9999-12-31 23:59:59"


def test_request_id_is_stable_and_url_safe() -> None:
    """The derived id is 48 hex characters and the same for the same change in any zone."""
    utc = derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=1)
    beijing = derive_request_id("FI1", "NEW", "OVERDUE", AT.astimezone(timezone(timedelta(hours=8))), sequence=1)
    assert utc == beijing
    assert len(utc) == 48
    assert _event(request_id=utc).request_id == utc


def test_request_id_depends_on_every_part() -> None:
    """Loan, statuses, instant and sequence each change the id."""
    base = derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=0)
    others = {
        derive_request_id("FI2", "NEW", "OVERDUE", AT, sequence=0),
        derive_request_id("FI1", "OVERDUE", "NEW", AT, sequence=0),
        derive_request_id("FI1", "NEW", "SETTLED", AT, sequence=0),
        derive_request_id("FI1", "NEW", "OVERDUE", AT + timedelta(microseconds=1), sequence=0),
        derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=1),
        derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=2),
    }
    assert base not in others
    assert len(others) == 6


# -- every way of making an event checks it ---------------------------------------------


def test_evolve_checks_the_new_value() -> None:
    """attrs.evolve goes through the same check: no path makes an invalid event."""
    event = _event()
    with pytest.raises(InvalidEvent) as info:
        attrs.evolve(event, loan_apply_no="FI\x00")
    assert set(info.value.errors) == {"loan_apply_no"}
    with pytest.raises(InvalidEvent, match="must differ"):
        attrs.evolve(event, after_status="NEW")
    assert attrs.evolve(event, customer_id="2088").customer_id == "2088"


def test_disabling_attrs_validators_does_not_disable_the_check() -> None:
    """attrs.validators.set_disabled(True) cannot let an invalid event through."""
    attrs.validators.set_disabled(True)
    try:
        with pytest.raises(InvalidEvent):
            _event(request_id="not an id")
    finally:
        attrs.validators.set_disabled(False)


def test_every_bad_field_is_named_at_construction() -> None:
    """The constructor names every bad field at once, not only the first."""
    with pytest.raises(InvalidEvent) as info:
        LoanChangeEvent(" ", "NEW", "NEW", datetime(2024, 1, 1), "has space", customer_id=5)  # type: ignore[arg-type]
    assert set(info.value.errors) == {"loan_apply_no", "after_status", "change_time", "request_id", "customer_id"}


class _Status(enum.StrEnum):
    NEW = "NEW"
    OVERDUE = "OVERDUE"


def test_str_subclasses_are_kept_as_their_plain_value() -> None:
    """A StrEnum member (or any str subclass) is accepted and stored as a plain str."""
    event = _event(before_status=_Status.NEW, after_status=_Status.OVERDUE, customer_id=_Status.NEW)
    assert (event.before_status, event.after_status, event.customer_id) == ("NEW", "OVERDUE", "NEW")
    assert {type(event.before_status), type(event.after_status), type(event.customer_id)} == {str}
    assert event == _event(customer_id="NEW")
    assert '"before_status":"NEW"' in event.to_top_param()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("loan_apply_no", "FI\x00001"),
        ("loan_apply_no", "FI\ud800"),
        ("loan_apply_no", "\udfff"),
        ("customer_id", "\x1b[31m"),
        ("institution_loan_no", "a\u2028b"),
        ("before_status", "NEW\n"),
        ("request_id", "rid\x00"),
    ],
)
def test_nul_surrogates_and_control_characters_are_refused(field: str, value: str) -> None:
    """NUL, lone surrogates, escapes and line separators never get into an event (nor a database after it)."""
    with pytest.raises(InvalidEvent) as info:
        _event(**{field: value})
    assert set(info.value.errors) == {field}


def test_a_megabyte_value_gives_a_short_message() -> None:
    """A 1 MB bad value is named, but the message quotes only a readable piece of it."""
    with pytest.raises(InvalidEvent) as info:
        _event(loan_apply_no="A" * 1_000_000, customer_id=["x"] * 100_000)
    assert len(str(info.value)) < 600
    assert "1000000" in info.value.errors["loan_apply_no"]


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        (RaisingZone(), r"utcoffset\(\) fails"),
        (GarbageZone("eight"), r"utcoffset\(\) fails"),
        (GarbageZone(timedelta(hours=30)), r"utcoffset\(\) fails"),
        (GarbageZone(8), r"utcoffset\(\) fails"),
        (GarbageZone(None), "naive"),
    ],
    ids=["raises", "a-string", "out-of-range", "an-int", "none"],
)
def test_a_hostile_tzinfo_is_an_invalid_event(zone: tzinfo, message: str) -> None:
    """A tzinfo whose utcoffset raises or answers garbage is InvalidEvent naming change_time, on every path."""
    moment = datetime(2024, 1, 1, 9, tzinfo=zone)
    with pytest.raises(InvalidEvent, match=message) as info:
        _event(change_time=moment)
    assert set(info.value.errors) == {"change_time"}
    with pytest.raises(InvalidEvent, match="change_time"):
        default_machine().change(loan_apply_no="FI1", before="NEW", after="OVERDUE", at=moment, sequence=1)
    with pytest.raises(InvalidEvent, match="change_time"):
        derive_request_id("FI1", "NEW", "OVERDUE", moment, sequence=1)


def test_a_fickle_tzinfo_is_asked_once_and_pinned() -> None:
    """A foreign zone is asked for its offset once; the event keeps that moment at a fixed offset."""
    zone = FickleZone()
    event = _event(change_time=datetime(2024, 1, 1, 9, tzinfo=zone))
    assert zone.calls == 1
    assert event.change_time.tzinfo == timezone(timedelta(hours=1))
    assert event.to_top_param() == event.to_top_param()  # the zone is never asked again
    assert event.change_time == datetime(2024, 1, 1, 8, tzinfo=UTC)


def test_standard_zones_are_kept_as_given() -> None:
    """A time in a ZoneInfo or datetime.timezone keeps its zone object."""
    shanghai = ZoneInfo("Asia/Shanghai")
    assert _event(change_time=datetime(2024, 1, 1, tzinfo=shanghai)).change_time.tzinfo is shanghai
    assert _event().change_time.tzinfo is UTC


# -- the API's own format, read back ------------------------------------------------------


def test_from_top_param_reads_the_apis_example() -> None:
    """from_top_param reads the API's example JSON, change_time as GMT+8."""
    event = LoanChangeEvent.from_top_param(
        '{"after_status":"OVERDUE","before_status":"NEW","change_time":"2024-01-01 00:00:00",'
        '"customer_id":"123","loan_apply_no":"FI123123121","request_id":"123123131"}'
    )
    assert event == _event(change_time=datetime(2023, 12, 31, 16, tzinfo=UTC), customer_id="123")
    assert event.change_time.utcoffset() == timedelta(hours=8)


def test_from_top_param_inverts_to_top_param_exactly() -> None:
    """The text written and read back is the same text; non-ASCII stays raw, absent optionals stay absent."""
    event = _event(change_time=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), institution_loan_no="借据-7")
    again = LoanChangeEvent.from_top_param(event.to_top_param())
    assert again == event
    assert again.to_top_param() == event.to_top_param()
    assert again.customer_id is None


_GOOD_PARAM: dict[str, object] = {
    "after_status": "OVERDUE",
    "before_status": "NEW",
    "change_time": "2024-01-01 08:00:00",
    "loan_apply_no": "FI1",
    "request_id": "r1",
}


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ({"change_time": "2024-01-01T08:00:00+08:00"}, {"change_time"}),
        ({"change_time": "2024-01-01 08:00"}, {"change_time"}),
        ({"change_time": "2024-02-30 08:00:00"}, {"change_time"}),
        ({"change_time": "٢٠٢٤-01-01 08:00:00"}, {"change_time"}),
        ({"change_time": "0001-01-01 00:00:00"}, {"change_time"}),
        ({"change_time": 1704067200}, {"change_time"}),
        ({"loan_apply_no": 7, "customer_id": ["x"]}, {"loan_apply_no", "customer_id"}),
        ({"loan_apply_no": None}, {"loan_apply_no"}),
        ({"request_id": "has space", "after_status": "NEW"}, {"request_id", "after_status"}),
        ({"colour": "red"}, {"colour"}),
        ({"loan_apply_no": "FI\u0000"}, {"loan_apply_no"}),
    ],
)
def test_from_top_param_names_every_bad_field(change: dict[str, object], bad: set[str]) -> None:
    """Every bad field of the API's JSON is named in one InvalidEvent."""
    with pytest.raises(InvalidEvent) as info:
        LoanChangeEvent.from_top_param(json.dumps({**_GOOD_PARAM, **change}))
    assert set(info.value.errors) == bad


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '"a string"',
        "null",
        "[" * 100_000 + "]" * 100_000,
        '{"request_id": ' + "9" * 10_000 + "}",
        '{"loan_apply_no": "FI1", "loan_apply_no": "FI2"}',
        b'{"loan_apply_no": "FI1"}',
        None,
        {"loan_apply_no": "FI1"},
    ],
    ids=["empty", "not-json", "array", "string", "null", "deep", "huge-int", "duplicate-key", "bytes", "none", "dict"],
)
def test_from_top_param_refuses_what_is_not_one_json_object(text: object) -> None:
    """Text that is not one JSON object with each key once is InvalidEvent, never a JSON or Recursion error."""
    with pytest.raises(InvalidEvent) as info:
        LoanChangeEvent.from_top_param(text)  # type: ignore[arg-type]
    assert len(str(info.value)) < 300


def test_from_top_param_with_machine_checks_the_pair() -> None:
    """With a machine, an illegal pair read from the API's JSON is an IllegalTransition."""
    text = _event(before_status="INVALID", after_status="NEW").to_top_param()
    with pytest.raises(IllegalTransition):
        LoanChangeEvent.from_top_param(text, machine=default_machine())
    with pytest.raises(InvalidEvent, match="unknown status"):
        LoanChangeEvent.from_top_param(_event(after_status="LOST").to_top_param(), machine=default_machine())


@given(change_events())
def test_from_top_param_is_the_inverse_of_to_top_param(event: LoanChangeEvent) -> None:
    """For any valid event, reading its API JSON gives the same event at the same instant (to the second)."""
    read = LoanChangeEvent.from_top_param(event.to_top_param())
    whole_seconds = event.change_time.astimezone(TOP_TIMEZONE).replace(microsecond=0)
    assert read == attrs.evolve(event, change_time=whole_seconds)
    assert read.to_top_param() == event.to_top_param()


# -- request ids ------------------------------------------------------------------------------


def test_request_id_needs_valid_inputs() -> None:
    """derive_request_id names every bad input in an InvalidEvent (a \\x1f in a field could forge another's id)."""
    with pytest.raises(InvalidEvent) as info:
        derive_request_id("FI\x1f1", "NEW", 5, datetime(2024, 1, 1), sequence=-1)  # type: ignore[arg-type]
    assert set(info.value.errors) == {"loan_apply_no", "after_status", "change_time", "sequence"}
    for sequence in (True, 1.0, "1", None):
        with pytest.raises(InvalidEvent, match="sequence"):
            derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=sequence)  # type: ignore[arg-type]


def test_request_id_takes_plain_values_of_subclasses() -> None:
    """StrEnum statuses and an IntEnum sequence derive the same id as their plain values."""

    class One(enum.IntEnum):
        ONE = 1

    plain = derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=1)
    assert derive_request_id("FI1", _Status.NEW, _Status.OVERDUE, AT, sequence=One.ONE) == plain


def test_a_replayed_change_has_the_same_id_and_a_repeated_pair_does_not() -> None:
    """NEW->OVERDUE, OVERDUE->NEW, NEW->OVERDUE at one instant: three ids; replaying the first: its id."""
    ids = [
        derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=1),
        derive_request_id("FI1", "OVERDUE", "NEW", AT, sequence=2),
        derive_request_id("FI1", "NEW", "OVERDUE", AT, sequence=3),
    ]
    assert len(set(ids)) == 3
    assert derive_request_id("FI1", "NEW", "OVERDUE", AT.astimezone(TOP_TIMEZONE), sequence=1) == ids[0]
