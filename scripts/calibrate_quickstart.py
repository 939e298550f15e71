#!/usr/bin/env python
"""What `sweep.calibrate: auto` chooses on a finished run's checkpoints (default: the quickstart).

    python scripts/calibrate_quickstart.py [out/quickstart] [--epsilons 1e-4,3e-5,1e-5]

Builds the run's sweep data, probes the checkpoints the sweep would (first, middle by index and by
step, last) and runs calibrate_llc with the run's other SGLD settings, printing one line per run
and the choice. Nothing is written.
"""
import argparse
import time

import torch

from devinterp.checkpoints import DirectorySource
from devinterp.config import load_config
from devinterp.llc import calibrate_llc
from devinterp.models.families import family
from devinterp.sweep.calibration import probe_checkpoints
from devinterp.sweep.runner import sweep_data

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run_dir", nargs="?", default="out/quickstart")
p.add_argument("--epsilons", default="1e-4,3e-5,1e-5", help="candidate step sizes (default grid: pass 'default')")
args = p.parse_args()
torch.set_num_threads(1)
cfg = load_config(f"{args.run_dir}/config.yaml")
src = DirectorySource(f"{args.run_dir}/checkpoints")
data = sweep_data(cfg, src)
probes = probe_checkpoints(src)
print("probes", [c.step for c in probes], flush=True)
build = family(data.model).build_fast
models = [build(data.model, src.load(c)) for c in probes]
epsilons = None if args.epsilons == "default" else [float(e) for e in args.epsilons.split(",")]
t = time.time()
s = calibrate_llc(models, data.llc_batches, data.loss_fn, settings=cfg.sweep.llc, epsilons=epsilons,
                  log=lambda m: print(m, flush=True))
print(round(time.time() - t), "s:", s.choice)
# the work done, machine-independent: full-length runs are chains x (burnin + draws) chain-steps, screens
# that stayed finite chains x 200 (a non-finite screen stops at once)
reasons = [str(r.get("reasons") or "") for r in s.table]
full = [r for r, why in zip(s.table, reasons) if r.get("model") is not None and not why.startswith("screened")]
screens = [why for why in reasons if why.startswith("screened")]
finite = [why for why in screens if "non-finite" not in why]
steps = sum(s.chains * (r["burnin"] + r["draws"] * s.thin) for r in full) + s.chains * 200 * len(finite)
print(f"work: {len(full)} full-length runs, {len(screens)} screening runs ({len(finite)} finite): {steps:,} chain-steps")
