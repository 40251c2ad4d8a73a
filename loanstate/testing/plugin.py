"""The pytest plugin loanstate registers (entry point ``pytest11``): fixtures and Hypothesis profiles."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Database fixtures: a fresh PostgreSQL / MySQL database per test (see loanstate.testing._databases).
from loanstate.testing._databases import (
    loanstate_mysql_server,
    loanstate_mysql_url,
    loanstate_postgres_server,
    loanstate_postgres_url,
)

__all__ = [
    "loanstate_mysql_server",
    "loanstate_mysql_url",
    "loanstate_postgres_server",
    "loanstate_postgres_url",
]

# "ci" runs more examples and never times out on a slow shared machine;
# "dev" is quick for local iteration. LOANSTATE_HYPOTHESIS_PROFILE picks one.
settings.register_profile("ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile(os.environ.get("LOANSTATE_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
