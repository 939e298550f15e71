#!/usr/bin/env python
"""Benchmark our ``estimate_llc`` against the reference library (PyPI ``devinterp==2.0.1``).

Both run on the same plain-torch model (the quickstart 2-layer attention-only transformer, weights
from a quickstart checkpoint when one exists, else a seeded random init), the same 1024 induction
sequences, batch 32, 4 chains x 200 draws, no burn-in, the same SGLD settings and the same number
of torch threads, on this machine. Printed: chain-steps/s of each (chains*draws / wall seconds of
the whole call, init loss included) and the ratio.

The reference library shares our import name ``devinterp``, so it lives in its own virtualenv,
``.bench-venvs/ref`` (created on first use with ``pip install torch==2.13.0 devinterp==2.0.1``) and
runs in a subprocess from a temporary folder, never from the repository.

    .venv/bin/python scripts/bench_llc.py [--checkpoint out/quickstart/checkpoints/3000.safetensors] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REF_VENV = REPO / ".bench-venvs" / "ref"
REF_PY = REF_VENV / "bin" / "python"
REF_REQS = ["torch==2.13.0", "devinterp==2.0.1"]

# The reference side: a standalone copy of the architecture (the same math as
# devinterp.models.attn_only.AttnOnlyTransformer, which the reference venv cannot import). It
# expects a dict ``c`` of ModelConfig fields; scripts/bench_llc_gpu.py reuses it.
REF_MODEL = textwrap.dedent(
    '''
    class Attn(nn.Module):
        def __init__(s):
            super().__init__()
            inner = c["n_heads"] * c["d_head"]
            s.q, s.k, s.v = (nn.Linear(c["d_model"], inner) for _ in range(3))
            s.o = nn.Linear(inner, c["d_model"])
        def forward(s, x):
            B, T, _ = x.shape
            h = lambda t: t.view(B, T, c["n_heads"], c["d_head"]).transpose(1, 2)
            z = F.scaled_dot_product_attention(h(s.q(x)), h(s.k(x)), h(s.v(x)), is_causal=True,
                                               scale=1 / math.sqrt(c["d_head"]))
            return s.o(z.transpose(1, 2).reshape(B, T, -1))

    class Block(nn.Module):
        def __init__(s):
            super().__init__(); s.ln1 = nn.LayerNorm(c["d_model"], eps=1e-5); s.attn = Attn()
        def forward(s, x):
            return s.attn(s.ln1(x))

    class Model(nn.Module):
        def __init__(s):
            super().__init__()
            s.embed = nn.Embedding(c["d_vocab"], c["d_model"]); s.pos_embed = nn.Embedding(c["n_ctx"], c["d_model"])
            s.blocks = nn.ModuleList(Block() for _ in range(c["n_layers"]))
            s.ln_final = nn.LayerNorm(c["d_model"], eps=1e-5); s.unembed = nn.Linear(c["d_model"], c["d_vocab"])
        def forward(s, tokens):
            x = s.embed(tokens) + s.pos_embed(torch.arange(tokens.shape[1], device=tokens.device))
            for b in s.blocks:
                x = x + b(x)
            return s.unembed(s.ln_final(x))

    '''
)

REF_SCRIPT = textwrap.dedent(
    '''
    import json, math, sys, time
    import torch, torch.nn as nn, torch.nn.functional as F
    from datasets import Dataset
    from devinterp.slt.llc import llc

    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    c = args["cfg"]
    '''
) + REF_MODEL + textwrap.dedent(
    '''
    model = Model()
    model.load_state_dict(torch.load(args["weights"], weights_only=True))
    tokens = torch.load(args["tokens"], weights_only=True)
    ds = Dataset.from_dict({"input_ids": tokens.tolist()}).with_format("torch")
    def run(draws, init_batches):
        return llc(model, ds, {}, lr=args["epsilon"], n_beta=args["nbeta"], localization=args["gamma"],
                   num_chains=args["chains"], num_draws=draws, batch_size=args["batch_size"],
                   num_burnin_steps=0, num_init_loss_batches=init_batches, device="cpu")
    run(5, 1)  # warm-up, as for ours
    t0 = time.perf_counter()
    out = run(args["draws"], args["init_loss_batches"])
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "llc": float(out["llc_mean"]), "llc_std": float(out["llc_std"]),
                      "init_loss": float(out["init_loss"].mean())}))
    '''
)


def ensure_ref_venv() -> None:
    if REF_PY.exists():
        return
    print(f"creating {REF_VENV} with {' '.join(REF_REQS)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(REF_VENV)], check=True)
    res = subprocess.run([str(REF_PY), "-m", "pip", "install", "-q", *REF_REQS], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"installing the reference library failed (pip exit {res.returncode}):\n{res.stderr[-3000:]}")


def prepare(workdir: Path, checkpoint: Path | None, n_sequences: int):
    import torch

    from devinterp.checkpoints import load_state_dict
    from devinterp.config import InductionDataConfig, ModelConfig
    from devinterp.models.attn_only import AttnOnlyTransformer
    from devinterp.recipes.data import induction_batch

    cfg = ModelConfig()  # the quickstart model: 2 layers, d_model 64, 4 heads, d_head 16, n_ctx 64, vocab 64
    if checkpoint is not None:
        model = AttnOnlyTransformer.from_state_dict(cfg, load_state_dict(checkpoint))
    else:
        torch.manual_seed(0)
        model = AttnOnlyTransformer(cfg)
    tokens = induction_batch(n_sequences, cfg.n_ctx, cfg.d_vocab, InductionDataConfig(),
                             torch.Generator().manual_seed(777))
    torch.save(model.state_dict(), workdir / "weights.pt")
    torch.save(tokens, workdir / "tokens.pt")
    return cfg, model, tokens


def run_reference(tmp: Path, payload: dict) -> dict:
    """One reference run in its own venv and process (warm-up call, then the timed call)."""
    script = tmp / "ref_bench.py"
    script.write_text(REF_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([str(REF_PY), "-P", str(script), json.dumps(payload)], cwd=tmp, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"the reference run failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    default_ckpt = REPO / "out" / "quickstart" / "checkpoints" / "3000.safetensors"
    p.add_argument("--checkpoint", type=Path, default=default_ckpt if default_ckpt.exists() else None)
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    p.add_argument("--epsilon", type=float, default=1e-4)
    p.add_argument("--gamma", type=float, default=100.0)
    p.add_argument("--nbeta", type=float, default=9.233)
    p.add_argument("--compute-dtype", default="both", choices=["float32", "bfloat16", "both"])
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of (reference, ours); the ratio is taken within each round and the median reported, "
                        "so slow drifts of a shared machine's load cancel")
    p.add_argument("--skip-ref", action="store_true", help="only time ours")
    args = p.parse_args(argv)

    import statistics

    import torch

    from devinterp.llc import estimate_llc
    from devinterp.metrics.losses import next_token_loss

    dtypes = ["float32", "bfloat16"] if args.compute_dtype == "both" else [args.compute_dtype]
    common = dict(chains=4, draws=200, batch_size=32, init_loss_batches=32)
    steps = common["chains"] * common["draws"]
    rates: dict[str, list[float]] = {k: [] for k in ["reference", *dtypes]}
    ratios: dict[str, list[float]] = {k: [] for k in dtypes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg, model, tokens = prepare(tmp, args.checkpoint, 1024)
        print(f"model: quickstart attention-only transformer ({sum(p.numel() for p in model.parameters())} params), "
              f"weights {args.checkpoint or 'random init (seed 0)'}; data 1024 induction sequences; "
              f"4 chains x 200 draws, batch 32; eps {args.epsilon}, gamma {args.gamma}, nbeta {args.nbeta}; "
              f"{args.threads} torch threads; {args.repeats} rounds", flush=True)
        if not args.skip_ref:
            ensure_ref_venv()
        payload = dict(common, cfg=cfg.model_dump(), threads=args.threads, epsilon=args.epsilon, gamma=args.gamma,
                       nbeta=args.nbeta, weights=str(tmp / "weights.pt"), tokens=str(tmp / "tokens.pt"))
        torch.set_num_threads(args.threads)
        batches = list(tokens.split(32))
        for r in range(args.repeats):
            ref_rate = None
            if not args.skip_ref:
                ref = run_reference(tmp, payload)
                ref_rate = steps / ref["seconds"]
                rates["reference"].append(ref_rate)
                print(f"round {r + 1}: reference (devinterp 2.0.1) {ref_rate:7.1f} chain-steps/s "
                      f"(llc {ref['llc']:.3g} +- {ref['llc_std']:.2g} std, init loss {ref['init_loss']:.4f})", flush=True)
            for dt in dtypes:
                kw = dict(common, burnin=0, epsilon=args.epsilon, gamma=args.gamma, nbeta=args.nbeta, compute_dtype=dt)
                estimate_llc(model, batches, next_token_loss, **{**kw, "draws": 5, "init_loss_batches": 1})  # warm-up
                t0 = time.perf_counter()
                ours = estimate_llc(model, batches, next_token_loss, **kw)
                rate = steps / (time.perf_counter() - t0)
                rates[dt].append(rate)
                line = (f"round {r + 1}: ours ({ours.backend}, {dt}) {rate:7.1f} chain-steps/s "
                        f"(llc {ours.llc:.3g} +- {ours.stderr:.2g}, init loss {ours.init_loss:.4f})")
                if ref_rate is not None:
                    ratios[dt].append(rate / ref_rate)
                    line += f"  ratio {rate / ref_rate:.2f}x"
                print(line, flush=True)
    print("\nmedian over rounds (chain-steps/s per checkpoint, init loss included):")
    for k, v in rates.items():
        if v:
            extra = f"   ratio to the reference: {statistics.median(ratios[k]):.2f}x (rounds: " \
                    f"{', '.join(f'{x:.2f}' for x in ratios[k])})" if ratios.get(k) else ""
            print(f"  {k:10s} {statistics.median(v):7.1f}{extra}")


if __name__ == "__main__":
    main()
