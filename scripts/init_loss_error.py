#!/usr/bin/env python
"""How much the init loss L_n(w*) moves an LLC when it is taken from a few batches instead of all data.

    python scripts/init_loss_error.py out/quickstart --steps 1075,3000 [--batches 16]

For each checkpoint of a finished run, with the run's frozen SGLD settings, computes L_n(w*) from
``--batches`` batches and from all the SGLD sequences (the default since 2026-11-27) and prints both,
the partial one's standard error, and nbeta times the error and times the difference: the shift in
LLC that the partial init loss causes. The chains are cut to one step (only the init loss is read).
Nothing is written.
"""
import argparse

import torch

from devinterp.checkpoints import DirectorySource
from devinterp.config import load_config
from devinterp.llc import estimate_llc
from devinterp.models.families import family
from devinterp.sweep.runner import sweep_data

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run_dir")
p.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
p.add_argument("--batches", type=int, default=16, help="batches of the partial init loss (default: 16)")
args = p.parse_args()
torch.set_num_threads(1)
cfg = load_config(f"{args.run_dir}/config.yaml")
src = DirectorySource(f"{args.run_dir}/checkpoints")
data = sweep_data(cfg, src)
build = family(data.model).build_fast
settings = cfg.sweep.llc
for step in [int(s) for s in args.steps.split(",")]:
    ckpt = next(c for c in src if c.step == step)
    model = build(data.model, src.load(ckpt))
    one_step = dict(chains=1, burnin=0, draws=1)
    part = estimate_llc(model, data.llc_batches, data.loss_fn, settings=settings, init_loss_batches=args.batches,
                        **one_step)
    full = estimate_llc(model, data.llc_batches, data.loss_fn, settings=settings, init_loss_batches=None, **one_step)
    nbeta = full.nbeta
    print(f"step {step}: L_n(w*) all {full.init_loss:.4f}, {args.batches} batches {part.init_loss:.4f} ± "
          f"{part.init_loss_stderr:.4f}; nbeta {nbeta:g} x se = {nbeta * part.init_loss_stderr:.1f}, "
          f"x difference = {nbeta * (part.init_loss - full.init_loss):+.1f}", flush=True)
