#!/usr/bin/env python
"""Reproduce the language-model stages of Hoogland et al. 2024 (LM1..LM5) with the paper's architecture
on offline synthetic text (configs/induction-paper.yaml; a GPU run).

    python scripts/reproduce_induction_paper.py [--config configs/induction-paper.yaml] [--out out]
    python scripts/reproduce_induction_paper.py --tiny        # CPU smoke test of the same pipeline
    python scripts/reproduce_induction_paper.py --steps 20000 --batch-size 32   # a shorter GPU run

Runs train (recipe `language`) -> sweep (`loss`, `icl_score`, `heads`, `llc`) -> detect -> report, timing
each phase, then prints our stages beside the published table of REFERENCE.md §2.1 (number, type,
order, boundaries in log step; LLC and loss at the boundaries) and checks whether previous-token
heads form before induction heads (the paper: prev-token heads start in LM3, 6.5k-8.5k, the induction
circuit forms in LM4, 8.5k-17.5k).

"Forms" = the step at which the head's score has made half of its rise from its first value to its
maximum (best layer-0 head by previous-token score, best layer-1 head by induction score).

``--tiny`` replaces the model with a tiny one (2 layers, 2 heads, d_model 32, context 64, vocabulary
128), trains 400 steps on the CPU and shrinks the sweep, to check the pipeline end to end; its
numbers mean nothing. The full config needs a GPU (about 3M parameters, 50k steps of 100 x 1024 tokens).
The data are synthetic, not the paper's Pile: compare stage order and types, not absolute values.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# REFERENCE.md §2.1: ends from [TM] (17.5k as [ICL]'s notebook); LLC and loss at the boundaries from [SD].
PUBLISHED = pd.DataFrame(
    [("LM1", 0, 900, "A", 123.6, 149.9, 7.94, 4.35, "bigrams"),
     ("LM2", 900, 6_500, "A", 149.9, 172.4, 4.35, 3.63, "n-grams, positional information"),
     ("LM3", 6_500, 8_500, "B", 172.4, 170.9, 3.63, 3.56, "previous-token heads start"),
     ("LM4", 8_500, 17_500, "A", 170.9, 179.5, 3.56, 3.29, "induction circuit"),
     ("LM5", 17_500, 50_000, "A", 179.5, 181.3, 3.29, 3.22, "plateau (weak A)")],
    columns=["stage", "start_step", "end_step", "type", "llc_start", "llc_end", "loss_start", "loss_end", "what"])
PAPER_STEPS = 50_000

TINY = {
    "device": "cpu",
    "recipe": {"model": {"n_layers": 2, "n_heads": 2, "d_model": 32, "d_head": 16, "n_ctx": 64, "d_vocab": 128},
               "data": {"span_min": 4, "span_max": 16, "trigram_contexts": 256},
               "train": {"steps": 400, "batch_size": 16, "lr": 0.003, "compute_dtype": "float32",
                         "schedule": {"n_log": 8, "switch_step": 100, "linear_every": 50}}},
    "sweep": {"eval_sequences": 64, "eval_batch_size": 32, "head_sequences": 16, "llc_sequences": 128,
              "llc": {"chains": 2, "draws": 20, "burnin": 10, "batch_size": 16, "init_loss_batches": 2,
                      "compute_dtype": "float32", "compile": False, "epsilon": 1e-4, "gamma": 100.0,
                      "nbeta": 30.0}},
}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def rel_log(step: float, total: int) -> float:
    return math.log10(step + 1) / math.log10(total + 1)


CHANCE_FACTOR = 2.0  # a formed head attends to its target at least twice as much as uniform attention


def formation_step(wide: pd.DataFrame, layer: int) -> tuple[str, int | None, float, float]:
    """Best head of ``layer`` by final score, the step where it made half its rise (first -> max), first, max."""
    cols = [c for c in wide.columns if c.startswith(f"L{layer}H")]
    if not cols:
        return "-", None, float("nan"), float("nan")
    best = wide[cols].iloc[-1].idxmax()
    s = wide[best]
    first, peak = float(s.iloc[0]), float(s.max())
    if peak - first <= 0:
        return best, None, first, peak
    half = s[s >= first + 0.5 * (peak - first)]
    return best, int(half.index[0]), first, peak


def head_formation(results, n_ctx: int) -> tuple[list[str], dict[str, bool]]:
    """Lines saying when the best layer-0 previous-token head and the best layer-1 induction head made
    half their rise, and which came first (the paper: previous-token heads in LM3, induction in LM4),
    and whether each formed ({"prev_token": bool, "induction": bool}).

    Each peak is also given as a multiple of what a head attending uniformly to its causal window
    scores (``chance_scores``); a head whose peak stays below twice that never attended to its target
    more than an unstructured head would, so it did not form and there is no order to compare."""
    from devinterp.metrics.heads import chance_scores

    try:
        prev = formation_step(results.wide("prev_token"), 0)
        ind = formation_step(results.wide("induction"), 1)
    except KeyError as err:
        return [f"head scores missing: {err}"], {"prev_token": False, "induction": False}
    chance = chance_scores(n_ctx)
    lines, formed = [], {}
    for label, metric, (head, step, first, peak) in (("previous-token", "prev_token", prev),
                                                      ("induction", "induction", ind)):
        ratio = peak / chance[metric]
        formed[metric] = ratio >= CHANCE_FACTOR and step is not None
        when = (f"half its rise at step {step}" if formed[metric] else
                f"no {label} head formed (peak < {CHANCE_FACTOR:g}x uniform attention's {chance[metric]:.4f})")
        lines.append(f"{label} head {head}: {first:.3f} -> max {peak:.3f} ({ratio:.1f}x uniform attention), {when}")
    if formed["prev_token"] and formed["induction"]:
        order = ("YES: previous-token head first" if prev[1] < ind[1] else
                 "same checkpoint" if prev[1] == ind[1] else "NO: induction head first")
    else:
        order = "cannot tell: " + " and ".join(f"no {m.replace('_', '-')} head formed" for m, ok in formed.items() if not ok)
    lines.append(f"previous-token heads form before induction heads? {order} (paper: yes, LM3 then LM4)")
    return lines, formed


def head_order(results, n_ctx: int) -> list[str]:
    """The lines of :func:`head_formation`."""
    return head_formation(results, n_ctx)[0]


def side_by_side(ours: pd.DataFrame, total: int) -> str:
    lines = ["| # | paper | steps | rel. log end | type | LLC | loss | what | ours | steps | rel. log end | type | "
             "ΔLLC ± se | Δloss |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i in range(max(len(PUBLISHED), len(ours))):
        c = [str(i + 1)]
        if i < len(PUBLISHED):
            p = PUBLISHED.iloc[i]
            c += [p.stage, f"{p.start_step:,}–{p.end_step:,}", f"{rel_log(p.end_step, PAPER_STEPS):.2f}", p.type,
                  f"{p.llc_start:.1f}→{p.llc_end:.1f}", f"{p.loss_start:.2f}→{p.loss_end:.2f}", p.what]
        else:
            c += ["—"] * 7
        if i < len(ours):
            o = ours.iloc[i]
            c += [f"S{int(o.stage)}", f"{int(o.start_step):,}–{int(o.end_step):,}", f"{rel_log(o.end_step, total):.2f}",
                  str(o.type), f"{o.d_llc:+.1f} ± {o.d_llc_stderr:.1f}", f"{o.d_loss:+.3f}"]
        else:
            c += ["—"] * 6
        lines.append("| " + " | ".join(c) + " |")
    return "\n".join(lines)


def scaled(raw: dict, steps: int | None, batch_size: int | None, llc_draws: int | None) -> dict:
    """Config overrides for a shorter run: ``steps`` keeps the log-spaced checkpoints below the config's
    switch step and spaces 50 linear ones after it; the name records the change."""
    over: dict = {}
    train = raw.get("recipe", {}).get("train", {})
    if steps is not None:
        switch = min(train.get("schedule", {}).get("switch_step", 1000), steps)
        over = merge(over, {"recipe": {"train": {"steps": steps, "schedule": {
            "switch_step": switch, "linear_every": max((steps - switch) // 50, 1)}}}})
    if batch_size is not None:
        over = merge(over, {"recipe": {"train": {"batch_size": batch_size}}})
    if llc_draws is not None:
        over = merge(over, {"sweep": {"llc": {"draws": llc_draws}}})
    if over:
        tag = "-".join(f"{k}{v}" for k, v in (("s", steps), ("b", batch_size), ("d", llc_draws)) if v is not None)
        over["name"] = f"{raw.get('name', 'induction-paper')}-{tag}"
    return over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/induction-paper.yaml")
    parser.add_argument("--out", default="out")
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU: a smoke test of the pipeline")
    parser.add_argument("--markdown", default=None, help="also write the result tables to this file")
    parser.add_argument("--steps", type=int, default=None,
                        help="train this many steps instead of the config's (checkpoints: the config's log-spaced "
                             "part, then 50 linear ones), to fit a time budget")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size instead of the config's")
    parser.add_argument("--llc-draws", type=int, default=None, help="SGLD draws per chain instead of the config's")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    from devinterp.cli import configure_logging

    configure_logging(args.quiet)  # calibration and checkpoint lines, as the CLI

    import yaml

    from devinterp import api
    from devinterp.config import parse_config, with_metrics
    from devinterp.locality import locality_line
    from devinterp.results import load_results

    raw = yaml.safe_load(Path(args.config).read_text())
    if args.tiny:
        raw = merge(raw, {**TINY, "name": raw.get("name", "induction-paper") + "-tiny"})
    raw = merge(raw, scaled(raw, args.steps, args.batch_size, args.llc_draws))
    config = parse_config(raw, args.config + (" (--tiny)" if args.tiny else ""))
    out, progress = Path(args.out), not args.quiet
    source = api.train(config, out, progress)
    # the cheap metrics first, so a time-boxed run (a GPU session) answers the head-order question even
    # when the LLC sweep does not finish; the full run below measures only the rest
    quick = [g for g in config.sweep.metrics if g not in ("llc", "head_llc")]
    if quick != list(config.sweep.metrics):
        t0 = time.perf_counter()
        api.sweep(source, with_metrics(config, quick), out, progress)
        print(f"quick look ({', '.join(quick)}; {time.perf_counter() - t0:.0f} s):", flush=True)
        print("\n".join(head_order(load_results(api.run_dir_for(config, out)), config.recipe.model.n_ctx)), flush=True)
    results = api.run(config, out, progress)  # train (done) -> sweep (the rest) -> detect -> report
    run_dir = results.path
    t = {k.removesuffix("_seconds").replace("run", "total"): v for k, v in results.manifest.get("timings", {}).items()}
    t["train"] = json.loads((run_dir / "training.json").read_text())["seconds"]  # api.run's train was a no-op
    total = config.recipe.train.steps
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                    if k in ("steps", "batch_size", "llc_draws") and v is not None)
    lines = [f"command: python scripts/reproduce_induction_paper.py --config {args.config}{' --tiny' if args.tiny else ''}"
             f"{flags}",
             f"model: {config.recipe.model.model_dump()}; training: {config.recipe.train.steps} steps x batch "
             f"{config.recipe.train.batch_size}; LLC: {config.sweep.llc.chains} chains x {config.sweep.llc.draws} draws",
             f"device: {config.device}; timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()),
             f"LLC settings: {json.loads((run_dir / 'llc_settings.json').read_text()).get('choice')}", "",
             side_by_side(results.stages, total), ""]
    types = "".join(results.stages["type"].astype(str))
    lines.append(f"stage types in order: ours {types or '(none)'}, paper {''.join(PUBLISHED['type'])}")
    lines.append(locality_line(results.metrics))
    lines += head_order(results, config.recipe.model.n_ctx)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
