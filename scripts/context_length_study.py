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
# not in the table: the run measured end to end (LLC too) with scripts/reproduce_induction_paper.py
LONGER = {"v512c128sin-12k": ("v512c128sin", 12_000)}


def variant_config(name: str) -> dict:
    """The raw config of a variant (of VARIANTS, or of LONGER: a variant trained longer)."""
    name, longer = LONGER.get(name, (name, None))
    vocab, ctx, trigrams, (n_copies, span_min, span_max), pos_init, steps = VARIANTS[name]
    steps = longer or steps
    raw = yaml.safe_load(BASE.read_text())
    return merge(raw, {"name": name, "recipe": {
        "model": {"n_ctx": ctx, "d_vocab": vocab},
        "data": {"trigram_contexts": trigrams, "n_copies": n_copies, "span_min": span_min, "span_max": span_max},
        "train": {"steps": steps, "pos_init": pos_init, "schedule": SCHEDULE}}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/context-study", help="parent folder of the runs (default: %(default)s)")
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="variants to run (default: all)")
    parser.add_argument("--write-config", nargs=2, metavar=("VARIANT", "PATH"),
                        help=f"only write a variant's config YAML (also {', '.join(LONGER)}) and exit")
    args = parser.parse_args(argv)
    if args.write_config:
        name, path = args.write_config
        if name not in VARIANTS and name not in LONGER:
            parser.error(f"--write-config: unknown variant {name!r}")
        Path(path).write_text(yaml.safe_dump({**variant_config(name), "name": name}, sort_keys=False))
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
        print(f"{name}: {VARIANTS[name]}: loss {loss.iloc[0]:.2f} -> {loss.iloc[-1]:.2f}, "
              f"ICL score (last) {icl.iloc[-1]:+.3f}")
        print("\n".join("  " + line for line in head_order(results, config.recipe.model.n_ctx)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
