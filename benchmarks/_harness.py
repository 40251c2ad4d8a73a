"""Shared measuring and reporting for the benchmark modules.

Figures are medians over several repetitions taken in the same process run, and
every claim is a ratio against a peer or a floor measured right beside it, so a
noisy shared machine moves both sides together.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import attrs

__all__ = ["Row", "per_op", "print_table", "rate"]


@attrs.frozen
class Row:
    """One line of the results table: a workload, our figure, a reference, their ratio."""

    workload: str
    ours: float
    reference_name: str
    reference: float
    unit: str
    target: str = ""
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        """How many times better (>1) or worse (<1) than the reference we are."""
        if self.higher_is_better:
            return self.ours / self.reference if self.reference else float("inf")
        return self.reference / self.ours if self.ours else float("inf")


def per_op(fn: Callable[[int], object], n: int, repeat: int) -> float:
    """Median seconds per operation of ``fn(n)``, which performs ``n`` operations."""
    fn(max(1, n // 10))  # warm caches and lazy imports outside the timing
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)


def rate(fn: Callable[[], int], repeat: int) -> float:
    """Median operations per second of ``fn()``, which returns how many operations it performed."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn()
        samples.append(count / (time.perf_counter() - start))
    return statistics.median(samples)


def _fmt(value: float, unit: str) -> str:
    if unit == "s/op":
        return f"{value * 1e6:,.2f} µs"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:,.1f} {unit}"


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print one table: workload, ours, reference, ratio (x = times better than the reference), target."""
    print(f"\n## {title}\n")
    print("| workload | loanstate | reference | reference figure | ratio | target |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.workload} | {_fmt(row.ours, row.unit)} | {row.reference_name} | "
            f"{_fmt(row.reference, row.unit)} | {row.ratio:.2f}x | {row.target} |"
        )
