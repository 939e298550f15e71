"""Benchmark stage detection on planted-stage sweeps (devinterp.transitions.synthetic).

Prints boundary precision / recall / F1 within ±tolerance checkpoints, type accuracy (the detected
stage containing each planted stage's middle checkpoint has the planted type), the share of
stages whose planted head is named, and false stages per null sweep (no planted stage).

    .venv/bin/python scripts/bench_detect.py --sweeps 60 --nulls 40 --seed 0   # and --seed 1, 2

The work is many small matrix products, so BLAS threads only fight each other (and other
processes on a shared box): the script asks for one thread unless OMP_NUM_THREADS is set.
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


def match(true: list[int], found: list[int], tol: int) -> int:
    """Greedy one-to-one matches within ``tol`` checkpoints."""
    used, hits = set(), 0
    for t in true:
        best = [f for f in found if abs(f - t) <= tol and f not in used]
        if best:
            used.add(min(best, key=lambda f: abs(f - t)))
            hits += 1
    return hits


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweeps", type=int, default=60, help="planted sweeps with stages")
    ap.add_argument("--nulls", type=int, default=40, help="null sweeps (no stage)")
    ap.add_argument("--method", default=None, help="detector (default: DetectConfig's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=int, default=1, help="checkpoints")
    ap.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples per sweep (slower)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    settings = {"bootstrap": args.bootstrap}
    if args.method:
        settings["method"] = args.method
    rng = np.random.default_rng(args.seed)
    tp = n_true = n_found = 0
    type_ok = type_n = head_ok = head_n = 0
    t0 = time.time()
    for k in range(args.sweeps):
        p = planted_sweep(rng, run=f"planted{k}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = detect_stages(p.metrics, **settings)
        index = {int(s): i for i, s in enumerate(p.steps)}
        found = [index[int(s)] for s in st["start_step"].iloc[1:]]
        hits = match(p.boundaries, found, args.tolerance)
        tp += hits
        n_true += len(p.boundaries)
        n_found += len(found)
        edges = [1 if p.steps[0] == 0 else 0, *p.boundaries, len(p.steps) - 1]
        for j, t in enumerate(p.types):
            mid = p.steps[(edges[j] + edges[j + 1]) // 2]
            row = st[(st["start_step"] <= mid) & (st["end_step"] >= mid)].iloc[0]
            type_ok += row["type"] == t
            type_n += 1
            if row["heads"]:
                head_ok += p.heads[j] in row["heads"].split(",")
            head_n += 1
        if args.verbose:
            print(f"{k:3d} n={len(p.steps):3d} true={p.boundaries} {''.join(p.types)} found={found} "
                  f"{''.join(st['type'])} conf={list(st['confidence'].round(2))[1:]}")
    false = 0
    for k in range(args.nulls):
        p = planted_sweep(rng, null=True, run=f"null{k}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = detect_stages(p.metrics, **settings)
        false += len(st) - 1
        if args.verbose and len(st) > 1:
            print(f"null {k}: {len(st) - 1} false boundaries at {list(st['start_step'].iloc[1:])}")
    precision = tp / n_found if n_found else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"precision": precision, "recall": recall, "f1": f1, "type_accuracy": type_ok / max(type_n, 1),
           "head_recall": head_ok / max(head_n, 1), "false_stages_per_null": false / max(args.nulls, 1),
           "seconds": time.time() - t0}
    print(f"method={settings.get('method', 'default')} sweeps={args.sweeps} nulls={args.nulls} "
          f"tolerance=±{args.tolerance} checkpoint(s) seed={args.seed}")
    print(f"boundaries: precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}  "
          f"(true {n_true}, found {n_found}, matched {tp})")
    print(f"type accuracy {out['type_accuracy']:.3f} ({type_ok}/{type_n})   planted head named {out['head_recall']:.3f}")
    print(f"false stages per null sweep {out['false_stages_per_null']:.3f} ({false} in {args.nulls})")
    print(f"time {out['seconds']:.1f} s")
    return out


if __name__ == "__main__":
    main()
