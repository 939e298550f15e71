#!/usr/bin/env python
"""Try SGLD settings on a run's checkpoints and print LLC, chain loss and health for each.

    python scripts/llc_settings_grid.py out/quickstart --steps 925,3000 --epsilons 1e-5,3e-5 \\
        --gammas 1000 --nbeta 1000 --burnin 50 --draws 100

Used to choose the quickstart's frozen settings (BENCHMARKS.md, "LLC settings for the
quickstart"): a good setting keeps the chain loss (mean sampled loss) near L_n(w*) — below the
chance level ln(d_vocab) — and passes the diagnostics at trained checkpoints. SGLD data: the
sweep's own LLC data set (``sweep.llc_sequences`` held-out sequences), batch ``--batch-size``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    p.add_argument("--epsilons", required=True)
    p.add_argument("--gammas", required=True)
    p.add_argument("--nbeta", type=float, default=None, help="default n/log n (n = SGLD sequences)")
    p.add_argument("--burnin", type=int, default=50)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    import torch

    from devinterp.api import checkpoint_source
    from devinterp.config import LLCSettings, load_config
    from devinterp.llc import estimate_llc
    from devinterp.metrics.losses import next_token_loss
    from devinterp.models.attn_only import AttnOnlyTransformer
    from devinterp.sweep.runner import sweep_data

    torch.set_num_threads(1)
    config = load_config(args.run_dir / "config.yaml")
    source = checkpoint_source(config, args.run_dir.parent)
    data = sweep_data(config, source)
    by_step = {c.step: c for c in source}
    chance = math.log(data.model.d_vocab)
    print(f"chance level ln({data.model.d_vocab}) = {chance:.3f}")
    for step in (int(s) for s in args.steps.split(",")):
        model = AttnOnlyTransformer.from_state_dict(data.model, source.load(by_step[step]))
        for gamma in (float(g) for g in args.gammas.split(",")):
            for eps in (float(e) for e in args.epsilons.split(",")):
                settings = LLCSettings(epsilon=eps, gamma=gamma, nbeta=args.nbeta, chains=args.chains,
                                       burnin=args.burnin, draws=args.draws, batch_size=args.batch_size)
                t0 = time.perf_counter()
                r = estimate_llc(model, data.llc_batches, next_token_loss, settings=settings)
                print(f"step {step} eps {eps:g} gamma {gamma:g} nbeta {r.nbeta:.1f}: LLC {r.llc:.2f} ± {r.stderr:.2f}; "
                      f"L_n(w*) {r.init_loss:.3f}, chain loss {r.loss_trace.mean():.3f}; "
                      f"{'healthy' if r.healthy else 'UNHEALTHY: ' + '; '.join(x.split(':')[0] for x in r.reasons)}; "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
