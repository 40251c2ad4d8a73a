"""Run every benchmark and print one table: ``python -m benchmarks [--quick] [--only core,top]``.

Each module measures loanstate beside its peers and floors in the same run and
returns :class:`~benchmarks._harness.Row` values; this runner prints each
module's table as it finishes, then all rows together. ``--quick`` uses tiny
sizes: it proves the benchmarks run and their correctness checks (per-loan
order, nothing lost) hold; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from benchmarks._harness import Row, print_table

MODULES = ("core", "top", "store", "audit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that everything runs")
    parser.add_argument("--only", default=",".join(MODULES), help=f"comma-separated subset of {', '.join(MODULES)}")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark module(s): {', '.join(unknown)}")
    rows: list[Row] = []
    started = time.perf_counter()
    for name in chosen:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        rows.extend(module.main(args.quick))
    print_table(f"All workloads ({'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
