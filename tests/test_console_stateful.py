"""The console beside the store, through any interleaving of changes, faulty deliveries and operator actions."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from starlette.testclient import TestClient
from test_console_metrics import samples

from loanstate import Dispatcher, InMemoryNotifier, PermanentDeliveryError
from loanstate.console import create_app
from loanstate.dispatch import RetryPolicy
from loanstate.store import SqlStore
from loanstate.store._schema import history, loans, outbox

TOKEN = "stateful-token-0123456789"
BEARER = {"authorization": f"Bearer {TOKEN}"}
NAMES = ("S-0", "<b>&1", "a/b?c", "S-3")
LOANS = st.sampled_from(NAMES)
ONE_TRY = RetryPolicy(attempts=1)


class ConsoleBesideStore(RuleBasedStateMachine):
    """Every action's answer, and every page's numbers, agree with the store's own."""

    def __init__(self, store: SqlStore) -> None:
        super().__init__()
        self.store = store
        self.client = TestClient(create_app(store, token=TOKEN, allow_actions=True, page_size=2))
        self.opened: set[str] = set()

    def teardown(self) -> None:
        with self.store.engine.begin() as conn:
            for table in (outbox, history, loans):
                conn.execute(table.delete())

    def parked_of(self, loan: str) -> list[str]:
        return [p.request_id for p in self.store.outbox_status().parked_loans if p.loan_apply_no == loan]

    @rule(loan=LOANS, data=st.data())
    def change(self, loan: str, data: st.DataObject) -> None:
        now = datetime.now(UTC)
        if loan not in self.opened:
            self.store.open_loan(loan, at=now)
            self.opened.add(loan)
        allowed = sorted(self.store.machine.allowed(self.store.status(loan)))
        if allowed:  # a terminal status goes nowhere
            self.store.transition(loan, after=data.draw(st.sampled_from(allowed), label="after"), at=now)

    @rule(doomed=st.sets(LOANS))
    def deliver(self, doomed: set[str]) -> None:
        notifier = InMemoryNotifier()
        notifier.fail_when(lambda e: e.loan_apply_no in doomed, PermanentDeliveryError("isv.refused"))
        Dispatcher(self.store, notifier, retry=ONE_TRY, concurrency=2).run_once()

    @rule(loan=LOANS)
    def retry(self, loan: str) -> None:
        parked = self.parked_of(loan)
        answer = self.client.post(f"/loans/{quote(loan, safe='')}/retry", headers=BEARER)
        if loan not in self.opened:
            assert answer.status_code == 409
            return
        assert answer.status_code == 200
        assert answer.json()["count"] == len(parked)
        assert self.parked_of(loan) == []

    @rule(loan=LOANS)
    def skip(self, loan: str) -> None:
        parked = self.parked_of(loan)
        answer = self.client.post(f"/loans/{quote(loan, safe='')}/skip", headers=BEARER)
        if not parked:
            assert answer.status_code == 409
            return
        assert answer.json() == {"action": "skip", "count": len(parked), "request_ids": parked}
        assert self.parked_of(loan) == []

    @rule()
    def retry_the_first_group(self) -> None:
        page = self.client.get("/parked", headers=BEARER).text
        found = re.search(r'<a href="/parked/([0-9a-f]{16})">', page)
        if found is None:
            assert self.store.outbox_status().parked == 0
            return
        before = self.store.outbox_status().parked
        answer = self.client.post(f"/parked/{found.group(1)}/retry", headers=BEARER)
        assert answer.status_code == 200
        assert answer.json()["count"] == before  # one error only, so the group is every parked event

    @invariant()
    def metrics_are_the_store_s_counts(self) -> None:
        status = self.store.outbox_status()
        found = samples(self.client.get("/metrics", headers=BEARER).text)
        for state in ("pending", "delivered", "parked", "skipped"):
            assert found[("loanstate_outbox_events", (("state", state),))] == getattr(status, state)
        assert found[("loanstate_parked_loans", ())] == len({p.loan_apply_no for p in status.parked_loans})


@pytest.mark.slow
def test_console_agrees_with_the_store(tmp_path: Path) -> None:
    """Whatever happens to the outbox, the console's answers and numbers are the store's."""
    store = SqlStore(f"sqlite:///{tmp_path / 'stateful.db'}")
    store.create_schema()
    try:
        run_state_machine_as_test(
            # A factory works as well as the class (Hypothesis only calls it); the stub says type.
            lambda: ConsoleBesideStore(store),  # type: ignore[arg-type]
            settings=settings(max_examples=15, stateful_step_count=15, deadline=None),
        )
    finally:
        store.close()
