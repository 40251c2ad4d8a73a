"""What a dispatcher tells its caller: the run's report, each attempt, and why delivery paused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

import attrs

from loanstate._events import LoanChangeEvent, Receipt

__all__ = ["Attempt", "DispatchReport", "OnAttempt", "OnDelivered", "OnFailed", "OnPaused", "OnResumed", "Pause"]

AttemptOutcome = Literal["delivered", "retry", "parked", "paused"]


@attrs.frozen
class Pause:
    """Why delivery is paused: a failure that would hit every event alike.

    ``cause`` is the :class:`~loanstate.SystemicDeliveryError`'s short name
    (``"signature"``, ``"timestamp"``, ``"unreachable"``, ...), ``remedy`` what a
    person should fix, ``message`` the error's text, ``since`` when the pause began.
    """

    cause: str
    remedy: str
    message: str
    since: datetime


@attrs.frozen
class Attempt:
    """One delivery attempt, as the ``on_attempt`` hook sees it.

    ``outcome`` is ``"delivered"``, ``"retry"`` (rescheduled), ``"parked"`` or
    ``"paused"`` (a systemic failure: nothing charged); ``error`` is the failure's
    text (``None`` when delivered); ``seconds`` is the attempt's wall time.
    """

    request_id: str
    loan_apply_no: str
    outcome: str
    seconds: float
    error: str | None = None


@attrs.frozen
class DispatchReport:
    """What a dispatcher run did, and what is left.

    ``delivered``, ``retried`` (failures rescheduled) and ``parked`` count
    this run's outcomes; ``pending`` and ``lag`` (age of the oldest pending
    event, ``None`` when none is pending) describe the outbox when the run
    ended; ``elapsed`` is the run's wall time in seconds; ``paused`` says why
    delivery is paused when the run ended paused (``None`` otherwise).
    """

    delivered: int
    retried: int
    parked: int
    pending: int
    lag: timedelta | None
    elapsed: float
    paused: Pause | None = None


#: Called after a delivery is committed: ``(event, receipt)``.
OnDelivered = Callable[[LoanChangeEvent, Receipt], None]
#: Called after a failure is committed (rescheduled or parked): ``(event, error)``.
OnFailed = Callable[[LoanChangeEvent, Exception], None]
#: Called once per attempt after it is committed (or released, when paused).
OnAttempt = Callable[[Attempt], None]
#: Called once when delivery pauses on a systemic failure.
OnPaused = Callable[[Pause], None]
#: Called once when a probe went through and delivery resumes.
OnResumed = Callable[[], None]
