"""Test support for code that uses loanstate: strategies, a stateful test base, fixtures."""

from __future__ import annotations

from loanstate.fake import FakeTopGateway, Fault, FaultPlan, GatewayRequest

__all__ = ["FakeTopGateway", "Fault", "FaultPlan", "GatewayRequest"]

# The fake gateway lives in loanstate.fake (the demo and `loanstate gateway` use
# it on a plain install) and is re-exported here; the strategies and the stateful base need it
# (the "test" extra), so without it they are simply absent, and so are their
# names in __all__ (``from loanstate.testing import *`` works either way).
try:
    from loanstate.testing._definitions import MISTAKES, BrokenDefinition, broken_definitions, definitions
    from loanstate.testing._histories import ANOMALY_KINDS, AnomalyKind, History, PlantedAnomaly, histories
    from loanstate.testing._stateful import DeliveryFaults, LoanLifecycleStateMachine, ServicingAdapter
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
except ModuleNotFoundError as _missing:  # pragma: no cover - only without the test extra
    if _missing.name != "hypothesis":
        raise
else:
    __all__ += [
        "ANOMALY_KINDS",
        "MISTAKES",
        "AnomalyKind",
        "BrokenDefinition",
        "DeliveryFaults",
        "History",
        "LoanLifecycleStateMachine",
        "PlantedAnomaly",
        "ServicingAdapter",
        "broken_definitions",
        "change_events",
        "change_times",
        "definitions",
        "histories",
        "illegal_pairs",
        "legal_pairs",
        "lifecycles",
        "loan_numbers",
        "statuses",
        "texts",
        "timezones",
    ]
