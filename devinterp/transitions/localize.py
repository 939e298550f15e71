"""Where exactly a critical point lies: a local fit on the raw data around a detected boundary.

The smoother (smoothing.py) decides *whether* the LLC has a critical point between two runs of
significant slope; this module decides *where*. Reading the position off the smoothed curve is
biased: the smoother averages over about one length scale, and around a critical point whose two
sides bend at very different rates (a long stage tapering into a short one — common late in a
run, where stages are narrow in log step) the minimum of the smoothed |slope| moves several
checkpoints toward the flatter side (for a V of slopes a and c, a symmetric smoother puts the
minimum where its kernel's CDF equals c / (a + c)).

So the position is refitted on the data themselves, with the definition of a boundary
(DESIGN.md, REFERENCE.md §5.1) as the model. Against u = log(step + 1), near a critical point b
the LLC is, to second order,

    y = c + a (u − b)²  for u < b,        y = c + a' (u − b)²  for u > b,

continuous at b with zero slope there, and free to bend differently on each side (the two sides
belong to different stages). A peak, a trough, a plateau between stages of one type, and the edge
of a flat stage (one side constant: ``shape`` 'flat_after' / 'flat_before') are all this model.
For every candidate b on a fine grid it is a linear least-squares fit; b is the candidate with
the smallest residual sum of squares.

The window is the stretch around the boundary that the model describes. The detector supplies the
widest sensible one (``Boundary.lo``, ``.hi``): from the slope extremum (inflection of the level)
of the stage before to that of the stage after, between which the slope runs from one extremum
through zero to the other. Far from b the second-order model stops holding, so the window is
narrowed while the fit is worse than the noise allows — a lack-of-fit test, RSS / σ² against the
χ² quantile at level ``alpha``, with σ the checkpoint-to-checkpoint noise the smoother estimated —
narrowing from the side that fits worse. The test is run against the next Taylor order too (cubic
terms on each side), which catches the smooth misfit that biases b long before the residual sum
does.

Two tests the smoothed slope cannot settle are made here on the same model (critical.py, step 5):
:func:`flat_edge` (is there a flat first or last stage: does a flat side fit better than a stage
that merely runs out at the end of the data?) and :func:`plateau` (the dip test in level form,
for a long shallow stage next to a short steep one). Their thresholds are the detector's own
simultaneous z_crit.

No constant here is fitted to a benchmark: the model is the definition, the window ends are the
stages' inflections, the tests' levels are the detector's ``alpha`` and z_crit, and the "halving"
of the plateau test is the one of critical.py. ``SUBDIVISIONS`` and ``SHRINK`` set numerical
resolution only.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2

SUBDIVISIONS = 4  # candidate vertices per checkpoint interval next to the best checkpoint
SHRINK = 0.05  # share of a side's checkpoints dropped per narrowing step (at least one)
MIN_SIDE = 2  # checkpoints a fitted side keeps beyond the vertex (one curvature each: no interpolation)


def _design(u: np.ndarray, b: np.ndarray, shape: str, order: int = 2) -> np.ndarray:
    """Design matrices (len(b), len(u), p) of the model with vertex b: a constant and, on each
    fitted side, the powers 2..order of (u - b) (scaled to order one)."""
    scale = max(float(np.ptp(u)), 1e-12)
    d = (u[None, :] - b[:, None]) / scale
    cols = [np.ones_like(d)]
    for side, keep in ((np.minimum(d, 0.0), shape != "flat_before"), (np.maximum(d, 0.0), shape != "flat_after")):
        if keep:
            power = side * side
            cols.append(power)
            for _ in range(3, order + 1):
                power = power * side
                cols.append(power)
    return np.stack(cols, axis=-1)


def _rss(u: np.ndarray, y: np.ndarray, cand: np.ndarray, shape: str, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Residual sums of squares (len(cand),) and residuals (len(cand), len(u)) of the model fitted
    with each candidate vertex."""
    X = _design(u, cand, shape, order)
    Xt = X.transpose(0, 2, 1)
    XtX = Xt @ X
    Xty = Xt @ y
    ridge = 1e-12 * np.trace(XtX, axis1=1, axis2=2)[:, None, None] * np.eye(X.shape[-1])
    beta = np.linalg.solve(XtX + ridge, Xty[..., None])
    resid = y[None, :] - (X @ beta)[..., 0]
    return np.einsum("cn,cn->c", resid, resid), resid


def _fit(u: np.ndarray, y: np.ndarray, shape: str, between: tuple[float, float] = (-np.inf, np.inf),
         order: int = 2) -> tuple[float, float, np.ndarray] | None:
    """(rss, b, residuals) of the best vertex (restricted to ``between``), or None when no candidate
    leaves ``MIN_SIDE`` (+ 1 per extra order) checkpoints on each fitted side. Candidates: the
    checkpoints and the midpoints between them, then ``SUBDIVISIONS`` points per interval next to
    the best of those."""
    need = MIN_SIDE + order - 2

    def allowed(c: np.ndarray) -> np.ndarray:
        ok = (c >= between[0]) & (c <= between[1])
        if shape != "flat_before":
            ok &= (u[None, :] < c[:, None]).sum(1) >= need
        if shape != "flat_after":
            ok &= (u[None, :] > c[:, None]).sum(1) >= need
        return ok

    coarse = u.copy()
    coarse = coarse[allowed(coarse)]
    if not len(coarse):
        return None
    rss, _ = _rss(u, y, coarse, shape, order)
    b0 = coarse[int(np.argmin(rss))]
    i = int(np.searchsorted(u, b0))
    fine = np.linspace(u[max(i - 1, 0)], u[min(i + 1, len(u) - 1)], 4 * SUBDIVISIONS + 1)
    cand = np.concatenate([[b0], fine[allowed(fine)]])
    rss, resid = _rss(u, y, cand, shape, order)
    k = int(np.argmin(rss))
    return float(rss[k]), float(cand[k]), resid[k]


def _window(u: np.ndarray, y: np.ndarray, noise: float, shape: str, alpha: float) -> tuple[int, int, float | None]:
    """The narrowed window [lo, hi) (see the module docstring) and its vertex (None: too short).
    Each step drops the outermost ``SHRINK`` share (at least one) of the checkpoints of the side
    that fits worse (larger mean squared residual), as long as it keeps ``MIN_SIDE`` + 1 beyond
    the vertex."""
    lo, hi = 0, len(u)
    best = None
    while hi - lo >= 5:
        res = _fit(u[lo:hi], y[lo:hi], shape)
        if res is None:
            break
        rss, b, resid = res
        best = (lo, hi, b)
        df = (hi - lo) - (2 if shape != "two_sided" else 3) - 1  # coefficients and the vertex
        if noise <= 0 or df < 1:
            break
        n_extra = 1 if shape != "two_sided" else 2  # the third-order terms
        if rss <= noise**2 * chi2.isf(alpha, df):
            cubic = _fit(u[lo:hi], y[lo:hi], shape, order=3)
            if cubic is None or (rss - cubic[0]) <= noise**2 * chi2.isf(alpha, n_extra):
                break
        left = u[lo:hi] < b
        counts = [int(left.sum()), int((~left).sum())]
        mse = [np.mean(resid[left] ** 2) if counts[0] else -np.inf, np.mean(resid[~left] ** 2) if counts[1] else -np.inf]
        side = next((k for k in sorted([0, 1], key=lambda k: -mse[k]) if counts[k] > MIN_SIDE + 1), None)
        if side is None:
            break
        step = min(max(1, int(SHRINK * counts[side])), counts[side] - MIN_SIDE - 1)
        if side == 0:
            lo += step
        else:
            hi -= step
    return best if best is not None else (0, len(u), None)


def vertex(u: np.ndarray, y: np.ndarray, *, noise: float, shape: str = "two_sided",
           alpha: float = 0.05) -> float | None:
    """The critical point b (in u's units) of the data (u, y) of one window, or None when the window
    is too short (fewer than 5 checkpoints, or fewer than 2 beyond the vertex on a fitted side).

    Args:
        u: increasing positions (log(step + 1)) of the window's checkpoints; y: their values.
        noise: sd of the per-checkpoint noise of y (the smoother's); 0 or less skips the
            lack-of-fit narrowing.
        shape: 'two_sided', 'flat_after' (constant for u > b) or 'flat_before' (constant for u < b).
        alpha: level of the lack-of-fit test that narrows the window.
    """
    u = np.asarray(u, float)
    y = np.asarray(y, float)
    return _window(u, y, noise, shape, alpha)[2]


def flat_edge(u: np.ndarray, y: np.ndarray, *, noise: float, shape: str, z_crit: float, min_flat: int,
              alpha: float = 0.05) -> float | None:
    """The edge b of a flat first ('flat_before') or last ('flat_after') stage, or None when the
    data do not show one.

    The window runs from the end of the data to the inflection of the stage next to it. The model
    above (one side a parabola with its vertex at b, the other constant) is fitted twice: with b
    free, and with b so close to the end that the flat side holds fewer than ``min_flat``
    checkpoints — i.e. the stage simply runs out at the end of the data, its slope reaching zero
    there. The flat stage is accepted when the free fit is better by more than z_crit² noise
    variances (the detector's simultaneous threshold, squared: a one-parameter likelihood ratio at
    the detector's false-boundary rate) and its flat side holds at least ``min_flat`` checkpoints.
    """
    u = np.asarray(u, float)
    y = np.asarray(y, float)
    if noise <= 0 or len(u) < 5 + min_flat:
        return None
    lo, hi, b = _window(u, y, noise, shape, alpha)
    if b is None or (hi < len(u) if shape == "flat_after" else lo > 0):  # not flat to the end of the data
        return None
    u, y = u[lo:hi], y[lo:hi]
    n_flat = int(np.sum(u >= b)) if shape == "flat_after" else int(np.sum(u <= b))
    if n_flat < min_flat or len(u) <= min_flat:
        return None
    edge = (u[-min_flat], np.inf) if shape == "flat_after" else (-np.inf, u[min_flat - 1])
    free, ends = _fit(u, y, shape), _fit(u, y, shape, between=edge)
    if free is None or ends is None:
        return None
    return b if (ends[0] - free[0]) / noise**2 > z_crit**2 else None


def plateau(u: np.ndarray, y: np.ndarray, *, noise: float, sign: int, z_crit: float,
            alpha: float = 0.05) -> float | None:
    """A plateau between two stages whose slopes have sign ``sign``, tested on the data of one
    window, or None: the level-based form of the dip test (critical.py, steps 3 and 3b) for dips
    the smoothed slope cannot resolve — a long, shallow stage next to a short, steep one, where one
    length scale leaves the shallow stage's slope insignificant at every single point.

    The position b is the vertex of the model above on the narrowed window. There the model is
    refitted with the slope at b free, y = c + s (u − b) + a (u − b)² (u < b) + a' (u − b)² (u > b),
    and the plateau is accepted when the slope at b is significantly below the slope at each end of
    the window (each difference more than ``z_crit`` of its standard error, noise sd ``noise``) and
    below half of the lower of the two — the same two conditions as the slope test.
    """
    u = np.asarray(u, float)
    y = np.asarray(y, float)
    if noise <= 0 or sign == 0:
        return None
    lo, hi, b = _window(u, y, noise, "two_sided", alpha)
    if b is None:
        return None
    u, y = u[lo:hi], y[lo:hi]
    d = u - b
    X = np.column_stack([np.ones_like(u), d, np.minimum(d, 0.0) ** 2, np.maximum(d, 0.0) ** 2])
    if (d < 0).sum() < MIN_SIDE or (d > 0).sum() < MIN_SIDE or len(u) <= X.shape[1]:
        return None
    XtX_inv = np.linalg.pinv(X.T @ X)
    beta = XtX_inv @ X.T @ y
    cov = noise**2 * XtX_inv
    ends = [np.array([0.0, 1.0, 2.0 * d[0], 0.0]), np.array([0.0, 1.0, 0.0, 2.0 * d[-1]])]  # slopes at the ends
    at_b = np.array([0.0, 1.0, 0.0, 0.0])
    s_b = sign * float(at_b @ beta)
    flanks = []
    for e in ends:
        w = e - at_b
        diff = sign * float(w @ beta)
        if diff <= z_crit * np.sqrt(max(float(w @ cov @ w), 1e-300)):
            return None
        flanks.append(sign * float(e @ beta))
    return b if s_b < 0.5 * min(flanks) else None
