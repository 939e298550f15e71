#!/usr/bin/env python
"""Are a run's LLC estimates at equilibrium? Re-estimate some checkpoints with k x longer chains.

    python scripts/llc_horizon.py out/quickstart --steps 243,1225 [--factors 1,4]

For each checkpoint of a finished run, with the run's frozen SGLD settings (llc_settings.json),
estimates the LLC with burn-in and draws both multiplied by each factor (1 = as swept) and prints
the estimate, its total stderr, the health verdict and the change against factor 1 in stderrs and
percent. The diagnostics judge a trace by its own length; a slow drift shows only over a longer
horizon, so an estimate that moves by more than its noise (or the 10% the trend check tolerates)
when the chains run longer was not at equilibrium. Nothing is written.
"""
import argparse
import json
import math
import time

import torch

from devinterp.checkpoints import DirectorySource
from devinterp.config import LLCSettings, load_config
from devinterp.llc import estimate_llc
from devinterp.models.families import family
from devinterp.sweep.calibration import FILE as SETTINGS_FILE
from devinterp.sweep.runner import sweep_data

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run_dir")
p.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
p.add_argument("--factors", default="1,4", help="chain-length factors; the first is the reference (default: 1,4)")
p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
args = p.parse_args()
torch.set_num_threads(args.threads)
cfg = load_config(f"{args.run_dir}/config.yaml")
settings_path = f"{args.run_dir}/{SETTINGS_FILE}"
try:
    settings = LLCSettings.model_validate(json.load(open(settings_path))["settings"])
except (OSError, KeyError, TypeError, ValueError) as err:
    raise SystemExit(f"{settings_path}: no frozen SGLD settings ({err}); sweep the run first")
src = DirectorySource(f"{args.run_dir}/checkpoints")
data = sweep_data(cfg, src)
build = family(data.model).build_fast
factors = [float(f) for f in args.factors.split(",")]
print(f"settings: epsilon {settings.epsilon:.3g}, gamma {settings.gamma:.4g}, nbeta {settings.nbeta:.4g}, "
      f"chains {settings.chains}, burnin {settings.burnin}, draws {settings.draws}")
for step in [int(s) for s in args.steps.split(",")]:
    ckpt = next((c for c in src if c.step == step), None)
    if ckpt is None:
        raise SystemExit(f"{args.run_dir}/checkpoints: no checkpoint at step {step}")
    model = build(data.model, src.load(ckpt))
    ref = None
    for f in factors:
        t = time.perf_counter()
        r = estimate_llc(model, data.llc_batches, data.loss_fn, settings=settings,
                         burnin=max(1, round(settings.burnin * f)), draws=max(2, round(settings.draws * f)))
        line = (f"step {step} x{f:g} (burnin {max(1, round(settings.burnin * f))}, draws "
                f"{max(2, round(settings.draws * f))}): llc {r.llc:.4g} ± {r.total_stderr:.2g}, "
                f"{'healthy' if r.healthy else 'UNHEALTHY: ' + '; '.join(r.reasons)}")
        if ref is None:
            ref = r
        else:
            se = math.hypot(ref.total_stderr, r.total_stderr)
            line += (f"; change {r.llc - ref.llc:+.3g} = {(r.llc - ref.llc) / se:+.1f} se, "
                     f"{(r.llc - ref.llc) / abs(ref.llc):+.0%}")
        print(line + f" ({time.perf_counter() - t:.0f} s)", flush=True)
