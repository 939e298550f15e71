#!/usr/bin/env python
"""Is a small LLC dip real, and does stage detection see it? (BENCHMARKS.md, "The 16,000-step
shortformer run end to end".)

For a run directory: the LLC change between pairs of steps, paired across SGLD chains (the chains
share their random numbers across checkpoints, so each chain's own difference cancels its offset),
as mean ± standard error over chains; then the stages detection finds with its defaults, with other
smoother axes and kernels, and given only the checkpoints up to each ``--upto`` step (a shorter
stretch gets its own, shorter fitted length scale), each with the smoother's axis and length.

    python scripts/inspect_llc_dip.py out/v512c128sf-16k --pairs 500:2500 2500:5000 --upto 6000 8000
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np


def paired_change(signal, a: int, b: int) -> tuple[float, float, int]:
    """LLC(b) - LLC(a) per chain of ``signal`` (:func:`devinterp.transitions.signals.llc_signal`):
    (mean, standard error over chains, number of chains)."""
    steps = list(signal.step)
    if a not in steps or b not in steps:
        raise SystemExit(f"steps {a} and {b} must both have a healthy LLC with per-chain rows; have {steps}")
    d = signal.chains[:, steps.index(b)] - signal.chains[:, steps.index(a)]
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d)


def describe(stages) -> str:
    smoother = next(iter(stages.attrs["smoother"].values()))
    parts = [f"{int(r.start_step)}-{int(r.end_step)} {r.type} ({r.d_llc:+.1f})" for r in stages.itertuples()]
    return f"{', '.join(parts)}  [axis {smoother['axis']}, length {smoother['length']:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory (out/<name>) with LLC per-chain rows")
    parser.add_argument("--pairs", nargs="*", default=[], metavar="A:B", help="step pairs to compare (default: none)")
    parser.add_argument("--upto", nargs="*", type=int, default=[], help="also detect on the checkpoints up to these steps")
    args = parser.parse_args(argv)

    from devinterp.results import load_results
    from devinterp.transitions import detect_stages
    from devinterp.transitions.signals import llc_signal

    warnings.simplefilter("ignore")  # the unhealthy checkpoints dropped are listed once, below
    metrics = load_results(args.run).metrics
    signal = llc_signal(metrics)
    if signal is None or signal.chains is None:
        sys.exit(f"{args.run}: no LLC with per-chain rows")
    print("; ".join(signal.notes) or "every LLC estimate healthy")
    for pair in args.pairs:
        a, b = (int(x) for x in pair.split(":"))
        mean, se, n = paired_change(signal, a, b)
        ia, ib = list(signal.step).index(a), list(signal.step).index(b)
        levels = (f"{signal.y[ia]:.2f} ± {signal.stderr[ia]:.2f} -> {signal.y[ib]:.2f} ± {signal.stderr[ib]:.2f}"
                  if signal.stderr is not None else f"{signal.y[ia]:.2f} -> {signal.y[ib]:.2f}")
        print(f"LLC {levels}; LLC({b}) - LLC({a}), paired over {n} chains: {mean:+.2f} ± {se:.2f}")
    settings = [{}, {"axis": "log_step"}, {"axis": "step"}, {"kernel": "rbf"}, {"kernel": "auto"}]
    for kw in settings:
        print(f"detect {kw or 'defaults'}: {describe(detect_stages(metrics, bootstrap=0, **kw))}")
    for last in args.upto:
        print(f"detect up to step {last}: {describe(detect_stages(metrics[metrics['step'] <= last], bootstrap=0))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
