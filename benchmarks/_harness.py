"""Shared measuring for the benchmark modules: rows, interleaved rounds, medians.

Every claim is a ratio against a peer or a floor measured right beside it:
each round runs every side once (in alternating order), each side doing its
own set-up outside the region it times and returning one sample, and a row
reports the median of each side's samples. On a noisy shared machine load then
falls on both sides alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import attrs

__all__ = ["Row", "Timing", "interleave", "interleave_metrics", "timed"]


@attrs.frozen
class Row:
    """One line of the results table: a workload, our figure, a reference, their ratio.

    ``target`` is the least acceptable ratio (``None``: no target, the row
    informs); ``rounds`` is how many samples each side's median is taken over.
    """

    workload: str
    ours: float
    reference_name: str
    reference: float
    unit: str
    rounds: int
    target: float | None = None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        """How many times better (>1) or worse (<1) than the reference we are."""
        if self.higher_is_better:
            return self.ours / self.reference if self.reference else float("inf")
        return self.reference / self.ours if self.ours else float("inf")

    @property
    def met(self) -> bool | None:
        """Whether the target is met (``None`` when there is none)."""
        return None if self.target is None else self.ratio >= self.target


@attrs.define
class Timing:
    """Wall-clock and process CPU seconds of one measured region (filled in when it ends)."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timing]:
    """Measure the ``with`` block: wall seconds and this process's CPU seconds (all threads)."""
    timing = Timing()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield timing
    finally:
        timing.wall = time.perf_counter() - wall
        timing.cpu = time.process_time() - cpu


def interleave(sides: Mapping[str, Callable[[], float]], rounds: int, *, warm_up: bool = True) -> dict[str, float]:
    """The median sample of each side over ``rounds`` rounds, every side once per round.

    Each side is a callable that prepares its own work, times only that work
    and returns one sample. The order within a round alternates (forwards,
    then backwards) so neither side always runs right after the other's
    set-up. ``warm_up`` runs every side once first, untimed, for lazy imports
    and caches.
    """
    wrapped = {name: _as_metrics(side) for name, side in sides.items()}
    return {name: m["value"] for name, m in interleave_metrics(wrapped, rounds, warm_up=warm_up).items()}


def interleave_metrics(
    sides: Mapping[str, Callable[[], Mapping[str, float]]], rounds: int, *, warm_up: bool = True
) -> dict[str, dict[str, float]]:
    """:func:`interleave` for sides that measure several figures at once (say, throughput and CPU).

    Each figure's median is taken on its own.
    """
    names = list(sides)
    if warm_up:
        for name in names:
            sides[name]()
    samples: dict[str, list[Mapping[str, float]]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(sides[name]())
    return {
        name: {metric: statistics.median(s[metric] for s in values) for metric in values[0]}
        for name, values in samples.items()
    }


def _as_metrics(side: Callable[[], float]) -> Callable[[], Mapping[str, float]]:
    return lambda: {"value": side()}
