"""``loanstate audit``'s engine against the floor of merely parsing the file, and its memory against file size.

(1) :class:`loanstate.HistoryAudit` over a generated 1,000,000-record JSON
Lines history (20,000 interleaved loans, legal lifecycles, no findings) against
the floor: the least work that reads every record at all, one reused
``json.JSONDecoder`` over each line decoded from UTF-8 (the parser call the
audit itself makes); target at least 0.5x the floor's records per second. For
information, ``json.loads`` of each line read in binary (a slower way to parse).
The three sides are interleaved round by round; the file is written before.
(2) Peak resident memory of a fresh process auditing the same history cut to a
quarter against the whole of it: the audit holds one entry per loan and a
fixed-size filter, so the two should be about equal (target: flat, ~1x).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from benchmarks._checks import check, passed
from benchmarks._harness import Row, interleave
from loanstate import HistoryAudit, default_machine
from loanstate._events import TOP_TIMEZONE, derive_request_id

LOANS = 20_000


def write_history(path: Path, records: int, seed: int = 1) -> None:
    """Legal lifecycles of exactly LOANS loans, interleaved at random, one JSON object per line.

    Loans never reach a terminal status, so the number of loans stays LOANS
    however long the history: memory can then be compared across file sizes.
    """
    machine = default_machine()
    rng = random.Random(seed)
    allowed = {s: sorted(machine.allowed(s) - machine.terminal) for s in machine.statuses}
    start = datetime(2020, 1, 1, tzinfo=TOP_TIMEZONE)
    state: dict[str, tuple[str, datetime, int]] = {}
    with path.open("w", encoding="utf-8") as f:
        for _ in range(records):
            loan = f"FI{rng.randrange(LOANS):08d}"
            status, at, sequence = state.get(loan, (machine.initial, start, 0))
            after = rng.choice(allowed[status])
            at = at + timedelta(minutes=rng.randrange(1, 50_000))
            rid = derive_request_id(loan, status, after, at, sequence=sequence)
            record = {
                "loan_apply_no": loan,
                "before_status": status,
                "after_status": after,
                "change_time": at.isoformat(),
                "request_id": rid,
                "customer_id": "2088000000000001",
            }
            f.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            state[loan] = (after, at, sequence + 1)


def floor_loads(path: Path) -> int:
    """Parse every line with json.loads, nothing else."""
    count = 0
    loads = json.loads
    with path.open("rb") as f:
        for line in f:
            loads(line)
            count += 1
    return count


def floor_decoder(path: Path) -> int:
    """Parse every line with one reused decoder over decoded text (the audit's own call)."""
    count = 0
    decode = json.JSONDecoder().decode
    with path.open("rb") as f:
        for line in f:
            decode(line.decode("utf-8"))
            count += 1
    return count


def audit(path: Path) -> int:
    """The whole audit; the generated history must come out clean."""
    history = HistoryAudit.of_file(path)
    findings = list(history.findings())
    check(not findings, f"the audit of a clean history found {findings[:3]}")
    check(history.summary is not None, "the audit gave no summary")
    assert history.summary is not None
    return history.summary.records


def _rate(fn: Callable[[Path], int], path: Path, records: int, what: str) -> Callable[[], float]:
    """A side for :func:`interleave`: records per second of ``fn(path)``, which must read every record."""

    def side() -> float:
        start = time.perf_counter()
        count = fn(path)
        seconds = time.perf_counter() - start
        check(count == records, f"{what} read {count} records of {records}")
        return count / seconds

    return side


_CHILD = """
import resource, sys
from loanstate import HistoryAudit


def peak():
    # VmHWM is this process's own high-water mark; ru_maxrss on Linux would also
    # count the parent's memory inherited across fork and exec.
    try:
        with open("/proc/self/status") as status:
            for row in status:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


history = HistoryAudit.of_file(sys.argv[1])
for _ in history.findings():
    pass
print(peak())
"""


def peak_rss(path: Path) -> float:
    """Peak resident bytes of a fresh process auditing ``path``."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True, timeout=900
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> list[Row]:
    """Run this module's benchmarks; return its rows."""
    records, rounds = (40_000, 2) if quick else (1_000_000, 5)
    with tempfile.TemporaryDirectory(prefix="loanstate-bench-audit-") as name:
        whole = Path(name) / "history.jsonl"
        write_history(whole, records)
        quarter = Path(name) / "quarter.jsonl"
        with whole.open("rb") as src, quarter.open("wb") as dst:
            for index, line in enumerate(src):
                if index >= records // 4:
                    break
                dst.write(line)
        t = interleave(
            {
                "ours": _rate(audit, whole, records, "the audit"),
                "decoder": _rate(floor_decoder, whole, records, "the reused decoder"),
                "loads": _rate(floor_loads, whole, records, "json.loads"),
            },
            rounds,
        )
        passed(f"audit: {records:,} records read on every side, no finding in a clean history, every round")
        rss_quarter = peak_rss(quarter)
        rss_whole = peak_rss(whole)
    label = f"{records:,}"
    return [
        Row(
            f"audit {label} records (JSONL)",
            t["ours"],
            "floor: one reused decoder per line",
            t["decoder"],
            "records/s",
            rounds,
            0.5,
            higher_is_better=True,
        ),
        Row(
            f"audit {label} records (JSONL)",
            t["ours"],
            "json.loads per line (informative)",
            t["loads"],
            "records/s",
            rounds,
            higher_is_better=True,
        ),
        Row(
            f"peak RSS, audit of {label} records ({LOANS:,} loans)",
            rss_whole,
            f"peak RSS, audit of {records // 4:,} records",
            rss_quarter,
            "B",
            1,
            0.9,
        ),
    ]
