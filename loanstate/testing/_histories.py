"""Histories: many loans' changes interleaved, optionally with planted anomalies.

A :class:`History` is what an audit reads: a list of records, each a dict
shaped like :meth:`~loanstate.LoanChangeEvent.to_dict` (``change_time`` as ISO
8601 with its offset), in file order. With ``anomalies=True``,
:func:`histories` plants records of each kind the audit detects and says
exactly where (:class:`PlantedAnomaly`).

The contract an auditor can test against: every record that is *not* planted
is a legal change that continues its loan's chain (its ``before_status`` is
the loan's previous ``after_status``, the first starts at the initial status)
at a strictly later instant, with a ``request_id`` no other record carries.
Each planted record is its loan's *last* record (nothing of that loan follows
it, so no finding cascades) and is wrong in exactly one way:

``malformed``
    a required field missing, an unparseable or naive ``change_time``, a field
    over 64 characters or holding a control character, or a ``request_id``
    outside ``[A-Za-z0-9_-]{1,64}``; everything else about it is legal.
``unknown-status``
    ``after_status`` is well-formed text the lifecycle does not declare (it may
    differ from a declared status only by case or spaces).
``illegal-pair``
    both statuses are known, the chain holds, the pair is not legal.
``chain-break``
    a legal pair whose ``before_status`` is not the loan's previous ``after_status``.
``time-backwards``
    a legal continuation of the chain at an instant earlier than the loan's
    previous change.
``duplicate-request-id``
    a legal continuation whose ``request_id`` an earlier record already carries.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Final, Literal

import attrs
from hypothesis import strategies as st

from loanstate._errors import IllegalTransition
from loanstate._events import FIELDS, LoanChangeEvent, derive_request_id
from loanstate._machine import LoanMachine, default_machine
from loanstate.testing._strategies import _GAPS, change_times, loan_numbers, texts, timezones, walk

__all__ = ["ANOMALY_KINDS", "AnomalyKind", "History", "PlantedAnomaly", "histories"]

AnomalyKind = Literal[
    "chain-break",
    "duplicate-request-id",
    "illegal-pair",
    "malformed",
    "time-backwards",
    "unknown-status",
]
#: Every kind of anomaly :func:`histories` plants (what ``loanstate audit`` reports).
ANOMALY_KINDS: Final[tuple[AnomalyKind, ...]] = (
    "chain-break",
    "duplicate-request-id",
    "illegal-pair",
    "malformed",
    "time-backwards",
    "unknown-status",
)
_REQUIRED: Final = ("loan_apply_no", "before_status", "after_status", "change_time", "request_id")
# One record of a loan: the record, the anomaly planted in it (or None), and how.
_Row = tuple[dict[str, str], AnomalyKind | None, str]


@attrs.frozen
class PlantedAnomaly:
    """One record planted wrong: its 0-based ``index`` in :attr:`History.records`, its ``kind``, its loan."""

    index: int
    kind: AnomalyKind
    loan_apply_no: str
    detail: str


@attrs.frozen
class History:
    """Interleaved change records of many loans, and the anomalies planted among them (if any).

    ``records`` are dicts shaped like :meth:`LoanChangeEvent.to_dict` (a
    malformed one may lack a field or hold a bad value); ``anomalies`` lists
    the planted records in index order (empty for a clean history).
    """

    records: tuple[dict[str, str], ...]
    anomalies: tuple[PlantedAnomaly, ...] = ()

    def events(self) -> list[LoanChangeEvent]:
        """The records that were not planted, as events, in record order."""
        planted = {a.index for a in self.anomalies}
        return [LoanChangeEvent.from_dict(r) for i, r in enumerate(self.records) if i not in planted]

    def loans(self) -> list[str]:
        """Every loan number in the history, in order of first appearance."""
        return list(dict.fromkeys(r["loan_apply_no"] for r in self.records if "loan_apply_no" in r))

    def to_jsonl(self) -> str:
        """The records as JSON Lines (one compact object per line, non-ASCII kept raw)."""
        return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in self.records)

    def to_csv(self) -> str:
        """The records as CSV with a header of the event's field names; a missing field is an empty cell."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        return out.getvalue()


def _record(
    loan: str, before: str, after: str, at: datetime, *, sequence: int, base: LoanChangeEvent
) -> dict[str, str]:
    # Planted records derive their id with the sequence that follows the loan's
    # legal records, so it can never equal a legal record's id by accident
    # (that would be a second anomaly).
    request_id = derive_request_id(loan, before, after, at, sequence=sequence)
    event = LoanChangeEvent(
        loan,
        before,
        after,
        at,
        request_id,
        base.customer_id,
        base.institution_loan_no,
    )
    return event.to_dict()


def _continue(machine: LoanMachine, prefix: list[LoanChangeEvent], at: datetime) -> LoanChangeEvent | None:
    """A legal (guards included) next change of the loan at ``at``, or ``None``."""
    last = prefix[-1]
    for after in sorted(machine.allowed(last.after_status)):
        try:
            return machine.change(
                loan_apply_no=last.loan_apply_no,
                before=last.after_status,
                after=after,
                at=at,
                customer_id=last.customer_id,
                institution_loan_no=last.institution_loan_no,
                request_id=derive_request_id(
                    last.loan_apply_no, last.after_status, after, at, sequence=len(prefix) + 1
                ),
            )
        except IllegalTransition:
            continue
    return None


def _break(draw: st.DrawFn, record: dict[str, str]) -> tuple[dict[str, str], str]:
    """Make a well-formed record malformed in one drawn way; say how."""
    way = draw(st.sampled_from(("missing", "bad-time", "naive-time", "too-long", "control", "bad-request-id")))
    broken = dict(record)
    if way == "missing":
        field = draw(st.sampled_from(_REQUIRED))
        del broken[field]
        return broken, f"{field} is missing"
    if way == "bad-time":
        broken["change_time"] = draw(st.sampled_from(("yesterday", "2026-13-01T00:00:00+08:00", "2026-02-30 10:00")))
        return broken, f"change_time {broken['change_time']!r} is not a date-time"
    if way == "naive-time":
        broken["change_time"] = datetime.fromisoformat(record["change_time"]).replace(tzinfo=None).isoformat()
        return broken, f"change_time {broken['change_time']!r} has no offset"
    if way == "too-long":
        field = draw(st.sampled_from(("customer_id", "institution_loan_no", "loan_apply_no")))
        broken[field] = draw(st.sampled_from(("x", "贷"))) * 65
        return broken, f"{field} is 65 characters long"
    if way == "control":
        field = draw(st.sampled_from(("customer_id", "institution_loan_no")))
        broken[field] = "CUST\t001"
        return broken, f"{field} holds a tab"
    broken["request_id"] = draw(st.sampled_from(("has space", "ünïcode", "r" * 65, "a/b")))
    return broken, f"request_id {broken['request_id']!r} is not 1-64 characters of [A-Za-z0-9_-]"


def _has_illegal_exit(machine: LoanMachine, status: str) -> bool:
    return any(s != status and not machine.is_legal(status, s) for s in machine.statuses)


def _steer(draw: st.DrawFn, machine: LoanMachine, prefix: list[LoanChangeEvent]) -> None:
    """Extend ``prefix`` along legal changes to the nearest status that has an illegal exit, if any."""
    start = prefix[-1].after_status
    came_from: dict[str, str] = {start: start}
    frontier = [start]
    while frontier and not _has_illegal_exit(machine, frontier[0]):
        status = frontier.pop(0)
        for after in sorted(machine.allowed(status)):
            if after not in came_from:
                came_from[after] = status
                frontier.append(after)
    if not frontier:
        return
    path = [frontier[0]]
    while path[-1] != start:
        path.append(came_from[path[-1]])
    for after in reversed(path[:-1]):
        last = prefix[-1]
        at = (last.change_time + draw(_GAPS)).astimezone(draw(timezones()))
        try:
            prefix.append(
                machine.change(
                    loan_apply_no=last.loan_apply_no,
                    before=last.after_status,
                    after=after,
                    at=at,
                    customer_id=last.customer_id,
                    institution_loan_no=last.institution_loan_no,
                    sequence=len(prefix) + 1,
                )
            )
        except IllegalTransition:  # a guard refused: plant from where the loan is
            return


def _plant(
    draw: st.DrawFn, machine: LoanMachine, kind: AnomalyKind, prefix: list[LoanChangeEvent]
) -> tuple[dict[str, str], str] | None:
    """The planted record that follows ``prefix`` (one loan), and a description; ``None`` if impossible.

    For an illegal pair, ``prefix`` may first be extended with legal changes
    to a status from which some change is illegal.
    """
    if kind == "illegal-pair":
        _steer(draw, machine, prefix)
    last = prefix[-1]
    loan, status = last.loan_apply_no, last.after_status
    later = (last.change_time + draw(_GAPS)).astimezone(draw(timezones()))
    seq = len(prefix) + 1  # the planted record's place in its loan's history
    if kind == "unknown-status":
        ghost = draw(texts().filter(lambda s: s not in machine.statuses and s != status))
        return _record(loan, status, ghost, later, sequence=seq, base=last), f"after_status {ghost!r} is not declared"
    if kind == "illegal-pair":
        options = sorted(s for s in machine.statuses if s != status and not machine.is_legal(status, s))
        if not options:
            return None
        after = draw(st.sampled_from(options))
        return _record(loan, status, after, later, sequence=seq, base=last), f"{status!r} -> {after!r} is not legal"
    if kind == "chain-break":
        pairs = sorted((b, a) for b in machine.statuses if b != status for a in machine.allowed(b))
        if not pairs:
            return None
        before, after = draw(st.sampled_from(pairs))
        return (
            _record(loan, before, after, later, sequence=seq, base=last),
            f"before_status {before!r} but the loan's previous after_status is {status!r}",
        )
    if kind == "time-backwards":
        earlier = (last.change_time - draw(_GAPS)).astimezone(draw(timezones()))
        event = _continue(machine, prefix, earlier)
        if event is None:
            return None
        return event.to_dict(), f"change_time {event.change_time.isoformat()} is before {last.change_time.isoformat()}"
    event = _continue(machine, prefix, later)
    if event is None:
        return None
    if kind == "duplicate-request-id":
        return event.to_dict(), "request_id copied from an earlier record"  # the copy is made once interleaved
    return _break(draw, event.to_dict())


@st.composite
def histories(
    draw: st.DrawFn,
    machine: LoanMachine | None = None,
    *,
    loans: tuple[int, int] = (1, 6),
    max_changes: int = 8,
    anomalies: bool = False,
    kinds: tuple[AnomalyKind, ...] = ANOMALY_KINDS,
    max_anomalies: int = 6,
) -> History:
    """Interleaved legal lifecycles of ``loans[0]``-``loans[1]`` loans (1-``max_changes`` changes each).

    With ``anomalies``, 1-``max_anomalies`` records of the given ``kinds`` are
    planted, each on a loan of its own, and listed in :attr:`History.anomalies`.
    A kind the lifecycle makes impossible (an illegal pair in a lifecycle
    where everything is legal) is simply not planted. See the module
    documentation for the exact contract.
    """
    m = default_machine() if machine is None else machine
    planned: list[AnomalyKind] = (
        draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=max_anomalies)) if anomalies else []
    )
    count = draw(st.integers(*loans))
    numbers = draw(st.lists(loan_numbers(), min_size=count + len(planned), max_size=count + len(planned), unique=True))
    per_loan: list[list[_Row]] = []
    # Built once: a strategy built per loan (a new lambda each time) misses Hypothesis's cache.
    starts, identities = change_times(), st.none() | texts()
    for index, number in enumerate(numbers):
        kind = planned[index - count] if index >= count else None
        prefix = walk(
            draw,
            m,
            loan_apply_no=number,
            steps=draw(st.integers(1, max(1, max_changes))),
            start=draw(starts),
            customer_id=draw(identities),
            institution_loan_no=draw(identities),
            avoid_dead_end=kind is not None,
        )
        planted = _plant(draw, m, kind, prefix) if kind is not None and prefix else None
        rows: list[_Row] = [(e.to_dict(), None, "") for e in prefix]
        if planted is not None and kind is not None:
            rows.append((planted[0], kind, planted[1]))
        if rows:
            per_loan.append(rows)

    return _interleave(draw, per_loan)


def _interleave(draw: st.DrawFn, per_loan: list[list[_Row]]) -> History:
    """Each loan's rows in order, the loans interleaved; a duplicate request id is copied here, once it has a source.

    The interleaving is a drawn permutation of "which loan's next record comes
    now", which shrinks towards one loan after another.
    """
    order = draw(st.permutations([i for i, rows in enumerate(per_loan) for _ in rows]))
    cursor = [0] * len(per_loan)
    records: list[dict[str, str]] = []
    found: list[PlantedAnomaly] = []
    for loan_index in order:
        record, kind, detail = per_loan[loan_index][cursor[loan_index]]
        cursor[loan_index] += 1
        record = dict(record)
        if kind == "duplicate-request-id":
            # Copy the id of an earlier legal record (the loan's own prefix is always earlier).
            earlier = [i for i in range(len(records)) if i not in {a.index for a in found}]
            source = draw(st.sampled_from(earlier))
            record["request_id"] = records[source]["request_id"]
            detail = f"request_id {record['request_id']!r} already used by record {source}"
        if kind is not None:
            found.append(PlantedAnomaly(len(records), kind, per_loan[loan_index][0][0]["loan_apply_no"], detail))
        records.append(record)
    return History(tuple(records), tuple(found))
