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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_induction_paper import head_order, merge  # noqa: E402

BASE = Path(__file__).resolve().parents[1] / "configs" / "induction-cpu.yaml"
SCHEDULE = {"n_log": 15, "switch_step": 500, "linear_every": 500}
# name: (vocabulary, context, trigram rules, copied spans (n, min, max), position init, steps)
VARIANTS = {
    "v512c64": (512, 64, 200, (3, 8, 16), "random", 10_000),
    "v64c128": (64, 128, 25, (6, 8, 16), "random", 10_000),
    "v64c128sin": (64, 128, 25, (6, 8, 16), "sinusoidal", 8_000),
    "v512c128sin": (512, 128, 200, (4, 8, 24), "sinusoidal", 8_000),
}
# variants of a VARIANTS row, with recipe overrides: name -> (row, overrides)
DERIVED = {
    # the run measured end to end (LLC too) with scripts/reproduce_induction_paper.py
    "v512c128sin-12k": ("v512c128sin", {"train": {"steps": 12_000}}),
    # context 512 with the copied spans of configs/induction-paper.yaml scaled to it (two of 16-64
    # tokens, each kept with probability 1/2: about 8% of the tokens, as four in 1,024 there; the
    # table's rows copy about half), batch 8 so a step sees the rows' 4,096 tokens
    "v512c512sin-sparse": ("v512c128sin", {"model": {"n_ctx": 512},
                                            "data": {"copy_prob": 0.5, "n_copies": 2, "span_min": 16, "span_max": 64},
                                            "train": {"steps": 12_000, "batch_size": 8}}),
    # the same with the row's copied spans scaled to context 512 (16 of 8-24 tokens: about half)
    "v512c512sin-dense": ("v512c128sin", {"model": {"n_ctx": 512}, "data": {"n_copies": 16},
                                           "train": {"steps": 12_000, "batch_size": 8}}),
    # the sparse variant with rotary positions (RoPE on queries and keys; no positional embedding, so
    # no position init): positions out of the residual stream, as the paper's shortformer ones
    "v512c512rot-sparse": ("v512c128sin", {"model": {"n_ctx": 512, "positional_embedding_type": "rotary"},
                                            "data": {"copy_prob": 0.5, "n_copies": 2, "span_min": 16, "span_max": 64},
                                            "train": {"steps": 12_000, "batch_size": 8, "pos_init": "random"}}),
    # rotary at the paper's context 1,024 with configs/induction-paper.yaml's copied spans (four of
    # 16-64 tokens, each p 1/2), batch 4 so a step still sees 4,096 tokens
    "v512c1024rot-sparse": ("v512c128sin", {"model": {"n_ctx": 1024, "positional_embedding_type": "rotary"},
                                             "data": {"copy_prob": 0.5, "n_copies": 4, "span_min": 16, "span_max": 64},
                                             "train": {"steps": 12_000, "batch_size": 4, "pos_init": "random"}}),
}


def variant_config(name: str) -> dict:
    """The raw config of a variant (of VARIANTS, or of DERIVED: a VARIANTS row with overrides)."""
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
    parser.add_argument("--out", default="out/context-study", help="parent folder of the runs (default: %(default)s)")
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS) + sorted(DERIVED),
                        help="variants to run (default: the table's, every VARIANTS row)")
    parser.add_argument("--write-config", nargs=2, metavar=("VARIANT", "PATH"),
                        help=f"only write a variant's config YAML (also {', '.join(DERIVED)}) and exit")
    args = parser.parse_args(argv)
    if args.write_config:
        name, path = args.write_config
        if name not in VARIANTS and name not in DERIVED:
            parser.error(f"--write-config: unknown variant {name!r}")
        Path(path).write_text(yaml.safe_dump(variant_config(name), sort_keys=False))
        return 0

    from devinterp import api
    from devinterp.config import parse_config, with_metrics
    from devinterp.results import load_results

    out = Path(args.out)
    for name in args.only or VARIANTS:
        config = parse_config(variant_config(name), f"{BASE} ({name})")
        source = api.train(config, out, progress=False)
        quick = with_metrics(config, ["loss", "icl_score", "heads"], f"{BASE} ({name})")
        api.sweep(source, quick, out, progress=False)
        results = load_results(api.run_dir_for(config, out))
        loss, icl = results.series("loss")["value"], results.series("icl_score")["value"]
        row, overrides = DERIVED.get(name, (name, {}))
        print(f"{name}: {VARIANTS[row]}{f' with {overrides}' if overrides else ''}: "
              f"loss {loss.iloc[0]:.2f} -> {loss.iloc[-1]:.2f}, ICL score (last) {icl.iloc[-1]:+.3f}")
        print("\n".join("  " + line for line in head_order(results, config.recipe.model.n_ctx)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
