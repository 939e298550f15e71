#!/usr/bin/env python
"""Stages of the published language-model curves (Hoogland et al. 2024), found with default settings.

    python scripts/published_report.py [--out out/hoogland2024-lm] [--png docs/img/hoogland-stages.png]

Reads ../shared/data/hoogland2024-lm/metrics.csv (the authors' released per-checkpoint LLC, loss
and head scores, in our metrics-table format), runs ``detect_stages`` with default settings,
prints the stages table, and writes the HTML report (and, with ``--png``, the overview figure,
which needs kaleido and Chromium).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "hoogland2024-lm" / "metrics.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=REPO / "out" / "hoogland2024-lm")
    p.add_argument("--png", type=Path, default=None, help="also write the overview figure here")
    args = p.parse_args()
    from devinterp import _io
    from devinterp.report import render_report
    from devinterp.report.figures import overview_figure, static_figure
    from devinterp.results import Results
    from devinterp.tables import normalize_metrics
    from devinterp.transitions import detect_stages

    metrics = normalize_metrics(pd.read_csv(args.data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stages = detect_stages(metrics)
    print(stages.drop(columns=["run"]).to_string(index=False))
    args.out.mkdir(parents=True, exist_ok=True)
    _io.write_csv(args.out / "stages.csv", stages)
    results = Results(metrics=metrics, stages=stages, manifest={"run": "hoogland2024-lm", "source": str(args.data)})
    print(f"report: {render_report(results, args.out / 'report.html', step_axis='log')}")
    if args.png is not None:
        fig = overview_figure(metrics, stages, step_axis="log",
                              title="hoogland2024-lm: published curves, stages found with default settings")
        static_figure(fig, width=1100).write_image(str(args.png), scale=1)
        print(f"figure: {args.png}")


if __name__ == "__main__":
    main()
