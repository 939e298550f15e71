"""Change points with ruptures, on a derived signal whose segments end at critical points.

REFERENCE.md §5.1: a change-point cost on the raw LLC level finds kinks, not the papers'
boundaries. What is segmented here is the *slope state* of each signal: its smoothed slope against
the axis in units of its own posterior sd, divided by the simultaneous threshold and clipped to
[-1, 1] (+1 = significantly rising, -1 = significantly falling, 0 = flat within noise). By
construction each feature's noise has sd ≈ 1/z_crit, so the BIC penalty is
pen = log(n) · Σ_j (1/z_crit)² with no free constant (ruptures docs: pen = log(n)·d·σ²).
Segments are then labelled +1/-1/0 by the sign of the primary signal's mean state, and the
boundaries are placed as in :mod:`devinterp.transitions.critical` (zero crossing of a peak or
trough, lowest slope of a plateau, edges of a flat stage).
"""

from __future__ import annotations

import numpy as np
import ruptures as rpt

from devinterp.transitions.exceptions import BadSegmentationParameters

ALGORITHMS = ("pelt", "binseg", "kernel")


def check_segmentation(n_samples: int, *, n_bkps: int | None, min_size: int, jump: int = 1) -> None:
    """Raise :class:`BadSegmentationParameters` (with the numbers) where ruptures' sanity check
    would fail: n_bkps > n_samples // jump, or n_bkps·⌈min_size/jump⌉·jump + min_size > n_samples."""
    if n_samples < 2 * min_size and (n_bkps or 0) > 0:
        raise BadSegmentationParameters(
            f"cannot split {n_samples} samples into {n_bkps + 1} segments of at least min_size={min_size} "
            f"(jump={jump})")
    if n_bkps is None:
        if n_samples < min_size:
            raise BadSegmentationParameters(f"n_samples={n_samples} is below min_size={min_size} (jump={jump})")
        return
    if n_bkps > n_samples // jump or n_bkps * int(np.ceil(min_size / jump)) * jump + min_size > n_samples:
        raise BadSegmentationParameters(
            f"cannot place n_bkps={n_bkps} breaks in n_samples={n_samples} with min_size={min_size}, "
            f"jump={jump}: need n_bkps*ceil(min_size/jump)*jump + min_size <= n_samples; "
            "ask for fewer stages or a smaller min_size")


def segment(signal: np.ndarray, *, algorithm: str = "pelt", pen: float | None = None, n_bkps: int | None = None,
            min_size: int = 2, model: str = "l2") -> list[int]:
    """Interior breakpoints of ``signal`` (n_samples[, n_features]) with jump=1: each is the first
    index of a new segment (ruptures' trailing n_samples is removed).

    ``algorithm``: 'pelt' (penalty only), 'binseg' (penalty or n_bkps), 'kernel' (KernelCPD, rbf
    kernel; penalty or n_bkps). Exactly one of ``pen`` / ``n_bkps`` (Pelt: ``pen``).
    """
    signal = np.asarray(signal, float)
    n = len(signal)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if (pen is None) == (n_bkps is None):
        raise ValueError("give exactly one of pen= or n_bkps=")
    if algorithm == "pelt" and n_bkps is not None:
        algorithm = "binseg"  # Pelt has no n_bkps rule
    check_segmentation(n, n_bkps=n_bkps, min_size=min_size)
    if n_bkps == 0:
        return []
    if algorithm == "pelt":
        algo = rpt.Pelt(model=model, min_size=min_size, jump=1).fit(signal)
    elif algorithm == "binseg":
        algo = rpt.Binseg(model=model, min_size=min_size, jump=1).fit(signal)
    else:
        algo = rpt.KernelCPD(kernel="rbf" if model not in ("linear", "cosine") else model, min_size=min_size).fit(signal)
    try:
        bkps = algo.predict(pen=pen) if n_bkps is None else algo.predict(n_bkps=n_bkps)
    except rpt.exceptions.BadSegmentationParameters:
        raise BadSegmentationParameters(
            f"ruptures refused n_samples={n}, n_bkps={n_bkps}, min_size={min_size}, jump=1") from None
    return [int(b) for b in bkps[:-1]]


def state_features(zs: list[np.ndarray], z_crit: float) -> np.ndarray:
    """Stack each signal's slope z-scores as clip(z / z_crit, -1, 1): (n_samples, n_signals)."""
    return np.column_stack([np.clip(np.asarray(z, float) / z_crit, -1.0, 1.0) for z in zs])


def bic_penalty(n_samples: int, n_features: int, z_crit: float) -> float:
    """log(n) · d · σ² with σ = 1/z_crit, the noise sd of a clipped slope-state feature."""
    return float(np.log(max(n_samples, 2)) * n_features / z_crit**2)


def segment_states(features: np.ndarray, *, algorithm: str = "pelt", pen: float | None = None,
                   n_bkps: int | None = None, min_size: int = 2) -> np.ndarray:
    """Per-sample state (+1, -1, 0) from a segmentation of ``features``: each segment takes the
    sign of its mean in column 0 (the primary signal) where that mean exceeds 1/2 in size."""
    bkps = segment(features, algorithm=algorithm, pen=pen, n_bkps=n_bkps, min_size=min_size)
    edges = [0, *bkps, len(features)]
    state = np.zeros(len(features), int)
    for a, b in zip(edges[:-1], edges[1:]):
        mu = float(features[a:b, 0].mean())
        state[a:b] = 1 if mu > 0.5 else (-1 if mu < -0.5 else 0)
    return state
