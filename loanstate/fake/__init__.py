"""A fake of Alibaba's open-platform gateway, for demos, tests and local runs.

:class:`FakeTopGateway` is a real HTTP server on loopback that checks each
request as the platform does (signature, timestamp, parameters, the lifecycle),
records the effect of each ``request_id`` once, and answers in the platform's
own shapes. :class:`FaultPlan` scripts its failures. The demo and the
``loanstate gateway`` command use it; :mod:`loanstate.testing` re-exports it.
It needs no Hypothesis.
"""

from __future__ import annotations

from loanstate.fake._faults import Fault, FaultPlan
from loanstate.fake._gateway import FakeTopGateway, GatewayRequest

__all__ = ["FakeTopGateway", "Fault", "FaultPlan", "GatewayRequest"]
