"""The local learning coefficient (LLC): estimator, calibration, diagnostics, per-head LLC.

* :func:`estimate_llc` — SGLD estimate at a model's current weights (REFERENCE.md §1.2–1.4).
* :func:`calibrate_llc` — pick SGLD settings once for a sweep (largest healthy epsilon).
* :func:`head_mask` — parameter mask of one attention head, for the weight-restricted LLC;
  :func:`estimate_restricted_llcs` — several restricted LLCs (e.g. every head) in one batched run.
* :func:`diagnose` and the checks in :mod:`devinterp.llc.diagnostics`.
"""

from devinterp.llc.analytic import normal_crossing_learning_coefficient, rrr_learning_coefficient
from devinterp.llc.calibrate import CalibratedSettings, CalibrationError, calibrate_llc
from devinterp.llc.diagnostics import Diagnosis, diagnose, ess, split_rhat, trend_z
from devinterp.llc.estimator import estimate_llc, estimate_restricted_llcs
from devinterp.llc.heads import head_mask, head_masks, parse_head
from devinterp.llc.result import LLCResult
from devinterp.llc.sgld import run_chains, sgld_step

__all__ = [
    "CalibratedSettings", "CalibrationError", "calibrate_llc", "normal_crossing_learning_coefficient",
    "rrr_learning_coefficient", "Diagnosis", "LLCResult", "diagnose", "ess", "estimate_llc",
    "estimate_restricted_llcs", "head_mask", "head_masks", "parse_head", "run_chains", "sgld_step", "split_rhat",
    "trend_z",
]
