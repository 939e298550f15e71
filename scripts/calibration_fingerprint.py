#!/usr/bin/env python
"""Fingerprint of ``calibrate_llc``: the tables (every field but ``seconds``), choices and settings of
nine fixed calibrations on analytic models, written as JSON. Run it before and after a change to the
search and compare the files byte for byte: a refactor must leave them identical (about 2 minutes on
one CPU core). The cases reach every branch of the search: screening, the screen ceiling, the
divergence margin, the predicted drift ratio, the capped-mixing skip, locality rejection, models off
a minimum, the fallback bisection, ``safety`` and a failed calibration.

    git worktree add /tmp/old <commit> && PYTHONPATH=/tmp/old python scripts/calibration_fingerprint.py before.json
    python scripts/calibration_fingerprint.py after.json && cmp before.json after.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "llc"))
from llc_analytic_models import GaussianWell, Potential, gaussian_well_loss, half_mse, off_minimum_regression  # noqa: E402

from devinterp.llc import CalibrationError, calibrate_llc  # noqa: E402


def _clean(x):
    """JSON-comparable: non-finite floats as text, run times dropped."""
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def fingerprint(run) -> dict:
    try:
        out = run()
        return {"choice": out.choice, "table": _clean(out.table), "settings": out.model_dump()}
    except CalibrationError as err:
        return {"error": str(err), "table": _clean(err.table)}


def cases() -> dict:
    def saddle(model, batch):  # K = w1^2 - w2^4: needs the fallback grid
        return model.w[0] ** 2 - model.w[1] ** 4

    pot = dict(n=1000, chains=4, burnin=100, draws=300, batch_size=1, init_loss_batches=1,
               epsilons=[1e-2, 1e-3, 3e-4, 1e-4, 1e-5])
    wells = dict(n=1000, chains=4, burnin=100, draws=200, batch_size=1, init_loss_batches=1)
    wide_eps = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5]
    off, at_min, data = off_minimum_regression()
    reg = dict(chains=4, burnin=300, draws=600, batch_size=1000, init_loss_batches=1,
               epsilons=[2.5e-4, 2e-4, 1.5e-4], fallback_deltas=())
    return {
        "potential": lambda: calibrate_llc(Potential(2), [None], saddle, **pot),
        "potential_no_fallback": lambda: calibrate_llc(Potential(2), [None], saddle, fallback_deltas=(), **pot),
        "wells_and_hill": lambda: calibrate_llc(
            [GaussianWell(200, -0.5), GaussianWell(200, 0.3), GaussianWell(200, 0.5)], [None], gaussian_well_loss,
            epsilons=wide_eps[:7], **wells),
        "wells_400": lambda: calibrate_llc([GaussianWell(400, 0.3), GaussianWell(400, 0.5)], [None],
                                           gaussian_well_loss, epsilons=wide_eps, **wells),
        "wells_400_safety": lambda: calibrate_llc([GaussianWell(400, 0.3), GaussianWell(400, 0.5)], [None],
                                                  gaussian_well_loss, safety=2, divergence_margin=3,
                                                  epsilons=wide_eps, **wells),
        "off_minimum": lambda: calibrate_llc([off, at_min], data, half_mse, **reg),
        "off_minimum_alone": lambda: calibrate_llc([off], data, half_mse, **reg),
        "no_screen": lambda: calibrate_llc([GaussianWell(200, 0.3), GaussianWell(200, 0.5)], [None],
                                           gaussian_well_loss, screen_steps=0, epsilons=[1e-1, 1e-2, 1e-3, 1e-4],
                                           **wells),
        "divergence_edge": lambda: calibrate_llc(
            Potential(2), [None], saddle, **{**pot, "screen_steps": 0,
                                             "epsilons": [3e-1, 2e-1, 1e-1, 6e-2, 3e-2, 1e-2, 5e-3, 1e-3, 3e-4, 1e-4]}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {}
    for name, run in cases().items():
        result[name] = fingerprint(run)
        print(name, (result[name].get("choice") or result[name].get("error"))[:100], flush=True)
    args.output.write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
