"""Many writers on the same loans: threads and processes racing compare-and-set, on every engine."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from loanstate import ConcurrentChange, InvalidEvent, SqlStore

HERE = Path(__file__).resolve().parent
FLIP = {"NEW": "OVERDUE", "OVERDUE": "NEW"}


def assert_history_whole(store: SqlStore, loan: str) -> int:
    """The loan's history is a gapless chain matching its status and its outbox; returns its length."""
    history = store.history(loan)
    entries = store.outbox_entries(loan)
    assert [e.sequence for e in entries] == list(range(1, len(history) + 1))
    assert [e.event for e in entries] == history
    status = "NEW"
    for event in history:
        assert event.before_status == status
        status = event.after_status
    assert store.status(loan) == status
    return len(history)


def test_every_compare_and_set_has_exactly_one_winner(db_url: sa.URL) -> None:
    """Threads that all read the same status and then all try to change it: exactly one wins each round."""
    store = SqlStore(db_url)
    store.create_schema()
    store.open_loan("RACE", at=datetime(2024, 1, 1, tzinfo=UTC))
    threads, rounds = 6, 8
    read_done = threading.Barrier(threads)
    results: list[list[str]] = [[] for _ in range(rounds)]
    refusals: list[tuple[str | None, str | None, str]] = []
    lock = threading.Lock()

    def racer() -> None:
        for r in range(rounds):
            seen = store.status("RACE")
            read_done.wait()
            try:
                store.transition("RACE", after=FLIP[seen], at=datetime.now(UTC), expected_before=seen)
                outcome = "won"
            except ConcurrentChange as lost:
                outcome = "lost"
                with lock:
                    refusals.append((lost.expected, lost.actual, seen))
            with lock:
                results[r].append(outcome)
            read_done.wait()

    workers = [threading.Thread(target=racer) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [sorted(r) for r in results] == [["lost"] * (threads - 1) + ["won"]] * rounds
    # Each loser learns what it expected and what the winner left.
    assert all((expected, actual) == (seen, FLIP[seen]) for expected, actual, seen in refusals)
    assert assert_history_whole(store, "RACE") == rounds
    store.close()


def test_threads_and_two_processes_lose_no_update(db_url: sa.URL) -> None:
    """Four threads and two processes hammer five loans: wins equal history rows, with no gap and no lost update."""
    store = SqlStore(db_url)
    store.create_schema()
    loans = 5
    for n in range(loans):
        store.open_loan(f"RACE{n}", at=datetime(2024, 1, 1, tzinfo=UTC))
    url = db_url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    processes = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_worker.py"), "transition", url, str(loans), "40", str(seed)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in (1, 2)
    ]
    wins = [0]
    lock = threading.Lock()

    def hammer(seed: int) -> None:
        for i in range(40):
            loan = f"RACE{(seed + i) % loans}"
            seen = store.status(loan)
            try:
                store.transition(loan, after=FLIP[seen], at=datetime.now(UTC), expected_before=seen)
            except ConcurrentChange:
                continue
            with lock:
                wins[0] += 1

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for p in processes:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        wins[0] += int(out.split()[0])
    total = sum(assert_history_whole(store, f"RACE{n}") for n in range(loans))
    assert total == wins[0]
    assert store.outbox_status().pending == total
    store.close()


def test_racing_opens_of_one_loan_have_one_winner(db_url: sa.URL) -> None:
    """Threads opening the same loan at once: one opens it, every other gets InvalidEvent 'already open'."""
    store = SqlStore(db_url)
    store.create_schema()
    threads, rounds = 6, 5
    start = threading.Barrier(threads, timeout=60)
    outcomes: list[list[str]] = [[] for _ in range(rounds)]
    lock = threading.Lock()

    def opener() -> None:
        for r in range(rounds):
            start.wait()
            try:
                store.open_loan(f"OPEN{r}", at=datetime(2024, 1, 1, tzinfo=UTC))
                outcome = "opened"
            except InvalidEvent as refused:
                outcome = "refused" if "already open" in str(refused) else str(refused)
            except Exception as exc:  # recorded, so the other threads are not left at the barrier
                outcome = type(exc).__name__
            with lock:
                outcomes[r].append(outcome)

    workers = [threading.Thread(target=opener) for _ in range(threads)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert [sorted(o) for o in outcomes] == [["opened"] + ["refused"] * (threads - 1)] * rounds
    finally:
        store.close()
