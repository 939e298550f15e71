"""Stage detection from the metrics table (never imports torch).

Small modules, one job each (after ruptures):

- ``signals``: rows → per-checkpoint arrays on an axis; noise from the data.
- ``smoothing``: the GP smoother (linear in the data; Matern-5/2 or RBF kernel; axis chosen by
  marginal likelihood), its slope and their uncertainty.
- ``critical``: critical points of the smoothed slope (the papers' boundaries).
- ``localize``: where exactly each boundary lies, and the tests the slope cannot settle, from a
  local fit of the raw data.
- ``changepoints``: ruptures on slope states (a derived signal), with checked parameters.
- ``classify``: type A / B / '-' from d_llc and its standard error.
- ``bootstrap``: chain (or residual) bootstrap of boundary confidence.
- ``heads``: the heads that changed most over a stage.
- ``essential_dynamics``: PCA of per-token losses across checkpoints and its turning points (also
  straight from a sweep's ``token_loss`` rows).
- ``detect``: :func:`detect_stages`, the whole pipeline.
"""

from devinterp.transitions.changepoints import bic_penalty, check_segmentation, segment
from devinterp.transitions.classify import classify_stage
from devinterp.transitions.critical import Boundary, SlopeProfile, critical_z, find_critical_points
from devinterp.transitions.detect import detect_stages
from devinterp.transitions.essential_dynamics import (
    EDResult, TurningPoint, ed_from_metrics, ed_rows, essential_dynamics, token_loss_matrix,
)
from devinterp.transitions.exceptions import BadSegmentationParameters, DetectionError
from devinterp.transitions.heads import rank_heads
from devinterp.transitions.signals import Signal, llc_signal, model_signal, noise_sd, to_axis
from devinterp.transitions.smoothing import GPFit, fit_gp, fit_on_axis, slope_profile

__all__ = [
    "BadSegmentationParameters", "Boundary", "DetectionError", "EDResult", "GPFit", "Signal", "SlopeProfile",
    "TurningPoint", "ed_from_metrics", "ed_rows", "essential_dynamics", "fit_on_axis", "token_loss_matrix",
    "bic_penalty", "check_segmentation", "classify_stage", "critical_z", "detect_stages",
    "find_critical_points", "fit_gp", "llc_signal", "model_signal", "noise_sd", "rank_heads",
    "segment", "slope_profile", "to_axis",
]
