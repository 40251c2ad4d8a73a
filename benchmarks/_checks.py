"""The correctness checks every benchmark run makes, and the record of which passed.

A figure for a delivery that lost, doubled or reordered events would be a
figure for the wrong job, so each delivery run ends with :func:`check_deliveries`
over the gateway's own records (not the outbox's account of itself). A failed
check raises :class:`CheckFailed` (never a bare ``assert``, which ``python -O``
would drop) and the run stops; each passed check is listed in the run's output.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import attrs

__all__ = [
    "PASSED",
    "CheckFailed",
    "GatewayRecords",
    "check",
    "check_counts",
    "check_deliveries",
    "check_replies",
    "expected_order",
    "passed",
]

#: What the checks verified in this process, in order (printed at the end of a run).
PASSED: list[str] = []


class CheckFailed(Exception):
    """A benchmark's correctness check failed: its figures would mean nothing."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def passed(what: str) -> None:
    """Record a check that passed, for the run's summary."""
    PASSED.append(what)


@attrs.frozen
class GatewayRecords:
    """What a FakeTopGateway recorded: its own account of what took effect.

    ``effects``: request_id -> how many requests with it took effect.
    ``applied``: ``(loan_apply_no, request_id)`` of every applied change, in
    the order the gateway applied them. ``violations``: the gateway's own
    out-of-order lines; ``conflicts``: request_ids reused for another change.
    """

    effects: Mapping[str, int]
    applied: Sequence[tuple[str, str]]
    violations: Sequence[str]
    conflicts: Sequence[str]


def check_deliveries(records: GatewayRecords, expected: Mapping[str, Sequence[str]], what: str) -> None:
    """Every expected event took effect exactly once, each loan's in the expected order, and nothing else.

    ``expected`` maps every loan of the run to its request_ids in the order the
    store recorded them. Every loan is checked, not a sample: the gateway's
    applied sequence of each loan must equal the expected one (order, no gap,
    no extra), each request_id must have taken effect exactly once, and the
    gateway must report no order violation and no reused request_id.
    """
    per_loan: dict[str, list[str]] = defaultdict(list)
    for loan, request_id in records.applied:
        if loan in expected:
            per_loan[loan].append(request_id)
    wanted = sum(len(ids) for ids in expected.values())
    check(bool(expected) and wanted > 0, f"{what}: nothing was expected, so nothing would be checked")
    for loan, ids in expected.items():
        got = per_loan.get(loan, [])
        check(got == list(ids), f"{what}: loan {loan} took effect as {got[:5]}..., expected {list(ids)[:5]}...")
        for request_id in ids:
            count = records.effects.get(request_id, 0)
            check(count == 1, f"{what}: request_id {request_id} took effect {count} times, not once")
    doubled = [rid for rid, count in records.effects.items() if count != 1]
    check(not doubled, f"{what}: request_ids that took effect more than once: {doubled[:5]}")
    check(not records.violations, f"{what}: the gateway saw events out of order: {list(records.violations)[:3]}")
    check(not records.conflicts, f"{what}: request_ids reused for another change: {list(records.conflicts)[:3]}")
    passed(f"{what}: {wanted:,} events of {len(expected):,} loans each took effect once, every loan in order")


def expected_order(events: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``loan -> request_ids`` from ``(loan, request_id)`` pairs listed in each loan's order."""
    order: dict[str, list[str]] = defaultdict(list)
    for loan, request_id in events:
        order[loan].append(request_id)
    return dict(order)


def check_counts(name: str, counted: Counter[str] | Mapping[str, int], wanted: Mapping[str, int]) -> None:
    """Each named count equals the wanted one (equality, never ``>=``)."""
    for key, value in wanted.items():
        got = counted.get(key, 0)
        check(got == value, f"{name}: {key} is {got}, expected exactly {value}")
    passed(f"{name}: " + ", ".join(f"{key} = {value:,}" for key, value in wanted.items()))


def check_replies(replies: Sequence[tuple[int, bytes, str | None]], expected: int, what: str) -> None:
    """A bare client's replies, read after its timing: ``expected`` of them, each a fresh success.

    Each reply is ``(http_status, body, content_type)``, classified by the same
    rules the notifiers use; "already done" (a replay) is not a fresh success.
    """
    from loanstate.top import classify

    check(len(replies) == expected, f"{what}: {len(replies)} replies for {expected} requests")
    for status, body, content_type in replies:
        outcome = classify(status, body, content_type=content_type)
        check(outcome.ok and not outcome.already_done, f"{what}: a reply was not a fresh success: {outcome}")
    passed(f"{what}: all {expected:,} replies were fresh successes")
