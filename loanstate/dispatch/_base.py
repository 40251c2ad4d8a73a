"""What both dispatchers are: their settings (checked at construction), outcome rules, hooks and pause state."""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final, Generic, TypeVar

import attrs

from loanstate._errors import (
    DeliveryError,
    InvalidConfiguration,
    PermanentDeliveryError,
    SystemicDeliveryError,
    TransientDeliveryError,
)
from loanstate._events import Receipt
from loanstate.dispatch._policy import RetryPolicy
from loanstate.dispatch._recorder import PauseRecorder
from loanstate.dispatch._report import (
    Attempt,
    DispatchReport,
    OnAttempt,
    OnDelivered,
    OnFailed,
    OnPaused,
    OnResumed,
    Pause,
)
from loanstate.store import Claim, Outcome, SqlStore

__all__ = ["Base", "Result", "describe"]

log: Final = logging.getLogger("loanstate.dispatch")

N = TypeVar("N")

#: A lease no shorter than this when the notifier names no deadline (the 0.1 default).
DEFAULT_LEASE: Final = timedelta(seconds=120)
#: Longer leases would hold a crashed worker's events back for more than a day.
LONGEST_LEASE: Final = timedelta(days=1)


def describe(exc: BaseException) -> str:
    """The failure's text for the outbox and logs: its class, then its message (never a secret)."""
    # DeliveryError messages never hold secrets (notifiers strip them); keep the class for operators.
    return f"{type(exc).__name__}: {exc}"[:2000]


def _shown(value: object) -> object:
    # A huge bad value must not become a huge error message.
    return value if not isinstance(value, str) or len(value) <= 80 else f"{value[:77]}..."


def _default_worker_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def notifier_deadline(notifier: object) -> float | None:
    """The notifier's bound on one whole ``send()`` in seconds, when it declares one (``deadline``)."""
    deadline = getattr(notifier, "deadline", None)
    if deadline is None:
        return None
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not 0 < deadline < math.inf:
        raise InvalidConfiguration("notifier.deadline", deadline, "must be a positive, finite number of seconds")
    return float(deadline)


def _default_lease(self: Base[Any]) -> timedelta:
    deadline = notifier_deadline(self.notifier)
    if deadline is None or not isinstance(self.retry, RetryPolicy):  # a wrong retry is refused next
        return DEFAULT_LEASE
    return max(DEFAULT_LEASE, timedelta(seconds=math.ceil(2 * self.retry.longest_delivery(deadline))))


def _check_concurrency(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise InvalidConfiguration("concurrency", _shown(value), "must be a whole number from 1 to 1024")


def _check_retry(instance: object, attribute: attrs.Attribute[RetryPolicy], value: RetryPolicy) -> None:
    if not isinstance(value, RetryPolicy):
        raise InvalidConfiguration("retry", _shown(value), "must be a RetryPolicy")


def _worker_id(value: object) -> str:
    """A checked worker id; a ``str`` subclass (such as a ``StrEnum`` member) counts as its string value."""
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not value.isprintable():
        raise InvalidConfiguration("worker_id", _shown(value), "must be 1-128 printable characters")
    return str(value)


def _check_poll_interval(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    # Below 10 ms an idle dispatcher would spin a core polling the database.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.01 <= value <= 3600:
        raise InvalidConfiguration("poll_interval", _shown(value), "must be a number of seconds from 0.01 to 3600")


def _check_hook(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise InvalidConfiguration(attribute.name, _shown(value), "must be callable or None")


@attrs.frozen
class Result:
    """How one claimed delivery ended, before it is committed.

    ``outcome`` is ``None`` for a systemic failure: the claim is let go, nothing charged.
    """

    claim: Claim
    outcome: Outcome | None
    detail: Receipt | Exception
    seconds: float
    ended: float
    """When it ended (``time.monotonic()``)."""


@attrs.define
class Base(Generic[N]):
    """Settings, outcome rules, hooks and pause state shared by :class:`Dispatcher` and :class:`AsyncDispatcher`."""

    store: SqlStore
    notifier: N
    concurrency: int = attrs.field(default=32, kw_only=True, validator=_check_concurrency)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, kw_only=True, validator=_check_retry)
    lease: timedelta = attrs.field(default=attrs.Factory(_default_lease, takes_self=True), kw_only=True)
    worker_id: str = attrs.field(factory=_default_worker_id, kw_only=True, converter=_worker_id)
    poll_interval: float = attrs.field(default=0.5, kw_only=True, validator=_check_poll_interval)
    on_delivered: OnDelivered | None = attrs.field(default=None, kw_only=True, validator=_check_hook)
    on_retry: OnFailed | None = attrs.field(default=None, kw_only=True, validator=_check_hook)
    on_parked: OnFailed | None = attrs.field(default=None, kw_only=True, validator=_check_hook)
    on_attempt: OnAttempt | None = attrs.field(default=None, kw_only=True, validator=_check_hook)
    on_paused: OnPaused | None = attrs.field(default=None, kw_only=True, validator=_check_hook)
    on_resumed: OnResumed | None = attrs.field(default=None, kw_only=True, validator=_check_hook)
    _counts: dict[str, int] = attrs.field(factory=lambda: {"delivered": 0, "retried": 0, "parked": 0}, init=False)
    _paused: Pause | None = attrs.field(default=None, init=False)
    _record: PauseRecorder | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.store, SqlStore):
            raise InvalidConfiguration("store", _shown(self.store), "must be a loanstate SqlStore")
        self._check_notifier()
        self._check_lease()

    def _check_notifier(self) -> None:  # pragma: no cover - each face says what it drives
        raise NotImplementedError

    def _check_lease(self) -> None:
        lease = self.lease
        if not isinstance(lease, timedelta) or not timedelta(0) < lease <= LONGEST_LEASE:
            raise InvalidConfiguration("lease", _shown(lease), "must be a timedelta above 0 and at most one day")
        deadline = notifier_deadline(self.notifier)
        if deadline is None:
            return
        longest = self.retry.longest_delivery(deadline)
        if lease.total_seconds() < 2 * longest:
            raise InvalidConfiguration(
                "lease",
                lease,
                f"must be at least {2 * longest:g} s: a delivery starts only with half its lease left, and one "
                f"may take {longest:g} s (the notifier's deadline of {deadline:g} s per send, and the retry policy)",
            )

    @property
    def paused(self) -> Pause | None:
        """Why delivery is paused right now, or ``None`` while it runs normally."""
        return self._paused

    @property
    def prefetch(self) -> int:
        """How many events to hold claimed: the slots, and as many again ready to start."""
        return 2 * self.concurrency

    def fresh(self, claim: Claim) -> bool:
        """Whether a claim that waited for a slot still has at least half its lease to be delivered in.

        A claim left waiting longer (every slot busy with slow deliveries) is
        let go instead: its lease could run out mid-send, another worker take
        the event over, deliver it and the loan's next one, and this send then
        arrive after them.
        """
        return self.store.now() < claim.lease_expires_at - self.lease / 2

    def success(self, claim: Claim, receipt: Receipt, tries: int, started: float) -> Result:
        outcome = Outcome(claim, "delivered", at=receipt.delivered_at, trace_id=receipt.trace_id, tries=tries)
        ended = time.monotonic()
        return Result(claim, outcome, receipt, ended - started, ended)

    def failure(self, claim: Claim, exc: Exception, tries: int, started: float) -> Result:
        ended = time.monotonic()
        if isinstance(exc, SystemicDeliveryError):
            return Result(claim, None, exc, ended - started, ended)
        return Result(claim, self._failed(claim, exc, tries), exc, ended - started, ended)

    def _failed(self, claim: Claim, exc: Exception, tries: int) -> Outcome:
        now = self.store.now()
        trace_id = exc.trace_id if isinstance(exc, DeliveryError) else None
        if isinstance(exc, PermanentDeliveryError):
            return Outcome(claim, "parked", at=now, error=describe(exc), trace_id=trace_id, tries=tries)
        if not isinstance(exc, TransientDeliveryError):
            log.error("notifier raised %s for %s: a bug in the notifier; retrying", type(exc).__name__, claim.event)
        first = claim.first_failed_at or now
        if now - first >= self.retry.max_age:
            error = f"failing for {now - first} (max_age {self.retry.max_age}): {describe(exc)}"
            return Outcome(claim, "parked", at=now, error=error, trace_id=trace_id, tries=tries)
        after = getattr(exc, "retry_after", None)
        if isinstance(after, int | float) and after > 0:
            # The platform's window is honoured, but never past max_age (the loan would be
            # parked by then anyway), which also keeps an absurd Retry-After inside datetime's range.
            wait_s = min(float(after), self.retry.max_age.total_seconds())
        else:
            wait_s = self.retry.backoff(claim.attempts + tries)
        return Outcome(
            claim,
            "retry",
            at=now,
            error=describe(exc),
            trace_id=trace_id,
            next_attempt_at=now + timedelta(seconds=wait_s),
            tries=tries,
        )

    def after_commit(self, results: Sequence[Result]) -> None:
        """Count and report outcomes the outbox has recorded (or, for systemic failures, released)."""
        for result in results:
            kind = "paused" if result.outcome is None else result.outcome.kind
            detail = result.detail
            if kind == "delivered":
                self._counts["delivered"] += 1
                if self.on_delivered is not None and isinstance(detail, Receipt):
                    self.on_delivered(result.claim.event, detail)
            elif kind != "paused" and isinstance(detail, Exception):
                key, hook = ("parked", self.on_parked) if kind == "parked" else ("retried", self.on_retry)
                self._counts[key] += 1
                if hook is not None:
                    hook(result.claim.event, detail)
            if self.on_attempt is not None:
                error = describe(detail) if isinstance(detail, Exception) else None
                event = result.claim.event
                self.on_attempt(Attempt(event.request_id, event.loan_apply_no, kind, result.seconds, error))

    def pause(self, exc: SystemicDeliveryError) -> None:
        """Enter the pause (once per episode): one error line naming cause and remedy, the pause recorded
        in the store (``loanstate_pauses``, what the console shows), then ``on_paused``."""
        if self._paused is not None:
            return
        self._paused = Pause(cause=exc.cause, remedy=exc.remedy, message=exc.message, since=self.store.now())
        log.error(
            "delivery paused (%s): %s. Nothing is parked or charged; one event is sent as a probe at growing "
            "intervals (at most every %g s) until one goes through. The error was: %s",
            exc.cause,
            exc.remedy,
            self.retry.probe_max,
            exc.message,
        )
        # Recorded in the store too, so a console or a metrics scrape in another process sees it.
        self._recorder().on_paused(self._paused)
        if self.on_paused is not None:
            self.on_paused(self._paused)

    def _recorder(self) -> PauseRecorder:
        if self._record is None:
            self._record = PauseRecorder(self.store, self.worker_id)
        return self._record

    def resume(self) -> None:
        """Leave the pause: a probe went through."""
        pause, self._paused = self._paused, None
        if pause is None:
            return
        log.warning("delivery resumed: the %s failure paused it since %s", pause.cause, pause.since.isoformat())
        self._recorder().on_resumed()
        if self.on_resumed is not None:
            self.on_resumed()

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def report(self, start: dict[str, int], started: float) -> DispatchReport:
        status = self.store.outbox_status()
        return DispatchReport(
            delivered=self._counts["delivered"] - start["delivered"],
            retried=self._counts["retried"] - start["retried"],
            parked=self._counts["parked"] - start["parked"],
            pending=status.pending,
            lag=status.lag,
            elapsed=time.monotonic() - started,
            paused=self._paused,
        )
