"""Bootstrap confidence of boundaries: how often each reappears, and where.

With per-chain LLC values, whole chains are resampled with replacement (a chain keeps its values at
every checkpoint, so its offset, shared across checkpoints, travels with it). Without them, the
smoother's residuals are resampled (a residual bootstrap; it treats residuals as independent, so it
can overstate confidence when they are correlated — the stages table's caller is told so).
Deterministic under ``seed``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def resamples(y: np.ndarray, *, chains: np.ndarray | None, fitted: np.ndarray, n: int, seed: int):
    """Yield ``n`` resampled series (the mode is decided by ``chains``: None -> residual bootstrap)."""
    rng = np.random.default_rng(seed)
    if chains is not None and len(chains) >= 2:
        base = chains.mean(0)
        for _ in range(n):
            idx = rng.integers(0, len(chains), len(chains))
            yield y + chains[idx].mean(0) - base
    else:
        resid = y - fitted
        resid = resid - resid.mean()
        for _ in range(n):
            yield fitted + resid[rng.integers(0, len(y), len(y))]


def boundary_confidence(boundaries: list[int], detect: Callable[[np.ndarray], list[int]], series,
                        tolerance: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each boundary (checkpoint index): the share of resamples with a boundary within
    ``tolerance`` checkpoints, and the 5%–95% range of the nearest resampled boundary (searched up to
    half-way to the neighbouring boundaries). Returns (confidence, lo_index, hi_index)."""
    b = np.asarray(boundaries, int)
    hits = np.zeros(len(b))
    near: list[list[int]] = [[] for _ in b]
    total = 0
    for ys in series:
        total += 1
        found = np.asarray(detect(ys), int)
        if len(found) == 0:
            continue
        for k, bk in enumerate(b):
            left = (b[k - 1] + bk) / 2 if k > 0 else -np.inf
            right = (bk + b[k + 1]) / 2 if k + 1 < len(b) else np.inf
            cand = found[(found > left) & (found < right)]
            if len(cand):
                c = int(cand[np.argmin(np.abs(cand - bk))])
                near[k].append(c)
                hits[k] += abs(c - bk) <= tolerance
    conf = hits / total if total else np.full(len(b), np.nan)
    # the interval always contains the boundary itself
    lo = np.array([min(np.percentile(v, 5), bk) if v else bk for v, bk in zip(near, b)])
    hi = np.array([max(np.percentile(v, 95), bk) if v else bk for v, bk in zip(near, b)])
    return conf, np.floor(lo).astype(int), np.ceil(hi).astype(int)


def step_interval(steps: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """The steps bounding a boundary whose checkpoint-index interval is ``lo..hi``, widened by the
    grid's resolution: a boundary placed at a checkpoint is only known to lie nearer to it than to
    its neighbours, so each end moves half-way (in log(step + 1), the papers' axis) to the
    neighbouring checkpoint outside the interval; the first and last checkpoints are not widened
    past. Denser checkpoints therefore narrow the interval even when every resample agrees."""
    steps = np.asarray(steps, float)
    n = len(steps)
    lo, hi = int(np.clip(lo, 0, n - 1)), int(np.clip(hi, 0, n - 1))

    def halfway(a: float, b: float) -> float:  # midpoint of log(step + 1)
        return float(np.sqrt((a + 1.0) * (b + 1.0)) - 1.0)

    s_lo = halfway(steps[lo - 1], steps[lo]) if lo > 0 else steps[lo]
    s_hi = halfway(steps[hi], steps[hi + 1]) if hi + 1 < n else steps[hi]
    return int(np.floor(s_lo)), int(np.ceil(s_hi))
