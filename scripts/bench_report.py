"""Benchmark: render the HTML report of a synthetic 200-checkpoint, 2-layer x 8-head sweep.

Budget (issue 6): generation < 10 s and the HTML < 15 MB. The sweep has every per-head metric
(prev_token, induction, duplicate_token, head_llc) and per-chain LLC rows for 4 chains.

    .venv/bin/python scripts/bench_report.py [--checkpoints 200] [--out /tmp/bench_report.html]

Prints the table size, the time to build the report (figures + HTML + atomic write) and its size;
exits 1 when a budget is exceeded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from devinterp.report import render_report
from devinterp.report.synthetic import synthetic_run

TIME_BUDGET_S = 10.0
SIZE_BUDGET_MB = 15.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=200)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: a temp dir)")
    args = parser.parse_args(argv)

    results = synthetic_run(n_checkpoints=args.checkpoints, n_layers=2, n_heads=8, chains=args.chains)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_report_")) / "report.html"
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        render_report(results, out)
        times.append(time.perf_counter() - start)
    size_mb = out.stat().st_size / 1e6
    best = min(times)
    print(f"table: {len(results.metrics):,} rows, {results.metrics['step'].nunique()} checkpoints, "
          f"{args.chains} chains, 2x8 heads")
    print(f"report: {best:.2f} s (best of {args.repeats}; all {', '.join(f'{t:.2f}' for t in times)}), "
          f"{size_mb:.2f} MB -> {out}")
    ok = best < TIME_BUDGET_S and size_mb < SIZE_BUDGET_MB
    print(f"budget: < {TIME_BUDGET_S:g} s and < {SIZE_BUDGET_MB:g} MB: {'OK' if ok else 'EXCEEDED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
