#!/usr/bin/env python
"""Common random numbers: the error of LLC differences between neighbouring checkpoints.

    python scripts/bench_crn.py out/quickstart --steps 2500,2575 --seeds 6

Estimates the LLC at two adjacent checkpoints with seeds 0..K-1 (the run's frozen settings). With
common random numbers the two checkpoints share a seed (same minibatches, same noise); without,
they use different seeds. Prints the standard deviation of the difference across repeats in both
cases and their ratio, and the per-checkpoint spread for scale.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--steps", default="2500,2575", help="two adjacent checkpoint steps")
    p.add_argument("--seeds", type=int, default=6)
    args = p.parse_args()
    import torch

    from devinterp.api import checkpoint_source
    from devinterp.config import load_config
    from devinterp.llc import estimate_llc
    from devinterp.metrics.losses import next_token_loss
    from devinterp.models.attn_only import AttnOnlyTransformer
    from devinterp.sweep.runner import sweep_data

    torch.set_num_threads(1)
    config = load_config(f"{args.run_dir}/config.yaml")
    source = checkpoint_source(config, str(config.checkpoints or "out") if config.checkpoints else
                               str(__import__("pathlib").Path(args.run_dir).parent))
    data = sweep_data(config, source)
    steps = [int(s) for s in args.steps.split(",")]
    by_step = {c.step: c for c in source}
    llc = np.zeros((len(steps), args.seeds))
    for i, step in enumerate(steps):
        model = AttnOnlyTransformer.from_state_dict(data.model, source.load(by_step[step]))
        for s in range(args.seeds):
            llc[i, s] = estimate_llc(model, data.llc_batches, next_token_loss, settings=data.llc_settings, seed=s).llc
    crn = llc[1] - llc[0]
    indep = llc[1] - np.roll(llc[0], 1)  # pair seed s with seed s-1: independent randomness
    out = {"steps": steps, "seeds": args.seeds, "sd_llc_per_checkpoint": llc.std(axis=1, ddof=1).tolist(),
           "sd_diff_crn": float(crn.std(ddof=1)), "sd_diff_independent": float(indep.std(ddof=1)),
           "ratio_independent_over_crn": float(indep.std(ddof=1) / crn.std(ddof=1))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
