#!/usr/bin/env python
"""Reproduce the stages of in-context linear regression (Hoogland et al. 2024, LR1..LR5) on a CPU.

    python scripts/reproduce_icl_regression.py [--config configs/icl-regression.yaml] [--out out]
                                               [--threads 1] [--markdown PATH]

Runs the whole pipeline on the config (train the recipe -> sweep `loss`, `llc`, `position_loss` ->
detect stages -> report), timing each phase, then prints our stages beside the published table of
REFERENCE.md §2.2 (number, type, order, boundaries in log step) and answers two questions:

1. Are the first stages type A (loss down, LLC up)?
2. Does the LLC fall later (the paper's LR3/LR4, type B)?

LLC settings: the config's. Both ICL configs use `calibrate: auto`: calibrate_llc probes six
checkpoints (first, last, quartiles by index, middle by step), and with the locality check
(devinterp.locality, every pair of probes at least half their range apart) rejects delta =
gamma/sqrt(nbeta) up to 10, where the chains forget w* (their mean loss at the loss of predicting 0
up to mid-run), and chooses delta 30 (epsilon 1e-4, gamma 245, nbeta 66.67); the 20k run then finds
A, A, B, A (docs/reproductions.md; an earlier run split the early A into four). When the check
judged only the two extreme probes it chose delta 10 and found A, A, B, B, its first two stages the
loss curve upside down. Earlier, with fixed settings (history, BENCHMARKS.md, issue 7):

* the paper's own SGLD settings (epsilon 3e-4, nbeta 66.67, gamma 6.67; REFERENCE.md §2.2) were
  healthy at every checkpoint but the chains' loss climbed to about that of predicting 0 (locality
  slope 0.17): the estimate read nbeta * (that plateau - L_n(w*)); the 20k run found A, A only;
* `calibrate: auto` before the locality check chose epsilon 5.6e-4, gamma 0.36 (SGLD then diverged
  at 9 of 36 checkpoints mid-run, which no probe saw) or walked down to epsilons too small to move
  the chains; nbeta 1000 gave negative LLCs at mid-run checkpoints.

The run is compressed (20k steps of batch 64 instead of 500k of batch 256), so boundaries are also
compared on the relative log scale log(step + 1) / log(total steps + 1).
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

# REFERENCE.md §2.2: stage ends from [TM]; LLC = mean of 5 seeds of [ICL] llcs.pt; types = sign of dLLC.
PUBLISHED = pd.DataFrame(
    [("LR1", 0, 1_000, "A", 4.1, 19.2), ("LR2", 1_000, 40_000, "A", 19.2, 169.9),
     ("LR3", 40_000, 126_000, "B", 169.9, 156.9), ("LR4", 126_000, 320_000, "B", 156.9, 123.4),
     ("LR5", 320_000, 500_000, "A", 123.4, 127.9)],
    columns=["stage", "start_step", "end_step", "type", "llc_start", "llc_end"])
PAPER_STEPS, PAPER_BATCH = 500_000, 256


def rel_log(step: float, total: int) -> float:
    return math.log10(step + 1) / math.log10(total + 1)


def run_pipeline(config, out: Path, progress: bool) -> dict:
    """train -> sweep -> detect -> report (devinterp.run); returns the phases' seconds from the manifest."""
    from devinterp import api

    timings = api.run(config, out, progress).manifest.get("timings", {})
    return {k.removesuffix("_seconds").replace("run", "total"): v for k, v in timings.items()}


def our_stages(results, total: int) -> pd.DataFrame:
    """Our stages with LLC and loss at their boundaries (from the checkpoints nearest to them)."""
    llc = results.series("llc").set_index("step")
    healthy = llc["healthy"].fillna(True).astype(bool) if "healthy" in llc else pd.Series(True, index=llc.index)
    llc_ok = llc[healthy]["value"]
    loss = results.series("loss").set_index("step")["value"]

    def at(series: pd.Series, step: int) -> float:
        if series.empty:
            return float("nan")
        return float(series.iloc[int(np.argmin(np.abs(series.index.to_numpy() - step)))])

    rows = []
    for s in results.stages.itertuples():
        rows.append({
            "stage": f"S{int(s.stage)}", "start_step": int(s.start_step), "end_step": int(s.end_step),
            "type": s.type, "llc_start": at(llc_ok, s.start_step), "llc_end": at(llc_ok, s.end_step),
            "d_llc": float(s.d_llc), "d_llc_stderr": float(s.d_llc_stderr),
            "loss_start": at(loss, s.start_step), "loss_end": at(loss, s.end_step),
            "confidence": float(s.confidence) if pd.notna(s.confidence) else float("nan"),
        })
    return pd.DataFrame(rows)


def side_by_side(ours: pd.DataFrame, total: int) -> str:
    """Markdown table: published stages beside ours, in order, with boundaries in log10 step and relative log step."""
    n = max(len(PUBLISHED), len(ours))
    lines = ["| # | paper stage | steps | log10 end | rel. log end | type | LLC start→end | "
             "ours | steps | log10 end | rel. log end | type | LLC start→end (ΔLLC ± se) | loss start→end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i in range(n):
        cells = [str(i + 1)]
        if i < len(PUBLISHED):
            p = PUBLISHED.iloc[i]
            cells += [p.stage, f"{p.start_step:,}–{p.end_step:,}", f"{math.log10(p.end_step + 1):.2f}",
                      f"{rel_log(p.end_step, PAPER_STEPS):.2f}", p.type, f"{p.llc_start:.1f} → {p.llc_end:.1f}"]
        else:
            cells += ["—"] * 6
        if i < len(ours):
            o = ours.iloc[i]
            cells += [o.stage, f"{o.start_step:,}–{o.end_step:,}", f"{math.log10(o.end_step + 1):.2f}",
                      f"{rel_log(o.end_step, total):.2f}", o.type,
                      f"{o.llc_start:.1f} → {o.llc_end:.1f} ({o.d_llc:+.1f} ± {o.d_llc_stderr:.2g})",
                      f"{o.loss_start:.3f} → {o.loss_end:.3f}"]
        else:
            cells += ["—"] * 7
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answers(ours: pd.DataFrame, results) -> list[str]:
    from devinterp.locality import locality_line

    out = []
    types = "".join(ours["type"]) if len(ours) else ""
    out.append(f"stage types in order: ours {types or '(none)'}, paper {''.join(PUBLISHED['type'])}; "
               f"number of stages: ours {len(ours)}, paper {len(PUBLISHED)}")
    out.append(locality_line(results.metrics))
    lead = ours["type"].iloc[:2].tolist() if len(ours) else []
    q1 = len(lead) > 0 and all(t == "A" for t in lead)
    out.append(f"Q1 first stages type A? {'YES' if q1 else 'NO'} (first two of ours: {lead or 'none'})")
    first_b = next((i for i, t in enumerate(ours["type"]) if t == "B"), None)
    after_a = first_b is not None and "A" in ours["type"].iloc[:first_b].tolist()
    llc = results.series("llc")
    if "healthy" in llc:
        llc = llc[llc["healthy"].fillna(True).astype(bool)]
    peak = llc.loc[llc["value"].idxmax()] if len(llc) else None
    last = llc.iloc[-1] if len(llc) else None
    drop = ""
    if peak is not None:
        se = math.hypot(float(peak["stderr"] or 0), float(last["stderr"] or 0))
        drop = (f"; LLC peak {peak['value']:.1f} at step {int(peak['step']):,}, last {last['value']:.1f} at step "
                f"{int(last['step']):,} (change {last['value'] - peak['value']:+.1f} ± {se:.1f})")
    out.append(f"Q2 LLC falls later (a type-B stage after type A)? {'YES' if after_a else 'NO'}"
               + (f" (first B: {ours['stage'].iloc[first_b]}, steps {ours['start_step'].iloc[first_b]:,}–"
                  f"{ours['end_step'].iloc[first_b]:,})" if first_b is not None else "") + drop)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/icl-regression.yaml")
    parser.add_argument("--out", default="out")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (sweep.threads), 1 on a shared CPU")
    parser.add_argument("--markdown", default=None, help="also write the result tables to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from devinterp.cli import configure_logging

    configure_logging(args.quiet)  # calibration and checkpoint lines, as the CLI

    import torch

    from devinterp import load_results
    from devinterp.config import load_config

    config = load_config(args.config)
    config = config.model_copy(update={"sweep": config.sweep.model_copy(update={"threads": args.threads})})
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    timings = run_pipeline(config, out, progress=not args.quiet)
    run_dir = out / config.name
    results = load_results(run_dir)
    total = config.recipe.train.steps
    ours = our_stages(results, total)

    import json

    settings = json.loads((run_dir / "llc_settings.json").read_text())
    training = json.loads((run_dir / "training.json").read_text()) if (run_dir / "training.json").is_file() else {}
    lines = [f"command: python scripts/reproduce_icl_regression.py --config {args.config} --threads {args.threads}",
             f"date: {date.today().isoformat()}; machine: {config.device}, torch threads {args.threads}",
             "timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
             f"training: {total:,} steps x batch {config.recipe.train.batch_size} "
             f"({total * config.recipe.train.batch_size:,} sequences; paper {PAPER_STEPS:,} x {PAPER_BATCH} = "
             f"{PAPER_STEPS * PAPER_BATCH:,}); final held-out MSE {training.get('final_eval_loss', float('nan')):.3f} "
             f"(predict 0: {training.get('baseline_zero_loss', float('nan')):.3f}, Bayes-optimal ridge: "
             f"{training.get('baseline_ridge_loss', float('nan')):.3f})",
             f"LLC settings: {settings.get('choice')}",
             "", side_by_side(ours, total), ""] + answers(ours, results)
    text = "\n".join(lines)
    print(text)
    llc = results.series("llc")[["step", "value", "stderr", "healthy"]].rename(columns={"value": "llc"})
    loss = results.series("loss")[["step", "value"]].rename(columns={"value": "loss"})
    print("\nper checkpoint:\n" + loss.merge(llc, on="step", how="outer").to_string(index=False))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
