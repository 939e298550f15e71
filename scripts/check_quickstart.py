#!/usr/bin/env python
"""Check a finished quickstart run against issue 2's acceptance criteria and print the evidence.

    python scripts/check_quickstart.py out/quickstart

1. The window where the best layer-1 induction head's score rises from 10% to 90% of its final
   value (measured from its first value: score = first + f * (final - first)).
2. A stage boundary within one checkpoint of that window.
3. The stage containing the middle of the rise is labelled A, and which heads it names.
Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import sys

import numpy as np

from devinterp import load_results


def rise_window(steps: np.ndarray, score: np.ndarray, lo: float = 0.1, hi: float = 0.9) -> tuple[int, int]:
    """First checkpoint indices where ``score`` reaches lo and hi of its rise from first to final value."""
    first, final = score[0], score[-1]
    frac = (score - first) / (final - first)
    return int(np.argmax(frac >= lo)), int(np.argmax(frac >= hi))


def main(run_dir: str) -> int:
    r = load_results(run_dir)
    ind = r.wide("induction")
    layer1 = [c for c in ind.columns if c.startswith("L1")]
    best = ind[layer1].iloc[-1].idxmax()
    steps = ind.index.to_numpy()
    i10, i90 = rise_window(steps, ind[best].to_numpy())
    print(f"best layer-1 induction head {best}: final score {ind[best].iloc[-1]:.3f}; "
          f"10% -> 90% of its rise at steps {steps[i10]} -> {steps[i90]} (checkpoints {i10} -> {i90})")
    stages = r.stages
    print(stages[["stage", "start_step", "end_step", "type", "d_loss", "d_llc", "d_llc_stderr", "confidence", "heads"]]
          .to_string(index=False))
    boundaries = sorted(set(stages["start_step"].iloc[1:]) | set(stages["end_step"].iloc[:-1]))
    idx = {s: k for k, s in enumerate(steps)}
    near = [b for b in boundaries if b in idx and i10 - 1 <= idx[b] <= i90 + 1]
    mid = steps[(i10 + i90) // 2]
    containing = stages[(stages["start_step"] <= mid) & (stages["end_step"] >= mid)]
    ok_boundary = bool(near)
    ok_type = len(containing) > 0 and containing["type"].iloc[0] == "A"
    print(f"boundaries within one checkpoint of the window: {near or 'none'} -> {'OK' if ok_boundary else 'FAIL'}")
    if len(containing):
        print(f"stage containing the middle of the rise (step {mid}): stage {containing['stage'].iloc[0]}, "
              f"type {containing['type'].iloc[0]}, heads {containing['heads'].iloc[0]} -> {'OK' if ok_type else 'FAIL'}")
    return 0 if ok_boundary and ok_type else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "out/quickstart"))
