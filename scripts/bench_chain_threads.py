#!/usr/bin/env python
"""Chain slices on worker threads vs one thread pool for all chains: ``estimate_llc`` on the quickstart
model (BENCHMARKS.md, "CPU, quickstart model"), float32 and bf16, alternating in one process.

Same work as scripts/bench_llc.py (1,024 sequences, 4 chains x 200 draws, batch 32, eps 1e-4, gamma
100, nbeta 9.233, 32 init-loss batches). "one pool" sets ``run_chains``' worker count to 1, so every
kernel of the 4-chain step is split over the torch threads (the behaviour before chain_threads).
Printed: chain-steps/s of each variant per round (whole call, init loss included) and the LLC.

    .venv/bin/python scripts/bench_chain_threads.py [--checkpoint out/quickstart/checkpoints/3000.safetensors] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_llc import prepare

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    default_ckpt = REPO / "out" / "quickstart" / "checkpoints" / "3000.safetensors"
    p.add_argument("--checkpoint", type=Path, default=default_ckpt if default_ckpt.exists() else None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    import devinterp.llc.sgld as sgld
    from devinterp.llc import estimate_llc
    from devinterp.metrics.losses import next_token_loss

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        _, model, tokens = prepare(Path(tmp), args.checkpoint, 1024)
    batches = list(tokens.split(32))
    kw = dict(chains=4, draws=200, batch_size=32, init_loss_batches=32, burnin=0, epsilon=1e-4, gamma=100.0,
              nbeta=9.233)
    threaded = sgld.worker_count
    for r in range(args.rounds):
        for dt in ("float32", "bfloat16"):
            for name, count in (("one pool", lambda chains, device: 1), ("slices", threaded)):
                sgld.worker_count = count
                estimate_llc(model, batches, next_token_loss, **{**kw, "draws": 5, "init_loss_batches": 1,
                                                                 "compute_dtype": dt})  # warm-up
                t0 = time.perf_counter()
                res = estimate_llc(model, batches, next_token_loss, compute_dtype=dt, **kw)
                rate = 800 / (time.perf_counter() - t0)
                print(f"round {r + 1} {dt:8s} {name:8s} {rate:7.1f} chain-steps/s  llc {res.llc:.4f}", flush=True)
    sgld.worker_count = threaded


if __name__ == "__main__":
    main()
