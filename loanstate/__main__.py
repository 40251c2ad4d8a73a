"""``python -m loanstate``: the ``loanstate`` command."""

from __future__ import annotations

import sys
from datetime import UTC, datetime


def _sample() -> int:
    from loanstate import default_machine

    machine = default_machine()
    print(machine.to_mermaid())
    event = machine.change(
        loan_apply_no="FI123123121",
        before="NEW",
        after="OVERDUE",
        at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    print(event.to_top_param())
    return 0


if __name__ == "__main__":
    sys.exit(_sample())
