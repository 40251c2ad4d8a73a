"""LoanChangeEvent: validation, the API's JSON, round trips and request ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

from loanstate import IllegalTransition, InvalidEvent, LoanChangeEvent, default_machine, derive_request_id
from loanstate._events import format_top_time

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
