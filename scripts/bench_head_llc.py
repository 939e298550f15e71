#!/usr/bin/env python
"""Per-head LLC: every head's chains in one batched SGLD run against one estimate_llc call per head.

    python scripts/bench_head_llc.py out/quickstart --step 3000 [--repeats 2]

At one checkpoint of a run, with the run's frozen SGLD settings, times (a) the full-model LLC,
(b) ``estimate_restricted_llcs`` over every head in one batched run (what the ``head_llc`` sweep
group runs on CUDA; on a CPU it runs one head at a time, which is (c)) and (c)
``estimate_llc(param_mask=head_mask(...))`` for each head in turn, alternating (b) and (c) so the
machine's load hits both alike. Prints the seconds, the batched speed-up (c)/(b), the cost of all
heads relative to the full LLC, and the largest difference between the two per-head results (they
share minibatches and noise, so they agree up to float summation order).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the last)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import numpy as np
    import torch

    from devinterp.checkpoints import DirectorySource
    from devinterp.config import load_config
    from devinterp.llc import estimate_llc, estimate_restricted_llcs, head_mask, head_masks
    from devinterp.metrics.losses import next_token_loss
    from devinterp.models.attn_only import AttnOnlyTransformer
    from devinterp.sweep.calibration import frozen_llc_settings
    from devinterp.sweep.runner import sweep_data

    torch.set_num_threads(args.threads)
    config = load_config(args.run_dir / "config.yaml")
    source = DirectorySource(args.run_dir / "checkpoints", model=config.recipe.model)
    ckpt = {c.step: c for c in source}[args.step if args.step is not None else source.steps[-1]]
    data = sweep_data(config, source)
    settings = frozen_llc_settings(source, config, args.run_dir)
    model = AttnOnlyTransformer.from_state_dict(data.model, source.load(ckpt))
    masks = head_masks(model)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    full, batched, one_by_one, diff = [], [], [], 0.0
    for _ in range(args.repeats):
        full.append(timed(lambda: estimate_llc(model, data.llc_batches, next_token_loss, settings=settings))[0])
        t, together = timed(lambda: estimate_restricted_llcs(model, data.llc_batches, next_token_loss, masks,
                                                             settings=settings, subsets_per_run=len(masks)))
        batched.append(t)
        t, alone = timed(lambda: {k: estimate_llc(model, data.llc_batches, next_token_loss, settings=settings,
                                                  param_mask=head_mask(model, *k)) for k in masks})
        one_by_one.append(t)
        diff = max(diff, max(abs(together[k].llc - alone[k].llc) for k in masks))
    out = {"step": ckpt.step, "heads": len(masks), "chains": settings.chains,
           "steps_per_chain": settings.burnin + settings.draws * settings.thin, "threads": args.threads,
           "seconds_full_llc": float(np.median(full)), "seconds_all_heads_batched": float(np.median(batched)),
           "seconds_all_heads_one_by_one": float(np.median(one_by_one)),
           "batched_speedup": float(np.median(one_by_one) / np.median(batched)),
           "all_heads_over_full_llc": float(np.median(batched) / np.median(full)),
           "max_abs_llc_difference": diff,
           "head_llcs": {f"L{k[0]}H{k[1]}": round(v.llc, 3) for k, v in together.items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
