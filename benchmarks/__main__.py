"""Run the benchmarks: ``python -m benchmarks [--quick] [--only core,top] [--write-docs [PAGE]]``.

Each module measures loanstate beside its peers and floors in the same run and
returns :class:`~benchmarks._harness.Row` values; every delivery and store run
is followed by its correctness checks, and a failed check stops the run with
exit status 1. The tables are printed as each module finishes.
``--write-docs`` writes the generated region of docs/performance.md (or of
PAGE) from this run: the machine, the date, every row and every check.
``--quick`` uses tiny sizes: it proves the benchmarks run and their checks
hold; its figures mean nothing, so it never writes the real page.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from benchmarks._checks import PASSED, CheckFailed
from benchmarks._report import ROOT, Section, machine, render, table, write_region

MODULES = {
    "core": "change() on the default machine",
    "top": "Delivery to the open platform (TOP)",
    "store": "The durable path",
    "deliver": "Delivering the outbox",
    "audit": "Auditing a history (loanstate audit)",
    "adopt": "Adopting an existing book",
}
DOCS = ROOT / "docs" / "performance.md"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen modules, print their tables, optionally write the docs page; 1 when a check fails."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that everything runs")
    parser.add_argument("--only", default=",".join(MODULES), help=f"comma-separated subset of {', '.join(MODULES)}")
    parser.add_argument(
        "--write-docs", nargs="?", const=str(DOCS), default=None, metavar="PAGE", help="write the results into PAGE"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark module(s): {', '.join(unknown)}")
    page = Path(args.write_docs).resolve() if args.write_docs else None
    if page == DOCS.resolve() and (args.quick or chosen != list(MODULES)):
        parser.error("only a full run of every module writes docs/performance.md (give --write-docs another PAGE)")
    load = os.getloadavg()
    started = time.perf_counter()
    sections = []
    try:
        for name in chosen:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            section = Section(MODULES[name], module.main(args.quick))
            print(f"\n## {section.title}\n", *table(section.rows), sep="\n", flush=True)
            sections.append(section)
    except CheckFailed as failed:
        print(f"\nCHECK FAILED: {failed}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    report = render(sections, machine(load), PASSED, quick=args.quick, seconds=seconds)
    print("\n## Summary\n\n" + report)
    if page is not None:
        write_region(page, report)
        print(f"wrote the results into {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
