"""Test support for code that uses loanstate: strategies, a stateful test base, fixtures."""

from __future__ import annotations

from loanstate.testing._faults import Fault, FaultPlan
from loanstate.testing._gateway import FakeTopGateway, GatewayRequest
from loanstate.testing._histories import ANOMALY_KINDS, AnomalyKind, History, PlantedAnomaly, histories
from loanstate.testing._strategies import (
    change_events,
    change_times,
    illegal_pairs,
    legal_pairs,
    lifecycles,
    loan_numbers,
    statuses,
    texts,
    timezones,
)

__all__ = [
    "ANOMALY_KINDS",
    "AnomalyKind",
    "FakeTopGateway",
    "Fault",
    "FaultPlan",
    "GatewayRequest",
    "History",
    "PlantedAnomaly",
    "change_events",
    "change_times",
    "histories",
    "illegal_pairs",
    "legal_pairs",
    "lifecycles",
    "loan_numbers",
    "statuses",
    "texts",
    "timezones",
]
