#!/usr/bin/env python
"""LLC throughput on a GPU: ours vs the reference devinterp 2.0.1, same model, data and work.

Two models: the paper-size language model of REFERENCE.md §2.1 (2 layers attention-only, d_model
256, 8 heads x 32, ctx 1024, vocab 5000) and the quickstart toy (d_model 64, 4 heads, ctx 64,
vocab 64). SGLD batch 32, 4 chains, random weights (throughput does not depend on them).

    python scripts/bench_llc_gpu.py --ref-path DIR   # DIR holds devinterp==2.0.1 + deps (pip --target)

Ours runs in this process (PYTHONPATH = the repo); the reference runs in a subprocess whose
PYTHONPATH is --ref-path only, since both packages are called `devinterp`. Prints JSON lines.

Variants of ours: float32; bf16 + torch.compile (bf16 alone measured 151.8 chain-steps/s on the
paper LM, BENCHMARKS.md); and each of them again with ``cuda_graph`` (every SGLD step replayed from one captured CUDA graph). A graphed variant runs
the same chains as its eager twin (same seed), so their ``llc`` must agree to float rounding:
``llc_vs_eager`` is the difference. ``--profile`` adds the top CUDA kernels of one bf16 + compile
estimate of each model (torch.profiler; what limits the throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llc import REF_MODEL  # noqa: E402  (the reference-side copy of the architecture)

REF_SCRIPT = r'''
import json, math, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
from datasets import Dataset
from devinterp.slt.llc import llc
a = json.loads(sys.argv[1]); c = a["cfg"]; dev = a["device"]
''' + REF_MODEL + r'''
model = Model(); model.load_state_dict(torch.load(a["weights"], weights_only=True)); model.to(dev)
tokens = torch.load(a["tokens"], weights_only=True)
ds = Dataset.from_dict({"input_ids": tokens.tolist()}).with_format("torch")
kw = dict(lr=a["epsilon"], n_beta=a["nbeta"], localization=a["gamma"], num_chains=a["chains"], batch_size=a["batch_size"],
          num_burnin_steps=0, num_init_loss_batches=a["init_loss_batches"], device=dev)
llc(model, ds, {}, num_draws=5, **kw)  # warm-up (CUDA context, kernels)
if dev == "cuda": torch.cuda.synchronize()
t0 = time.perf_counter()
out = llc(model, ds, {}, num_draws=a["draws"], **kw)
if dev == "cuda": torch.cuda.synchronize()
s = time.perf_counter() - t0
print(json.dumps({"ref_seconds": s, "ref_chain_steps_per_s": a["chains"] * a["draws"] / s, "ref_llc": float(out["llc_mean"])}))
'''


def profile_kernels(name, model, batches, kw, top=15):
    """Print the ``top`` CUDA kernels by total time of one estimate (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from devinterp.llc import estimate_llc
    from devinterp.metrics.losses import next_token_loss

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            estimate_llc(model, batches, next_token_loss, **kw)
        print(f"== profile: {name}, {kw['compute_dtype']}, compile={kw['compile']}, {kw['draws']} draws", flush=True)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=top), flush=True)
    except Exception as err:
        print(json.dumps({"model": name, "profile_error": f"{type(err).__name__}: {str(err)[-500:]}"}), flush=True)


def bench(name, cfg, device, ref_path, draws, n_seq, compile_variants, profile=False):
    import torch

    from devinterp.llc import estimate_llc
    from devinterp.metrics.losses import next_token_loss
    from devinterp.models.attn_only import AttnOnlyTransformer

    torch.manual_seed(0)
    model = AttnOnlyTransformer(cfg).to(device)
    tokens = torch.randint(0, cfg.d_vocab, (n_seq, cfg.n_ctx), generator=torch.Generator().manual_seed(1))
    batches = list(tokens.to(device).split(32))
    kw = dict(chains=4, burnin=0, draws=draws, batch_size=32, epsilon=1e-5, gamma=100.0, nbeta=30.0, init_loss_batches=4)
    eager_llc = {}
    for dtype, compiled, graph in compile_variants:
        kw_v = {**kw, "compute_dtype": dtype, "compile": compiled, "cuda_graph": graph}
        head = {"model": name, "impl": "ours", "dtype": dtype, "compiled": compiled, "cuda_graph": graph}
        try:
            estimate_llc(model, batches, next_token_loss, **{**kw_v, "draws": 5})  # warm-up (and compile)
            t0 = time.perf_counter()
            r = estimate_llc(model, batches, next_token_loss, **kw_v)
            wall = time.perf_counter() - t0
        except Exception as err:  # report and go on with the other variants
            print(json.dumps({**head, "error": f"{type(err).__name__}: {str(err)[-800:]}"}), flush=True)
            continue
        row = {**head, "backend": r.backend, "chain_steps_per_s": r.chain_steps_per_s,
               "chain_steps_per_s_wall_incl_init": 4 * draws / wall, "llc": r.llc, "healthy": r.healthy}
        if not graph:
            eager_llc[(dtype, compiled)] = r.llc
        elif (dtype, compiled) in eager_llc:
            row["llc_vs_eager"] = r.llc - eager_llc[(dtype, compiled)]
        print(json.dumps(row), flush=True)
    if profile:
        profile_kernels(name, model, batches, {**kw, "compute_dtype": "bfloat16", "compile": True, "draws": 20})
    if ref_path is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, f"{tmp}/w.pt")
        torch.save(tokens, f"{tmp}/t.pt")
        args = {**kw, "cfg": cfg.model_dump(), "device": device, "weights": f"{tmp}/w.pt", "tokens": f"{tmp}/t.pt"}
        env = {**os.environ, "PYTHONPATH": ref_path}
        res = subprocess.run([sys.executable, "-c", REF_SCRIPT, json.dumps(args)], env=env, capture_output=True,
                             text=True, cwd=tmp, timeout=400)
        if res.returncode != 0:
            print(json.dumps({"model": name, "impl": "reference", "error": res.stderr[-1500:]}), flush=True)
            return
        print(json.dumps({"model": name, "impl": "reference", **json.loads(res.stdout.strip().splitlines()[-1])}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--ref-path", default=None, help="folder with devinterp==2.0.1 installed by pip --target")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--small", action="store_true", help="shrink the paper model (CPU smoke test of this script)")
    p.add_argument("--models", default="paper,toy")
    p.add_argument("--profile", action="store_true", help="also print the top CUDA kernels (bf16 + compile)")
    args = p.parse_args()
    import torch

    from devinterp.config import ModelConfig

    if args.device == "cuda":
        print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)
    paper = ModelConfig(n_layers=2, n_heads=8, d_model=256, d_head=32, n_ctx=1024, d_vocab=5000)
    if args.small:
        paper = ModelConfig(n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=128, d_vocab=500)
    toy = ModelConfig()
    # (compute dtype, torch.compile, CUDA graph); off CUDA the graphed variant runs the eager loop
    variants = ([("float32", False, False), ("bfloat16", True, False), ("float32", False, True),
                 ("bfloat16", True, True)] if args.device == "cuda"
                else [("float32", False, False), ("float32", False, True)])
    if "toy" in args.models:  # first: seconds, where the paper model's compile takes a minute
        bench("toy", toy, args.device, args.ref_path, args.draws, 1024, variants, args.profile)
    if "paper" in args.models:
        bench("paper-lm", paper, args.device, args.ref_path, args.draws, 256, variants, args.profile)


if __name__ == "__main__":
    main()
