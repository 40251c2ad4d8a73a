"""RetryPolicy: how long to wait between tries, when to give up, and how a pause is probed.

Every wait the dispatcher makes between tries goes through stamina, so
``stamina.set_testing(True)`` removes them all in tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs
import stamina

from loanstate._errors import InvalidConfiguration, SystemicDeliveryError, TransientDeliveryError

__all__ = ["RetryPolicy"]


def _seconds(name: str, value: object, *, positive: bool = False) -> None:
    lowest = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise InvalidConfiguration(f"retry.{name}", value, f"must be a finite number of seconds {lowest}")
    if positive and value <= 0:
        raise InvalidConfiguration(f"retry.{name}", value, f"must be a finite number of seconds {lowest}")


@attrs.frozen
class RetryPolicy:
    """How transient failures are retried, and how a paused dispatcher probes. All waits in seconds.

    Defaults, and why: the first retry comes within about a second
    (``wait_initial=1.0`` plus up to ``wait_jitter=1.0``), because most
    failures (a dropped connection, a 503) are gone by then; waits double
    (``2**n``) so an outage is not hammered, up to ``wait_max=600`` (ten
    minutes: a recovered platform hears from us soon, yet a day-long outage
    costs ~150 calls per loan); jitter spreads retries of many loans so they
    do not arrive in lockstep. After ``max_age`` (3 days) of failing, the
    loan is parked: by then a person should look. ``attempts`` quick tries
    happen in process (within ``in_process_timeout`` seconds) before the
    event is rescheduled in the outbox, where its wait survives restarts.

    A systemic failure (wrong credentials, clock, TLS, an unreachable
    gateway) pauses delivery instead; the dispatcher then sends one probe
    event after ``probe_initial`` seconds, doubling the wait after each
    failed probe up to ``probe_max`` (five minutes: a fixed setting is
    noticed soon, yet a night-long outage costs about a hundred calls).
    """

    attempts: int = attrs.field(default=3)
    wait_initial: float = attrs.field(default=1.0)
    wait_max: float = attrs.field(default=600.0)
    wait_jitter: float = attrs.field(default=1.0)
    max_age: timedelta = attrs.field(default=timedelta(days=3))
    in_process_timeout: float = attrs.field(default=10.0)
    probe_initial: float = attrs.field(default=5.0)
    probe_max: float = attrs.field(default=300.0)

    @attempts.validator
    def _check_attempts(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
            raise InvalidConfiguration("retry.attempts", value, "must be a whole number from 1 to 100")

    @wait_initial.validator
    @wait_jitter.validator
    @in_process_timeout.validator
    def _check_seconds(self, attribute: attrs.Attribute[float], value: float) -> None:
        _seconds(attribute.name, value)

    @wait_max.validator
    def _check_wait_max(self, attribute: attrs.Attribute[float], value: float) -> None:
        _seconds("wait_max", value)
        if value < self.wait_initial:
            raise InvalidConfiguration("retry.wait_max", value, f"must be at least wait_initial ({self.wait_initial})")

    @max_age.validator
    def _check_max_age(self, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise InvalidConfiguration("retry.max_age", value, "must be a positive timedelta")

    @probe_initial.validator
    def _check_probe_initial(self, attribute: attrs.Attribute[float], value: float) -> None:
        _seconds("probe_initial", value, positive=True)

    @probe_max.validator
    def _check_probe_max(self, attribute: attrs.Attribute[float], value: float) -> None:
        _seconds("probe_max", value, positive=True)
        if value < self.probe_initial:
            raise InvalidConfiguration(
                "retry.probe_max", value, f"must be at least probe_initial ({self.probe_initial})"
            )

    def backoff(self, failures: int) -> float:
        """The jittered wait after ``failures`` consecutive failures (1-based)."""
        # The exponent is capped: 2.0 ** 1024 overflows a float, and a loan failing for
        # days (several tries per claim) gets there; wait_max is reached long before.
        base = self.wait_initial * 2.0 ** min(max(failures - 1, 0), 1000)
        return min(self.wait_max, base + random.uniform(0, self.wait_jitter))

    def longest_delivery(self, deadline: float) -> float:
        """The longest one claimed delivery can take when each send is bounded by ``deadline`` seconds.

        stamina starts no new try once ``in_process_timeout`` has passed, but the
        wait before a try and the try itself may run past it: so at most that
        timeout, one more wait and one more send; and never more than every try
        plus every wait.
        """
        if self.attempts == 1:
            return deadline
        wait = max(min(self.wait_max, self.in_process_timeout), self.in_process_timeout / 2)
        every = self.attempts * deadline + (self.attempts - 1) * wait
        return min(every, self.in_process_timeout + wait + deadline)

    def quick_retry(self, exc: Exception) -> bool | float:
        """Whether a failed try is tried again in process: stamina's ``on`` hook.

        Transient errors are; a short ``retry_after`` is honoured as the wait; a
        long one is waited out durably instead of holding a lease; a systemic
        failure never is (it pauses the dispatcher).
        """
        if not isinstance(exc, TransientDeliveryError) or isinstance(exc, SystemicDeliveryError):
            return False
        if exc.retry_after is None:
            return True
        return max(exc.retry_after, 0.001) if exc.retry_after <= self.in_process_timeout / 2 else False

    def in_process(self, on: Callable[[Exception], bool | float]) -> Any:
        """stamina's retries for one claimed delivery, counting the first try (made before it)."""
        return stamina.retry_context(
            on=on,
            attempts=self.attempts,
            timeout=self.in_process_timeout,
            wait_initial=self.wait_initial,
            wait_max=min(self.wait_max, self.in_process_timeout),
            wait_jitter=self.wait_jitter,
        )

    def probes(self, on: type[Exception]) -> Any:
        """stamina's waits between probes of a paused dispatcher: growing, capped at ``probe_max``, endless."""
        return stamina.retry_context(
            on=on,
            attempts=None,
            timeout=None,
            wait_initial=self.probe_initial,
            wait_max=self.probe_max,
            wait_jitter=min(self.wait_jitter, self.probe_initial),
        )
