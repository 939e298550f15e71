"""Does densifying one window (what `devinterp refine` does) change detection elsewhere?

On planted-stage sweeps (devinterp.transitions.synthetic) drawn on a fine grid, detection runs
on a base grid (every ``--every``-th checkpoint) and on the base grid plus every fine
checkpoint within ``--halfwidth`` base checkpoints of one planted boundary (the refine window),
there twice: with the smoother fitted anew ("refined") and with the base grid's smoother rebuilt on
the refined grid ("frozen", ``detect_stages(smoother=...)``). Prints, over all sweeps:

* recall and precision against the planted boundaries, within ±1 base-grid checkpoint, on each grid;
* boundaries found outside the window on the base grid: how many the refined detection keeps in the
  same place (the same gap between base checkpoints), moves by one base checkpoint, or drops (and
  how many of those were planted), and the new ones it adds there (and how many are planted);
* at the refined boundary: the share found within 1 fine-grid checkpoint, and the median error.

    .venv/bin/python scripts/bench_refine_detect.py --sweeps 40 --seed 0   # and --seed 1, 2

The real quickstart's refinement changed boundaries outside its window (BENCHMARKS.md, "Refining
boundaries"); this measures how often that happens on smooth planted curves, where it should not.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread settings)

from devinterp.transitions import detect_stages  # noqa: E402
from devinterp.transitions.synthetic import planted_sweep  # noqa: E402


def boundary_steps(metrics, smoother=None) -> tuple[list[int], dict]:
    """Steps of the detected boundaries (start steps of stages 2...) and the smoothers used."""
    stages = detect_stages(metrics, bootstrap=0, smoother=smoother)
    return [int(s) for s in stages.start_step.iloc[1:]], stages.attrs["smoother"]


def base_slot(step: int, base_steps: np.ndarray) -> int:
    """Which gap of the base grid a step falls in (its insertion index): equal slots = same place
    to the base grid's resolution."""
    return int(np.searchsorted(base_steps, step))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweeps", type=int, default=40, help="planted sweeps (default: 40)")
    ap.add_argument("--seed", type=int, default=0, help="default: 0")
    ap.add_argument("--every", type=int, default=3, help="base grid = every k-th fine checkpoint (default: 3)")
    ap.add_argument("--halfwidth", type=int, default=2,
                    help="refine window: this many base checkpoints each side of the boundary (default: 2)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    warnings.simplefilter("ignore")  # per-sweep notes (e.g. residual bootstrap) are not the point here
    t0 = time.perf_counter()
    variants = ("base", "refined", "frozen")  # frozen: refined grid, the base grid's smoother (what refine does)
    hits, found = dict.fromkeys(variants, 0), dict.fromkeys(variants, 0)
    n_true, outside_base = 0, 0
    kept, shifted, added, added_true, lost_true = ({v: 0 for v in variants[1:]} for _ in range(5))
    err = {v: [] for v in variants}
    for _ in range(args.sweeps):
        p = planted_sweep(rng, n=int(rng.integers(90, 200)))
        steps = p.steps
        base_idx = np.arange(0, len(steps), args.every)
        if base_idx[-1] != len(steps) - 1:
            base_idx = np.append(base_idx, len(steps) - 1)
        target = p.boundaries[int(rng.integers(len(p.boundaries)))]
        j = int(np.searchsorted(base_idx, target))
        lo = base_idx[max(j - args.halfwidth, 0)]
        hi = base_idx[min(j + args.halfwidth, len(base_idx) - 1)]
        refined = np.union1d(base_idx, np.arange(lo, hi + 1))
        grids = {"base": base_idx, "refined": refined, "frozen": refined}
        base_steps = steps[base_idx]
        truth = [int(steps[b]) for b in p.boundaries]
        n_true += len(truth)
        detected, smoother = {}, None
        for name, idx in grids.items():
            table = p.metrics[p.metrics.step.isin(steps[idx])]
            detected[name], used = boundary_steps(table, smoother if name == "frozen" else None)
            if name == "base":
                smoother = used
            found[name] += len(detected[name])
            slots = {base_slot(f, base_steps) for f in detected[name]}
            hits[name] += sum(any(abs(base_slot(t, base_steps) - s) <= 1 for s in slots) for t in truth)
            fine = [int(np.searchsorted(steps, f)) for f in detected[name]]
            err[name].append(min((abs(f - target) for f in fine), default=np.inf))
        inside = lambda s: steps[lo] <= s <= steps[hi]  # noqa: E731
        out_base = {base_slot(f, base_steps) for f in detected["base"] if not inside(f)}
        true_slots = {base_slot(t, base_steps) for t in truth}
        is_true = lambda s: any(abs(s - t) <= 1 for t in true_slots)  # noqa: E731
        outside_base += len(out_base)
        for v in variants[1:]:
            out_ref = {base_slot(f, base_steps) for f in detected[v] if not inside(f)}
            kept[v] += len(out_base & out_ref)
            moved = {s for s in out_base - out_ref if any(abs(s - r) <= 1 for r in out_ref)}
            shifted[v] += len(moved)
            lost_true[v] += sum(is_true(s) for s in out_base - out_ref - moved)
            new = {r for r in out_ref - out_base if not any(abs(r - s) <= 1 for s in out_base)}
            added[v] += len(new)
            added_true[v] += sum(is_true(r) for r in new)
    result = {"sweeps": args.sweeps, "seconds": time.perf_counter() - t0, "outside_base": outside_base,
              **{v: {"kept": kept[v], "shifted": shifted[v], "added": added[v], "added_true": added_true[v],
                     "lost_true": lost_true[v]} for v in variants[1:]}}
    print(f"{args.sweeps} planted sweeps, seed {args.seed}, base grid every {args.every}, window ±{args.halfwidth} "
          f"base checkpoints ({result['seconds']:.1f} s)")
    print(f"{'grid':<8} {'recall':>7} {'precision':>9} {'window boundary within 1 fine ckpt':>35} {'median error':>13}")
    for name in variants:
        e = np.array(err[name])
        rec, prec = hits[name] / n_true, hits[name] / max(found[name], 1)
        result.setdefault(name, {}).update({"recall": rec, "precision": prec, "window_within_1": float(np.mean(e <= 1)),
                                            "window_median_error": float(np.median(e))})
        print(f"{name:<8} {rec:7.3f} {prec:9.3f} {np.mean(e <= 1):35.2f} {np.median(e):13.1f}")
    for v in variants[1:]:
        print(f"outside the window ({v}): {outside_base} boundaries on the base grid; after refining {kept[v]} in "
              f"the same place, {shifted[v]} moved by one base checkpoint, {outside_base - kept[v] - shifted[v]} "
              f"gone ({lost_true[v]} of them planted); {added[v]} new ({added_true[v]} of them planted)")
    return result


if __name__ == "__main__":
    main()
