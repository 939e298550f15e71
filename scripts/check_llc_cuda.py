#!/usr/bin/env python
"""Device check of the LLC estimator on CUDA: backends agree, same seed -> same result, throughput.

    python scripts/check_llc_cuda.py   (prints one JSON line per check; exits 1 if a check fails)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from devinterp.config import ModelConfig
from devinterp.llc import estimate_llc
from devinterp.metrics.losses import next_token_loss
from devinterp.models.attn_only import AttnOnlyTransformer


def main() -> int:
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False}))
        return 1
    dev = torch.device("cuda")
    ok = True
    torch.manual_seed(0)
    model = AttnOnlyTransformer(ModelConfig()).to(dev)
    tokens = torch.randint(0, 64, (1024, 64), generator=torch.Generator().manual_seed(1))
    batches = list(tokens.split(32))
    kw = dict(chains=4, burnin=20, draws=50, batch_size=32, epsilon=1e-5, gamma=100.0)
    a = estimate_llc(model, batches, next_token_loss, **kw)
    b = estimate_llc(model, batches, next_token_loss, **kw)
    v = estimate_llc(model, batches, next_token_loss, backend="vmap", **kw)
    same = bool(np.array_equal(a.loss_trace, b.loss_trace))
    agree = float(np.abs(a.loss_trace - v.loss_trace).max())
    ok &= same and agree < 1e-3
    print(json.dumps({"device": torch.cuda.get_device_name(), "backend": a.backend, "llc": a.llc,
                      "vmap_llc": v.llc, "same_seed_identical": same, "max_trace_diff_fused_vs_vmap": agree}))
    for dtype in ("float32", "bfloat16"):
        for chains in (4, 16):
            t0 = time.perf_counter()
            r = estimate_llc(model, batches, next_token_loss, **{**kw, "chains": chains, "burnin": 0, "draws": 200},
                             compute_dtype=dtype)
            torch.cuda.synchronize()
            print(json.dumps({"dtype": dtype, "chains": chains, "chain_steps_per_s": r.chain_steps_per_s,
                              "wall_s": time.perf_counter() - t0, "llc": r.llc, "healthy": r.healthy}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
