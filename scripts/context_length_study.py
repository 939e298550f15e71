#!/usr/bin/env python
"""Which property of the language recipe blocks induction heads: the context or the vocabulary, and
does `recipe.train.pos_init: sinusoidal` unblock it? (BENCHMARKS.md, "What blocks induction".)

Each variant is configs/induction-cpu.yaml (d_model 64, 8 x 8 heads, batch 32, the paper's optimiser)
with the vocabulary, context, copied spans, position init and steps below, checkpoints every 500
steps after 15 log-spaced ones. Trains it (`devinterp train`), measures loss, ICL score and head
scores at every checkpoint (`devinterp sweep --metrics loss,icl_score,heads`) and prints the head
order lines of scripts/reproduce_induction_paper.py. On a 2-core CPU, one thread per variant:
10-25 minutes each (context 128 is the slow one).

    python scripts/context_length_study.py [--out out/context-study] [--only v64c128 v64c128sin]
    python scripts/context_length_study.py --write-config v512c128sin-12k c.yaml   # for reproduce_*.py

The DERIVED variants (a row with overrides) run when named, e.g. context 512 with the paper
config's sparse copied spans (about 40 minutes to train on one core beside other jobs):

    python scripts/context_length_study.py --only v512c512sin-sparse

The PAPER_SIZE variants are configs/induction-paper-short.yaml (the paper's model and optimiser, batch
32, on a GPU) with one change each: a screen, for a GPU session, of which position scheme or context
forms induction heads at the paper's size. With --reproduce-first-formed the first variant whose
previous-token and induction heads both formed goes on to the LLC sweep, detection and the side-by-side
table of scripts/reproduce_induction_paper.py (its checkpoints are reused); --markdown rewrites a
summary after every variant, so a time box loses only the variant it cut:

    python scripts/context_length_study.py --only paper-sin1024 paper-sin256 paper-rot1024 \
        --reproduce-first-formed --markdown out/screen.md
    python scripts/context_length_study.py --only paper-sin1024 --tiny   # CPU smoke test

--look measures what is on disk so far without training (a run still training, or one a time box
cut short), into OUT/look/ (rerun, it measures only the new checkpoints):

    python scripts/context_length_study.py --only v512c256sf-sparse --look
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_induction_paper  # noqa: E402
from reproduce_induction_paper import TINY, head_formation, merge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "induction-cpu.yaml"
PAPER_BASE = ROOT / "configs" / "induction-paper-short.yaml"
SCHEDULE = {"n_log": 15, "switch_step": 500, "linear_every": 500}
# name: (vocabulary, context, trigram rules, copied spans (n, min, max), position init, steps)
VARIANTS = {
    "v512c64": (512, 64, 200, (3, 8, 16), "random", 10_000),
    "v64c128": (64, 128, 25, (6, 8, 16), "random", 10_000),
    "v64c128sin": (64, 128, 25, (6, 8, 16), "sinusoidal", 8_000),
    "v512c128sin": (512, 128, 200, (4, 8, 24), "sinusoidal", 8_000),
}
# configs/induction-paper.yaml's copied spans (16-64 tokens, each kept with probability 1/2); the
# variants choose how many, to keep its share of copied tokens (about 8%) at their context
SPARSE_COPIES = {"copy_prob": 0.5, "span_min": 16, "span_max": 64}
# variants of a VARIANTS row, with recipe overrides: name -> (row, overrides)
DERIVED = {
    # the run measured end to end (LLC too) with scripts/reproduce_induction_paper.py
    "v512c128sin-12k": ("v512c128sin", {"train": {"steps": 12_000}}),
    # context 512 with the copied spans of configs/induction-paper.yaml scaled to it (two of 16-64
    # tokens, each kept with probability 1/2: about 8% of the tokens, as four in 1,024 there; the
    # table's rows copy about half), batch 8 so a step sees the rows' 4,096 tokens
    "v512c512sin-sparse": ("v512c128sin", {"model": {"n_ctx": 512},
                                            "data": {**SPARSE_COPIES, "n_copies": 2},
                                            "train": {"steps": 12_000, "batch_size": 8}}),
    # the same with the row's copied spans scaled to context 512 (16 of 8-24 tokens: about half)
    "v512c512sin-dense": ("v512c128sin", {"model": {"n_ctx": 512}, "data": {"n_copies": 16},
                                           "train": {"steps": 12_000, "batch_size": 8}}),
    # the sparse variant with rotary positions (RoPE on queries and keys; no positional embedding, so
    # no position init): positions out of the residual stream, as the paper's shortformer ones
    "v512c512rot-sparse": ("v512c128sin", {"model": {"n_ctx": 512, "positional_embedding_type": "rotary"},
                                            "data": {**SPARSE_COPIES, "n_copies": 2},
                                            "train": {"steps": 12_000, "batch_size": 8, "pos_init": "random"}}),
    # the sparse context-512 variant with four times the batch (32 sequences, 16,384 tokens a step, as
    # the H200 runs' 32 x 1,024 is to the paper's 100 x 1,024): does a larger batch speed formation per
    # step? (about 4x slower per step on the CPU, so 5,000 steps)
    "v512c512sin-sparse-b32": ("v512c128sin", {"model": {"n_ctx": 512},
                                                "data": {**SPARSE_COPIES, "n_copies": 2},
                                                "train": {"steps": 5_000, "batch_size": 32}}),
    # between the context 128 that forms induction heads and the 512 that does not: context 256, one
    # copied span of 16-64 tokens kept with probability 1/2 (about 8% of the tokens, as the sparse
    # variants), batch 16 (4,096 tokens a step)
    "v512c256sin-sparse": ("v512c128sin", {"model": {"n_ctx": 256},
                                            "data": {**SPARSE_COPIES, "n_copies": 1},
                                            "train": {"steps": 12_000, "batch_size": 16}}),
    # ... and with the row's copied share (eight of 8-24 tokens: about half), as v512c512sin-dense
    "v512c256sin-dense": ("v512c128sin", {"model": {"n_ctx": 256}, "data": {"n_copies": 8},
                                           "train": {"steps": 12_000, "batch_size": 16}}),
    # the sparse context-256 variant with the row's 32 sequences a step (8,192 tokens; the row formed
    # both heads by 8,000 steps at context 128 with 32): sequences a step or context?
    "v512c256sin-sparse-b32": ("v512c128sin", {"model": {"n_ctx": 256},
                                                "data": {**SPARSE_COPIES, "n_copies": 1}}),
    # the two context-256 batches again with another seed (initial weights and data stream), 6,000 steps
    "v512c256sin-sparse-s1": ("v512c128sin", {"model": {"n_ctx": 256},
                                               "data": {**SPARSE_COPIES, "n_copies": 1},
                                               "train": {"steps": 6_000, "batch_size": 16, "seed": 1}}),
    "v512c256sin-sparse-b32-s1": ("v512c128sin", {"model": {"n_ctx": 256},
                                                   "data": {**SPARSE_COPIES, "n_copies": 1},
                                                   "train": {"steps": 6_000, "seed": 1}}),
    # rotary at the paper's context 1,024 with configs/induction-paper.yaml's copied spans (four of
    # 16-64 tokens, each p 1/2), batch 4 so a step still sees 4,096 tokens
    "v512c1024rot-sparse": ("v512c128sin", {"model": {"n_ctx": 1024, "positional_embedding_type": "rotary"},
                                             "data": {**SPARSE_COPIES, "n_copies": 4},
                                             "train": {"steps": 12_000, "batch_size": 4, "pos_init": "random"}}),
    # the paper's own positions (shortformer: learned, added to the queries' and keys' inputs only) with
    # TransformerLens's random init, as the paper: at context 128 (the row, whose sinusoidal init formed
    # both heads) and at 256 with the sparse copies (where sinusoidal formed no induction head)
    "v512c128sf": ("v512c128sin", {"model": {"positional_embedding_type": "shortformer"},
                                   "train": {"pos_init": "random"}}),
    # ... which at 8,000 steps had its previous-token head (half-way at 6,500) and an induction head only
    # starting (1.9x uniform): the same run trained twice as long, for the end-to-end reproduction
    "v512c128sf-16k": ("v512c128sin", {"model": {"positional_embedding_type": "shortformer"},
                                       "train": {"pos_init": "random", "steps": 16_000}}),
    "v512c256sf-sparse": ("v512c128sin", {"model": {"n_ctx": 256, "positional_embedding_type": "shortformer"},
                                          "data": {**SPARSE_COPIES, "n_copies": 1},
                                          "train": {"steps": 12_000, "batch_size": 16, "pos_init": "random"}}),
}

# configs/induction-paper-short.yaml (paper size, random position init, context 1,024, batch 32; on the
# H200 it formed no induction head in 15,000 steps) with one change each, 12,000 steps (about 2 minutes
# of an H200 at the measured 97 steps/s). The CPU stand-ins: sinusoidal positions formed both heads at
# context 128 and no induction head at 256 or 512 within 12,000 steps of 4,096 tokens (nor with 32
# sequences a step), rotary none at 512 or 1,024 (BENCHMARKS.md).
PAPER_SIZE = {
    # the paper's own architecture: shortformer positions, random init; 20,000 steps (the paper's
    # induction stage LM4 ends at 17,500; on the CPU shortformer formed its heads about 1.6x later than
    # the sinusoidal start), about 3.5 minutes of an H200
    "paper-sf1024": {"model": {"positional_embedding_type": "shortformer"}, "train": {"steps": 20_000}},
    # configs/induction-paper.yaml's remedy, at the paper's context
    "paper-sin1024": {"train": {"steps": 12_000, "pos_init": "sinusoidal"}},
    # a quarter of the context (one copied span: the same copied share), 4x the sequences (the same
    # tokens a step)
    "paper-sin256": {"model": {"n_ctx": 256}, "data": {"n_copies": 1},
                     "train": {"steps": 12_000, "batch_size": 128, "pos_init": "sinusoidal"}},
    # positions on queries and keys only, as the paper's shortformer ones (TransformerLens 4 has RoPE)
    "paper-rot1024": {"model": {"positional_embedding_type": "rotary"}, "train": {"steps": 12_000}},
}


def variant_config(name: str) -> dict:
    """The raw config of a variant (of VARIANTS, DERIVED: a VARIANTS row with overrides, or PAPER_SIZE)."""
    if name in PAPER_SIZE:
        return merge(yaml.safe_load(PAPER_BASE.read_text()), {"name": name, "recipe": PAPER_SIZE[name]})
    row, overrides = DERIVED.get(name, (name, {}))
    vocab, ctx, trigrams, (n_copies, span_min, span_max), pos_init, steps = VARIANTS[row]
    raw = yaml.safe_load(BASE.read_text())
    raw = merge(raw, {"name": name, "recipe": {
        "model": {"n_ctx": ctx, "d_vocab": vocab},
        "data": {"trigram_contexts": trigrams, "n_copies": n_copies, "span_min": span_min, "span_max": span_max},
        "train": {"steps": steps, "pos_init": pos_init, "schedule": SCHEDULE}}})
    return merge(raw, {"recipe": overrides})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = sorted(VARIANTS) + sorted(DERIVED) + sorted(PAPER_SIZE)
    parser.add_argument("--out", default="out/context-study", help="parent folder of the runs (default: %(default)s)")
    parser.add_argument("--only", nargs="*", choices=names, help="variants to run, in this order (default: the "
                        "table's, every VARIANTS row)")
    parser.add_argument("--write-config", nargs=2, metavar=("VARIANT", "PATH"),
                        help="only write a variant's config YAML (any of --only's choices) and exit")
    parser.add_argument("--device", default=None, help="device instead of the config's (default: the config's)")
    parser.add_argument("--tiny", action="store_true",
                        help="shrink each variant as reproduce_induction_paper.py --tiny: a smoke test of the script")
    parser.add_argument("--markdown", default=None, help="rewrite a summary of the variants run so far here")
    parser.add_argument("--look", action="store_true",
                        help="train nothing: measure the checkpoints now on disk of each variant (a run still "
                             "training, or one a time box cut) into OUT/look/, and print the same lines")
    parser.add_argument("--reproduce-first-formed", action="store_true",
                        help="run the full reproduction (LLC, stages, table) on the first variant that formed "
                             "both heads, then stop")
    args = parser.parse_args(argv)
    if args.write_config:
        name, path = args.write_config
        if name not in names:
            parser.error(f"--write-config: unknown variant {name!r}")
        Path(path).write_text(yaml.safe_dump(variant_config(name), sort_keys=False))
        return 0

    from devinterp import _io, api
    from devinterp.checkpoints import DirectorySource
    from devinterp.config import parse_config, with_metrics
    from devinterp.results import load_results

    out = Path(args.out)
    summary: list[str] = []
    for name in args.only or VARIANTS:
        raw = variant_config(name)
        if args.tiny:
            raw = merge(raw, {**TINY, "name": name + "-tiny"})
        if args.device:
            raw["device"] = args.device
        label = f"{PAPER_BASE if name in PAPER_SIZE else BASE} ({name})"
        config = parse_config(raw, label)
        t0 = time.perf_counter()
        quick = with_metrics(config, ["loss", "icl_score", "heads"], label)
        if args.look:  # the checkpoints so far, read as a folder of the user's own (the run is not touched)
            source = DirectorySource(api.run_dir_for(config, out) / "checkpoints", model=config.recipe.model)
            swept_in = out / "look"
        else:
            source, swept_in = api.train(config, out, progress=False), out
        t_train = time.perf_counter() - t0
        api.sweep(source, quick, swept_in, progress=False)
        results = load_results(api.run_dir_for(config, swept_in))
        loss, icl = results.series("loss")["value"], results.series("icl_score")["value"]
        row, overrides = (name, PAPER_SIZE[name]) if name in PAPER_SIZE else DERIVED.get(name, (name, {}))
        what = f"{PAPER_BASE.name} with {overrides}" if name in PAPER_SIZE else (
            f"{VARIANTS[row]}{f' with {overrides}' if overrides else ''}")
        what += " (--tiny: numbers mean nothing)" if args.tiny else ""
        what += f" (--look: the {len(source)} checkpoints on disk, to step {source.steps[-1]:,})" if args.look else ""
        lines, formed = head_formation(results, config.recipe.model.n_ctx)
        text = [f"{name}: {what}: loss {loss.iloc[0]:.2f} -> {loss.iloc[-1]:.2f}, ICL score (last) {icl.iloc[-1]:+.3f}; "
                f"device {config.device}, " + ("" if args.look else f"train {t_train:.0f} s + ")
                + f"quick look {time.perf_counter() - t0 - t_train:.0f} s"]
        text += ["  " + line for line in lines]
        print("\n".join(text), flush=True)
        summary += text + [""]
        if args.markdown:
            _io.write_text(args.markdown, "\n".join(summary))
        if args.reproduce_first_formed and all(formed.values()) and not args.look:
            path = out / f"{name}.yaml"  # the variant as run: the reproduction reuses its checkpoints
            _io.write_text(path, yaml.safe_dump(raw, sort_keys=False))
            md = str(Path(args.markdown).with_suffix(f".{name}.md")) if args.markdown else None
            print(f"{name} formed both heads: the full reproduction on it", flush=True)
            return reproduce_induction_paper.main(["--config", str(path), "--out", str(out), "-q"]
                                                  + (["--markdown", md] if md else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
