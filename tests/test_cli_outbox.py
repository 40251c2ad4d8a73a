"""``loanstate outbox status | retry | skip`` through the real console script: what an operator reads and types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from _cli import START, one_line_error, run
from hypothesis import given
from hypothesis import strategies as st

from loanstate import CallbackNotifier, Dispatcher, LoanChangeEvent, PermanentDeliveryError, SqlStore
from loanstate.cli._common import printable

# A loan number as long as the API allows: printed whole however narrow the terminal.
LONG_LOAN = "FI" + "7" * 62
REFUSED = "code 15: the platform refuses SETTLED->OVERDUE"
BAD_PARAM = "code 50 isv.invalid-parameter: \x1b[31mcustomer_id\x1b[0m \x9b2J \u202etxt.exe"


def _refuse(event: LoanChangeEvent) -> None:
    """The platform's verdict: loans FI1..FI4 refused one way, FI5 and LONG_LOAN another, the rest accepted."""
    if event.loan_apply_no in {"FI1", "FI2", "FI3", "FI4"}:
        raise PermanentDeliveryError(REFUSED, request_id=event.request_id)
    if event.loan_apply_no in {"FI5", LONG_LOAN}:
        raise PermanentDeliveryError(BAD_PARAM, request_id=event.request_id)


@pytest.fixture
def parked_db(tmp_path: Path) -> Iterator[tuple[str, SqlStore]]:
    """Eight loans with two changes each: four parked for one error, two for another, two delivered."""
    url = f"sqlite:///{tmp_path / 'loans.db'}"
    store = SqlStore(url)
    store.create_schema()
    for loan in [f"FI{n}" for n in range(7)] + [LONG_LOAN]:
        store.open_loan(loan, at=START)
        store.transition(loan, after="OVERDUE", at=START + timedelta(days=30))
        store.transition(loan, after="NEW", at=START + timedelta(days=40))
    Dispatcher(store, CallbackNotifier(_refuse)).run_once()
    try:
        yield url, store
    finally:
        store.close()


def test_status_groups_parked_loans_by_error_with_counts(parked_db: tuple[str, SqlStore]) -> None:
    """Two errors, six parked loans: two groups, the larger first, counting loans and the events behind them."""
    url, _ = parked_db
    result = run("outbox", "status", "--db", url)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("parked loans by error (6 loans, 2 distinct errors):")
    assert lines[start + 1].startswith("  4 loans, 4 waiting behind: PermanentDeliveryError: " + REFUSED)
    assert lines[start + 2].startswith("  2 loans, 2 waiting behind: PermanentDeliveryError: code 50")
    data = json.loads(run("outbox", "status", "--db", url, "--format", "json").stdout)
    assert [(g["loans"], g["waiting"]) for g in data["parked_groups"]] == [(4, 4), (2, 2)]
    assert data["parked_groups"][0]["error"] == f"PermanentDeliveryError: {REFUSED}"
    assert data["parked_loans_total"] == 6


def test_status_prints_every_id_whole_on_a_narrow_terminal(parked_db: tuple[str, SqlStore]) -> None:
    """At 40 columns the 64-character loan number and every request_id still appear whole, on one line."""
    url, store = parked_db
    result = run("outbox", "status", "--db", url, env={"COLUMNS": "40"})
    assert result.returncode == 1
    for parked in store.outbox_status().parked_loans:
        line = next(line for line in result.stdout.splitlines() if parked.request_id in line)
        assert parked.loan_apply_no in line


def test_status_limit_lists_at_most_n_loans_but_counts_them_all(parked_db: tuple[str, SqlStore]) -> None:
    """``--limit 2`` lists two parked loans and says so; the groups still count all six; 0 lists all."""
    url, store = parked_db
    ids = [p.request_id for p in store.outbox_status().parked_loans]
    result = run("outbox", "status", "--db", url, "--limit", "2")
    assert "parked loans, first 2 of 6 (--limit):" in result.stdout
    assert sum(request_id in result.stdout for request_id in ids) == 2
    assert "(6 loans, 2 distinct errors)" in result.stdout
    every = run("outbox", "status", "--db", url, "--limit", "0")
    assert all(request_id in every.stdout for request_id in ids)
    data = json.loads(run("outbox", "status", "--db", url, "--limit", "1", "--format", "json").stdout)
    assert len(data["parked_loans"]) == 1
    assert data["parked_loans_total"] == 6


def test_status_shows_no_control_character_from_an_error(parked_db: tuple[str, SqlStore]) -> None:
    """An ESC sequence inside a platform's error reaches the terminal as the visible text ``\\x1b``, never as ESC."""
    url, _ = parked_db
    result = run("outbox", "status", "--db", url)
    assert "\x1b" not in result.stdout + result.stderr
    assert "\\x1b[31mcustomer_id" in result.stdout


def test_status_json_carries_odd_characters_escaped_and_intact(parked_db: tuple[str, SqlStore]) -> None:
    """JSON output holds no raw control or format character (C1, bidi override), yet parses back to the same text."""
    url, _ = parked_db
    result = run("outbox", "status", "--db", url, "--format", "json")
    assert result.stdout.replace("\n", "").isprintable()
    errors = [g["error"] for g in json.loads(result.stdout)["parked_groups"]]
    assert f"PermanentDeliveryError: {BAD_PARAM}" in errors


@given(st.text(max_size=40))
def test_printable_leaves_no_control_character(text: str) -> None:
    """Whatever the text, what reaches the terminal is all printable, and printable text is left as it is."""
    shown = printable(text)
    assert shown.isprintable()
    if text.isprintable():
        assert shown == text


def test_retry_takes_several_loans_and_says_how_many(parked_db: tuple[str, SqlStore]) -> None:
    """``retry FI1 FI2`` un-parks two loans, prints 2 (and ``{"retried": 2}`` as JSON); none left: exit 1."""
    url, store = parked_db
    result = run("outbox", "retry", "FI1", "FI2", "--db", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "retried 2 parked events" in result.stdout
    assert {p.loan_apply_no for p in store.outbox_status().parked_loans} == {"FI3", "FI4", "FI5", LONG_LOAN}
    again = run("outbox", "retry", "FI1", "FI2", "--db", url, "--format", "json")
    assert again.returncode == 1
    assert json.loads(again.stdout) == {"retried": 0}


def test_retry_by_error_text_and_all(parked_db: tuple[str, SqlStore]) -> None:
    """``--error-contains`` un-parks the loans whose error holds the text; ``--all`` the rest."""
    url, store = parked_db
    result = run("outbox", "retry", "--error-contains", "isv.invalid-parameter", "--db", url, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == {"retried": 2}
    assert {p.loan_apply_no for p in store.outbox_status().parked_loans} == {"FI1", "FI2", "FI3", "FI4"}
    everything = run("outbox", "retry", "--all", "--db", url)
    assert "retried 4 parked events" in everything.stdout
    assert store.outbox_status().parked_loans == ()


def test_retry_without_a_selection_is_a_usage_error(parked_db: tuple[str, SqlStore]) -> None:
    """``retry`` with no loan, no ``--all`` and no ``--error-contains``: one line, exit 2, nothing touched."""
    url, store = parked_db
    assert "--all" in one_line_error(run("outbox", "retry", "--db", url))
    assert "needs some text" in one_line_error(run("outbox", "retry", "--error-contains", "", "--db", url))
    assert store.outbox_status().parked == 6


def test_skip_takes_several_request_ids_after_confirmation(parked_db: tuple[str, SqlStore]) -> None:
    """``skip A B`` asks first (naming each loan); "n" skips nothing, "y" skips both and prints 2."""
    url, store = parked_db
    parked = {p.loan_apply_no: p.request_id for p in store.outbox_status().parked_loans}
    chosen = [parked["FI1"], parked[LONG_LOAN]]
    declined = run("outbox", "skip", *chosen, "--db", url, stdin="n\n")
    assert declined.returncode == 1
    assert "nothing skipped" in declined.stdout
    assert LONG_LOAN in declined.stderr
    assert "FI1" in declined.stderr
    assert store.outbox_status().parked == 6
    accepted = run("outbox", "skip", *chosen, "--db", url, stdin="y\n")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "skipped 2 events" in accepted.stdout
    assert store.outbox_status().parked == 4


def test_skip_with_yes_asks_nothing_and_json_counts(parked_db: tuple[str, SqlStore]) -> None:
    """``skip --yes --format json`` skips without a question and returns ``{"skipped": n}``."""
    url, store = parked_db
    parked = {p.loan_apply_no: p.request_id for p in store.outbox_status().parked_loans}
    result = run("outbox", "skip", parked["FI2"], parked["FI3"], "--yes", "--format", "json", "--db", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == {"skipped": 2}
    assert result.stderr == ""
    assert store.outbox_status().parked == 4


def test_skip_with_no_answer_to_read_is_refused(parked_db: tuple[str, SqlStore]) -> None:
    """Without a terminal or ``--yes`` (input at its end), skip refuses in one line and skips nothing."""
    url, store = parked_db
    request_id = store.outbox_status().parked_loans[0].request_id
    refused = run("outbox", "skip", request_id, "--db", url, stdin="")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert "pass --yes" in refused.stderr.strip().splitlines()[-1]
    assert store.outbox_status().parked == 6
