"""Essential dynamics (REFERENCE.md §2.3): PCA of per-checkpoint outputs and its turning points.

The group's recipe ([ICL] ``notebooks/ed-*.ipynb``; [DI] branch ``stan/forms``):

1. a fixed probe set; one output vector per checkpoint (LM: per-token losses), stacked into
   F (checkpoints x probes);
2. PCA of F with centred columns; the PC scores of each checkpoint form a trajectory;
3. each PC trajectory is smoothed in checkpoint index by a Gaussian filter whose sigma grows with
   the index (checkpoints are linear in step while development is log-paced): for checkpoint i,
   ``gaussian_filter1d(x[i - r : i + r + 1], sigma_i)`` with r = int(4 sigma_i + 0.5), centre kept;
4. in each PC plane, the curvature of the smoothed curve, kappa = |r' x r''| / |r'|^3, the radius
   R = 1 / (kappa + 1e-12) and the osculating circle's centre; the centres form the *evolute*;
5. candidate milestones: where the curve turns sharply (small R) and the evolute's cusps (vertices
   of the curve, extrema of curvature: consecutive centres barely move).

The papers pick "forms" by eye. Here a *turning point* (a candidate boundary) is a checkpoint
where the trajectory in the space of the first ``n_components`` PCs changes course: the angle
between the chords to the rows 2·sigma_i before and after it (sigma_i: the filter width there) is a
local maximum and at least ``min_angle`` (default 30°). The angle is scale-free (independent of
the PCs' units and of the speed along the curve) and separates a change of course from the wobble
noise leaves. The curvature, radius and evolute of the smoothed curve (steps 3-5) are returned
too, for plots and for picking forms the papers' way. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from devinterp.tables import METRIC_COLUMNS, normalize_metrics


def growing_sigmas(n: int, start: float = 1.0, end: float | None = None) -> np.ndarray:
    """sigma_i = linspace(start, end, n). Default ``end`` = n / 10, the LM paper's ratio
    (linspace(1, 50, 501), REFERENCE.md §2.3), never below ``start``."""
    if end is None:
        end = max(start, n / 10.0)
    return np.linspace(float(start), float(end), n)


def smooth_growing(x: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Smooth the rows of ``x`` (n x k, along axis 0) with a Gaussian whose sigma varies with the
    index: for row i, the filter of width ``sigmas[i]`` is applied to the window i ± int(4σ+0.5)
    (scipy's own truncation, mode 'reflect' at the window's ends) and row i of the result kept."""
    x = np.asarray(x, float)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[:, None]
    n = len(x)
    sigmas = np.broadcast_to(np.asarray(sigmas, float), (n,))
    out = np.empty_like(x)
    for i, s in enumerate(sigmas):
        if s <= 0:
            out[i] = x[i]
            continue
        r = int(4.0 * s + 0.5)
        lo, hi = max(0, i - r), min(n, i + r + 1)
        out[i] = gaussian_filter1d(x[lo:hi], s, axis=0, mode="reflect")[i - lo]
    return out[:, 0] if squeeze else out


def _derivatives(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central first and second differences r', r'' of a curve (n x d); one-sided copies at the ends."""
    d1 = np.empty_like(c)
    d2 = np.empty_like(c)
    d1[1:-1] = (c[2:] - c[:-2]) / 2.0
    d2[1:-1] = c[2:] - 2.0 * c[1:-1] + c[:-2]
    d1[0], d1[-1] = d1[1], d1[-2]
    d2[0], d2[-1] = d2[1], d2[-2]
    return d1, d2


def curvature(c: np.ndarray) -> np.ndarray:
    """Curvature of a curve c (n x d, d >= 2) at each index, kappa = sqrt(|r'|²|r''|² - (r'·r'')²) / |r'|³
    (= |r' x r''| / |r'|³ in a plane); 0 where the curve does not move. n >= 3."""
    c = np.asarray(c, float)
    if len(c) < 3:
        return np.zeros(len(c))
    d1, d2 = _derivatives(c)
    s2 = (d1**2).sum(1)
    cross2 = np.clip(s2 * (d2**2).sum(1) - (d1 * d2).sum(1) ** 2, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.sqrt(cross2) / s2**1.5
    return np.where(s2 > 0, k, 0.0)


def osculating(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a plane curve c (n x 2): curvature kappa, radius R = 1/(kappa + 1e-12) and the centres
    of the osculating circles (the evolute), c_t + R n̂ with n̂ the unit tangent turned 90° toward
    the side the curve bends to (the sign of r' x r'')."""
    c = np.asarray(c, float)
    d1, d2 = _derivatives(c)
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    speed = np.sqrt((d1**2).sum(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(speed > 0, np.abs(cross) / speed**3, 0.0)
        t = d1 / speed[:, None]
    t = np.nan_to_num(t)
    normal = np.sign(cross)[:, None] * np.column_stack([-t[:, 1], t[:, 0]])
    radius = 1.0 / (kappa + 1e-12)
    return kappa, radius, c + radius[:, None] * normal


@dataclass
class TurningPoint:
    """A candidate boundary: checkpoint ``index`` (row of the features), its ``step``, the
    curvature there and the turning ``angle`` (radians) across the curvature peak."""

    index: int
    step: int
    curvature: float
    angle: float


@dataclass
class EDResult:
    """Essential dynamics of one run.

    Attributes:
        steps: (T,) training steps of the rows.
        scores: (T, k) PC scores (raw); ``smoothed``: the same after the growing Gaussian filter.
        explained_variance_ratio: (k,) share of the total variance of each PC.
        components: (k, P) principal axes; ``mean``: (P,) the column means removed.
        sigmas: (T,) the filter widths used.
        curvature: (T,) curvature of the smoothed trajectory in the k-PC space.
        planes: {(i, j): (kappa, R, evolute centres)} for each PC plane (0-based PCs).
        turning_points: candidate boundaries, in step order.
        checkpoints: (T,) the metrics table's checkpoint index of each row (set by
            :func:`ed_from_metrics`; None when built from a bare matrix).
    """

    steps: np.ndarray
    scores: np.ndarray
    smoothed: np.ndarray
    explained_variance_ratio: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    sigmas: np.ndarray
    curvature: np.ndarray
    planes: dict = field(default_factory=dict)
    turning_points: list[TurningPoint] = field(default_factory=list)
    checkpoints: np.ndarray | None = None  # (T,) checkpoint index of each row, when known

    @property
    def boundaries(self) -> list[int]:
        """Steps of the turning points."""
        return [t.step for t in self.turning_points]


def pca(features: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA with centred columns by SVD: (scores T x k, explained variance ratio k, components k x P,
    column means P). Signs are fixed so that each component's largest-|.| loading is positive."""
    F = np.asarray(features, float)
    mu = F.mean(0)
    Fc = F - mu
    U, S, Vt = np.linalg.svd(Fc, full_matrices=False)
    k = min(n_components, len(S))
    total = float((S**2).sum())
    evr = (S[:k] ** 2) / total if total > 0 else np.zeros(k)
    comps = Vt[:k]
    sign = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    sign[sign == 0] = 1.0
    comps = comps * sign[:, None]
    scores = U[:, :k] * S[:k] * sign
    return scores, evr, comps, mu


def turning_angle(c: np.ndarray, half_widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angle (radians) between the chords c[i] - c[i-k] and c[i+k] - c[i], with k = the smaller of
    ``half_widths[i]`` and the room to either end. Returns (angles, k); angle 0 where k < 1."""
    c = np.asarray(c, float)
    n = len(c)
    ks = np.minimum(np.asarray(half_widths, int), np.minimum(np.arange(n), n - 1 - np.arange(n)))
    th = np.zeros(n)
    for i, k in enumerate(ks):
        if k < 1:
            continue
        u, v = c[i] - c[i - k], c[i + k] - c[i]
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        if nu > 0 and nv > 0:
            th[i] = np.arccos(np.clip(u @ v / (nu * nv), -1.0, 1.0))
    return th, ks


def turning_points(scores: np.ndarray, steps: np.ndarray, sigmas: np.ndarray, *, min_angle: float = np.pi / 6,
                   max_points: int | None = None, min_half_width: int = 2) -> list[TurningPoint]:
    """Where the PC trajectory changes course: local maxima of the turning angle over a window of
    ±k_i rows, k_i = ceil(2 sigma_i) (the smoothing scale at that checkpoint), that reach
    ``min_angle``; the ``max_points`` largest when given. Rows with less than ``min_half_width``
    rows of room to an end are skipped.

    The chords are taken on the PC scores themselves: averaging over 2 sigma_i rows each side
    plays the role of the filter, and the window is symmetric, whereas the growing filter smooths
    the rows after a turn more than those before it, which pulls the smoothed curve's curvature
    peak 1-2 checkpoints early on planted turns (the tests check the location within ±1)."""
    c = np.asarray(scores, float)
    if c.ndim == 1:
        c = c[:, None]
    n = len(c)
    if c.shape[1] == 1:  # a 1-D trajectory only reverses: add time as a coordinate of unit scale
        c = np.column_stack([c, np.linspace(0, np.ptp(c[:, 0]) or 1.0, n)])
    th, ks = turning_angle(c, np.maximum(1, np.ceil(2 * np.asarray(sigmas, float))).astype(int))
    out = []
    for i in range(n):
        k = int(ks[i])
        if k < min_half_width or th[i] < min_angle:
            continue
        lo, hi = max(0, i - k), min(n, i + k + 1)
        if th[i] >= th[lo:hi].max() and not any(abs(t.index - i) <= k for t in out):
            out.append(TurningPoint(int(i), int(steps[i]), float("nan"), float(th[i])))
    if max_points is not None:
        out = sorted(sorted(out, key=lambda t: -t.angle)[:max_points], key=lambda t: t.index)
    return out


def essential_dynamics(features: np.ndarray, steps, n_components: int = 3, *,
                       sigma_start: float = 1.0, sigma_end: float | None = None,
                       min_angle: float = np.pi / 6, max_points: int | None = None) -> EDResult:
    """Essential dynamics of a run.

    Args:
        features: checkpoints x probes (e.g. per-token losses on a fixed probe set), rows in step
            order; non-finite columns are dropped.
        steps: (T,) training step of each row.
        n_components: PCs kept (3 for plots in the papers).
        sigma_start, sigma_end: the growing filter widths, linspace(start, end, T) in checkpoint
            index (default end = T / 10, the LM paper's 1 -> 50 over 501 checkpoints); 0 = no
            smoothing.
        min_angle, max_points: selection of turning points (see :func:`turning_points`).

    Returns an :class:`EDResult`.
    """
    F = np.asarray(features, float)
    steps = np.asarray(steps)
    if F.ndim != 2 or len(F) != len(steps):
        raise ValueError(f"features must be (checkpoints x probes) with one row per step; got shape "
                         f"{F.shape} and {len(steps)} steps")
    order = np.argsort(steps, kind="stable")
    F, steps = F[order], steps[order]
    keep = np.isfinite(F).all(0)
    if not keep.any():
        raise ValueError("no probe column is finite at every checkpoint")
    F = F[:, keep]
    if len(F) < 2:
        raise ValueError(f"essential dynamics needs at least 2 checkpoints, got {len(F)}")
    scores, evr, comps, mu = pca(F, n_components)
    sig = growing_sigmas(len(F), sigma_start, sigma_end) if (sigma_start or sigma_end) else np.zeros(len(F))
    sm = smooth_growing(scores, sig)
    planes = {}
    if sm.shape[1] >= 2 and len(sm) >= 3:
        for i, j in combinations(range(sm.shape[1]), 2):
            planes[(i, j)] = osculating(sm[:, [i, j]])
    kappa = curvature(sm) if sm.shape[1] >= 2 and len(sm) >= 3 else np.zeros(len(sm))
    tps = turning_points(scores, steps, np.maximum(sig, 0.5), min_angle=min_angle, max_points=max_points)
    for t in tps:
        t.curvature = float(kappa[t.index])
    full_comps = np.zeros((comps.shape[0], len(keep)))
    full_comps[:, keep] = comps
    full_mu = np.full(len(keep), np.nan)
    full_mu[keep] = mu
    return EDResult(steps, scores, sm, evr, full_comps, full_mu, sig, kappa, planes, tps)


def ed_rows(result: EDResult, *, run: str = "run", checkpoints=None, smoothed: bool = False) -> pd.DataFrame:
    """Metrics-table rows ``ed_pc1``, ``ed_pc2``, ... (model-level: layer, head, chain null), one
    per checkpoint and PC, so they can be a signal of :func:`detect_stages` and be appended to the
    metrics table they came from. ``value`` is the raw PC score (the detector smooths on its own)
    or the smoothed one; ``checkpoint`` defaults to ``result.checkpoints``, else the row index."""
    T, k = result.scores.shape
    vals = result.smoothed if smoothed else result.scores
    if checkpoints is None:
        checkpoints = result.checkpoints
    ck = np.arange(T) if checkpoints is None else np.asarray(checkpoints)
    rows = [dict(run=run, step=int(result.steps[t]), checkpoint=int(ck[t]), metric=f"ed_pc{j + 1}",
                 value=float(vals[t, j])) for j in range(k) for t in range(T)]
    return normalize_metrics(pd.DataFrame(rows, columns=["run", "step", "checkpoint", "metric", "value"]))[METRIC_COLUMNS]


TOKEN_METRIC = "token_loss"


def token_loss_matrix(metrics: pd.DataFrame, *, run: str | None = None,
                      metric: str = TOKEN_METRIC) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The checkpoints x probes matrix of a sweep's per-token losses, or None without such rows.

    The sweep writes one row per checkpoint and probe: ``metric`` == 'token_loss', ``value`` = the
    loss (nats) of one fixed held-out probe token, and an integer column ``token`` (the probe's
    index); layer, head and chain null. Returns (F, steps, checkpoints) with rows in step order and
    columns in probe order; a probe missing at some checkpoint leaves NaN there (essential dynamics
    then drops that probe), and a checkpoint with no probe at all is left out.

    Raises ValueError when the rows lack the ``token`` column, or when ``run`` is None and the table
    holds token losses of more than one run.
    """
    m = normalize_metrics(metrics)
    rows = m[(m["metric"] == metric) & m["layer"].isna() & m["head"].isna() & m["chain"].isna()]
    if run is not None:
        rows = rows[rows["run"] == run]
    if rows.empty:
        return None
    if "token" not in rows.columns:
        raise ValueError(f"{metric!r} rows need an integer 'token' column (the probe index); "
                         f"the table has {list(m.columns)}")
    runs = sorted(pd.unique(rows["run"].dropna()))
    if len(runs) > 1:
        raise ValueError(f"the table holds {metric!r} rows of several runs {runs}: pass run=")
    rows = rows[rows["token"].notna() & np.isfinite(rows["value"].to_numpy(float, na_value=np.nan))]
    if rows.empty:
        return None
    wide = rows.pivot_table(index="checkpoint", columns="token", values="value", aggfunc="mean")
    wide = wide.dropna(how="all")
    steps = rows.groupby("checkpoint")["step"].first().loc[wide.index]
    order = np.argsort(steps.to_numpy(), kind="stable")
    wide = wide.iloc[order]
    wide = wide[sorted(wide.columns)]
    return wide.to_numpy(float), steps.to_numpy(np.int64)[order], wide.index.to_numpy(np.int64)


def ed_from_metrics(metrics: pd.DataFrame, n_components: int = 3, *, run: str | None = None,
                    metric: str = TOKEN_METRIC, **settings) -> EDResult | None:
    """Essential dynamics of a sweep, from the ``token_loss`` rows of its metrics table (see
    :func:`token_loss_matrix`), or None when it has none. ``settings`` go to
    :func:`essential_dynamics` (sigma_start, sigma_end, min_angle, max_points). The result knows
    the table's checkpoint indices, so ``ed_rows(result, run=...)`` can be appended to the table."""
    got = token_loss_matrix(metrics, run=run, metric=metric)
    if got is None:
        return None
    F, steps, checkpoints = got
    result = essential_dynamics(F, steps, n_components, **settings)
    result.checkpoints = checkpoints
    return result
