"""What can go wrong at the fake gateway, and when: :class:`Fault` and :class:`FaultPlan`."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from random import Random
from typing import Any

import attrs

from loanstate._errors import InvalidConfiguration

__all__ = ["Fault", "FaultPlan"]


class Fault(enum.Enum):
    """One failure the fake gateway can inject into a request.

    Faults that lose the answer (``TIMEOUT``, ``DROP``, ``MALFORMED``) happen
    *after* the change took effect, the case that makes idempotency matter: the
    platform applied it but the caller cannot know. Every other fault happens
    before anything takes effect. ``LATENCY`` delays a normal answer.
    """

    HTTP_500 = "http_500"  #: HTTP 500, no effect
    HTTP_503 = "http_503"  #: HTTP 503 with Retry-After: 1, no effect
    LATENCY = "latency"  #: a normal answer after ``FaultPlan.latency`` seconds
    TIMEOUT = "timeout"  #: takes effect, then no answer for ``FaultPlan.hang`` seconds, then the connection closes
    DROP = "drop"  #: takes effect, then the connection is closed without an answer
    ISP_ERROR = "isp_error"  #: error_response code 15, sub_code ``isp.remote-service-timeout``
    RATE_LIMIT = "rate_limit"  #: error_response code 7, "This ban will last for N more seconds"
    ISV_ERROR = "isv_error"  #: error_response code 50, sub_code ``isv.invalid-parameter``
    BUSINESS_FAILURE = "business_failure"  #: result ``success=false``, ``response_code`` ``FAKE_BUSINESS_FAILURE``
    MALFORMED = "malformed"  #: takes effect, then a truncated body with HTTP 200


def _schedule(values: Iterable[Fault | None]) -> tuple[Fault | None, ...]:
    if isinstance(values, str | bytes | Fault) or not isinstance(values, Iterable):
        raise InvalidConfiguration("schedule", values, "expected a sequence of Fault or None")
    schedule = tuple(values)
    for position, fault in enumerate(schedule):
        # A string such as "timeout" would otherwise match no fault and inject nothing, silently.
        if fault is not None and not isinstance(fault, Fault):
            raise InvalidConfiguration(f"schedule[{position}]", fault, "each entry must be a Fault or None")
    return schedule


def _seconds(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise InvalidConfiguration(attribute.name, value, "must be a finite number of seconds, 0 or more")


def _whole_seconds(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidConfiguration(attribute.name, value, "must be a whole number of seconds, 0 or more")


def _flag(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidConfiguration(attribute.name, value, "must be True or False")


def _rates(values: Mapping[Fault, float]) -> Mapping[Fault, float]:
    if not isinstance(values, Mapping):
        raise InvalidConfiguration("rates", values, "expected a mapping of Fault to a probability")
    rates = dict(values)
    for fault, rate in rates.items():
        number = isinstance(rate, int | float) and not isinstance(rate, bool)
        if not isinstance(fault, Fault) or not number or not 0.0 <= rate <= 1.0:
            raise InvalidConfiguration("fault rate", (fault, rate), "each must be a Fault with a rate in [0, 1]")
    if sum(rates.values()) > 1.0 + 1e-9:
        raise InvalidConfiguration("fault rates", rates, "must sum to at most 1")
    return rates


@attrs.frozen
class FaultPlan:
    """When the fake gateway injects which fault.

    Requests are numbered in arrival order from 0 (from when the plan was
    set). Request *n* gets ``schedule[n]`` while the schedule lasts (``None``
    = no fault; with ``repeat`` the schedule cycles); after it, each request
    draws at most one fault with the probabilities in ``rates``, from the
    gateway's seeded random generator, so a run is reproducible. ``latency``
    is the delay of ``Fault.LATENCY``, ``hang`` how long a ``Fault.TIMEOUT``
    holds the request, ``retry_after`` the seconds a rate limit names.
    """

    schedule: tuple[Fault | None, ...] = attrs.field(default=(), converter=_schedule)
    rates: Mapping[Fault, float] = attrs.field(factory=dict, converter=_rates)
    repeat: bool = attrs.field(default=False, validator=_flag)
    latency: float = attrs.field(default=0.05, validator=_seconds)
    hang: float = attrs.field(default=30.0, validator=_seconds)
    retry_after: int = attrs.field(default=1, validator=_whole_seconds)

    @classmethod
    def none(cls) -> FaultPlan:
        """No faults at all."""
        return cls()

    @classmethod
    def sequence(
        cls,
        *faults: Fault | None,
        repeat: bool = False,
        latency: float = 0.05,
        hang: float = 30.0,
        retry_after: int = 1,
    ) -> FaultPlan:
        """The given faults to the first requests, in order (``None`` lets one through)."""
        return cls(schedule=faults, repeat=repeat, latency=latency, hang=hang, retry_after=retry_after)

    @classmethod
    def random(
        cls,
        rates: Mapping[Fault, float],
        *,
        latency: float = 0.05,
        hang: float = 30.0,
        retry_after: int = 1,
    ) -> FaultPlan:
        """Each request draws a fault with these probabilities (seeded by the gateway)."""
        return cls(rates=rates, latency=latency, hang=hang, retry_after=retry_after)

    def pick(self, index: int, rng: Random) -> Fault | None:
        """The fault for request number ``index`` (drawing from ``rng`` only past the schedule)."""
        if self.schedule and (self.repeat or index < len(self.schedule)):
            return self.schedule[index % len(self.schedule)]
        if not self.rates:
            return None
        draw = rng.random()
        for fault, rate in self.rates.items():
            if draw < rate:
                return fault
            draw -= rate
        return None
