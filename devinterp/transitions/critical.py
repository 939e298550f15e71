"""Critical points of a smoothed signal: where its slope vanishes (REFERENCE.md §2.1, §5.1).

A stage boundary in the papers is a peak (slope + → −), a trough (− → +), or a plateau between two
stages of the same type (the slope dips to ≈ 0 and comes back). Here, with the slope g(x) of a GP
smoother and its posterior covariance on a grid:

1. a slope is *significant* where |g| / sd(g) > z_crit, with z_crit a simultaneous (Bonferroni)
   threshold over the number of independent slopes the smoother can show, span / length scale,
   so that a run without any stage gives a false boundary with probability ≈ ``alpha``;
2. maximal stretches of significant slope of one sign are *runs*; between two runs lies a gap
   where the slope is consistent with zero;
3. a gap between runs of opposite signs is a peak or trough (boundary at the zero crossing);
   a gap between runs of the same sign is a plateau only if the slope at its lowest point is
   significantly below a point of each run (the dip's own test, with the covariance of the two
   slopes) — gaps that are merely data-poor stretches fail this test and the runs merge,
   weakest first;
3b. inside a run, a local minimum of the slope is also a plateau when it is significant in the same
   sense *and* the slope falls there below half of the lower of its two flanking peaks: the rate of
   development halves and recovers. (The smoother rounds a point where the true slope touches
   zero into a shallow dip, so "consistent with zero" alone misses such plateaus when the data are
   dense; halving is the scale-free reading of "dips to about zero" used here.)
4. a gap wider than the smoother's resolution (2 length scales), holding enough checkpoints and
   with no significant level change across it, is a flat stage ('-'): boundaries at its edges.
5. every boundary carries the window that brackets it — from the steepest point (inflection of the
   level) of the stage before to that of the stage after — and the sign of the slope around it;
   localize.py refits its position on the data of that window. With ``tentative=True`` the cases
   the slope alone cannot settle are passed on for the data to decide (``Boundary.tentative``):
   the dips of step 3b that fail the slope test (a long shallow stage next to a short steep one
   leaves the shallow one's slope insignificant at every point), and a gap at either end of the
   data too short for step 4 (a short flat first or last stage, or a plateau before a shallow
   last stage).

The smoother may work on another axis than log step (DetectConfig.axis 'auto'). Signs, zero
crossings and significance are the same on any increasing axis, but *where the slope is lowest*
is not: a plateau is where the rate of development against log step dips (REFERENCE.md §2.1), so
steps 3 and 3b read the slope against log(step + 1) (``SlopeProfile.jacobian``), and the smoother's
own axis is kept for the flat-stage tests of step 4 (widths in length scales, level integrals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


@dataclass
class SlopeProfile:
    """Slope of a smoothed signal on a grid. ``xs``: grid (m,); ``g``: slope (m,); ``cov``: its
    posterior covariance (m, m); ``length``: the smoother's length scale; ``x_data``: x of the
    checkpoints behind it."""

    xs: np.ndarray
    g: np.ndarray
    cov: np.ndarray
    length: float
    x_data: np.ndarray
    jacobian: np.ndarray | None = None  # d(axis)/d log(step+1) on the grid (None = the axis is log step)

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 1e-300, None))

    def in_log_step(self) -> "SlopeProfile":
        """The same smoothed curve's slope against log(step + 1) (slope and covariance times the
        jacobian), on the same grid: what plateaus are read from (see the module docstring)."""
        if self.jacobian is None:
            return self
        J = np.asarray(self.jacobian, float)
        return SlopeProfile(self.xs, self.g * J, self.cov * J[:, None] * J[None, :], self.length, self.x_data)


@dataclass
class Boundary:
    """A detected boundary: position ``x`` on the axis, its kind ('peak', 'trough', 'plateau',
    'flat_start', 'flat_end'), and its strength (a z-score; larger = clearer). ``lo``, ``hi``: the
    window (on the axis) that brackets it, from the slope extremum (inflection of the level) of the
    stage before to that of the stage after — or, for the edge of a flat stage, the flat side's
    share of the flat stretch; ``shape``: 'two_sided', or 'flat_after' / 'flat_before' when the
    level is flat after / before it (what localize.py refits the position with)."""

    x: float
    kind: str
    strength: float
    lo: float | None = None
    hi: float | None = None
    shape: str = "two_sided"
    tentative: str = ""  # tests left to the data around it (localize.py): 'flat', 'plateau', 'flat|plateau'
    sign: int = 0  # sign of the slope of the stage before it


def critical_z(span: float, length: float, alpha: float) -> float:
    """Two-sided simultaneous threshold: Bonferroni over max(1, span / length) independent slopes."""
    n_eff = max(1.0, span / max(length, 1e-12))
    return float(norm.isf(alpha / (2.0 * n_eff)))


def _segments(state: np.ndarray) -> list[list[int]]:
    """Maximal constant stretches of ``state`` as [state, first, last] (grid indices)."""
    out: list[list[int]] = []
    for i, s in enumerate(state):
        if out and out[-1][0] == s:
            out[-1][2] = i
        else:
            out.append([int(s), i, i])
    return out


def _dip_strength(p: SlopeProfile, sign: int, run: tuple[int, int], d: int) -> float:
    """Largest z of (slope at a point of ``run`` − slope at dip ``d``), in the run's direction."""
    idx = np.arange(run[0], run[1] + 1)
    diff = sign * (p.g[idx] - p.g[d])
    var = p.cov[idx, idx] + p.cov[d, d] - 2 * p.cov[idx, d]
    return float(np.max(diff / np.sqrt(np.clip(var, 1e-300, None))))


def _level_change_z(p: SlopeProfile, i0: int, i1: int) -> float:
    """|∫ g dx| over grid [i0, i1] in units of its sd (trapezoid weights)."""
    if i1 <= i0:
        return 0.0
    w = np.zeros(len(p.xs))
    dx = np.diff(p.xs[i0:i1 + 1])
    w[i0:i1] += dx / 2
    w[i0 + 1:i1 + 1] += dx / 2
    var = float(w @ p.cov @ w)
    return abs(float(w @ p.g)) / np.sqrt(max(var, 1e-300))


def _is_flat(p: SlopeProfile, i0: int, i1: int, z: float, min_checkpoints: int) -> bool:
    x0, x1 = p.xs[i0], p.xs[i1]
    inside = int(np.sum((p.x_data >= x0) & (p.x_data <= x1)))
    return (x1 - x0) >= 2 * p.length and inside >= min_checkpoints and _level_change_z(p, i0, i1) < z


def _zero_crossing(p: SlopeProfile, a: int, b: int) -> float:
    """x of the sign change of g in grid [a, b] nearest the middle (interpolated)."""
    g = p.g
    idx = [i for i in range(a, b) if g[i] == 0 or g[i] * g[i + 1] < 0]
    if not idx:
        i = a + int(np.argmin(np.abs(g[a:b + 1])))
        return float(p.xs[i])
    mid = 0.5 * (p.xs[a] + p.xs[b])
    i = min(idx, key=lambda j: abs(p.xs[j] - mid))
    if g[i] == g[i + 1]:
        return float(p.xs[i])
    t = g[i] / (g[i] - g[i + 1])
    return float(p.xs[i] + t * (p.xs[i + 1] - p.xs[i]))


def _dips_in_run(p: SlopeProfile, sign: int, a: int, b: int,
                 z_crit: float) -> tuple[list[tuple[int, float]], list[tuple[int, int, int]]]:
    """The significant dips (see 3b in the module docstring) inside the run [a, b], as (grid index,
    strength), and the other dips, as (grid index, flanking maximum before, after)."""
    h = sign * p.g[a:b + 1]
    if len(h) < 5:
        return [], []
    inner = np.arange(1, len(h) - 1)
    is_max = (h[inner] >= h[inner - 1]) & (h[inner] > h[inner + 1])
    is_min = (h[inner] <= h[inner - 1]) & (h[inner] < h[inner + 1])
    ext = sorted([(int(i), "max") for i in inner[is_max]] + [(int(i), "min") for i in inner[is_min]])
    dips = [i for k, (i, t) in enumerate(ext) if t == "min" and 0 < k < len(ext) - 1
            and ext[k - 1][1] == "max" and ext[k + 1][1] == "max"]
    flanks = {i: (a + ext[k - 1][0], a + ext[k + 1][0]) for k, (i, t) in enumerate(ext) if i in dips}
    candidates = list(dips)
    while dips:
        scored = []
        for k, d in enumerate(dips):
            left = (dips[k - 1] if k else 0, d)
            right = (d, dips[k + 1] if k + 1 < len(dips) else len(h) - 1)
            pl, pr = h[left[0]:left[1] + 1].max(), h[right[0]:right[1] + 1].max()
            strength = min(_dip_strength(p, sign, (a + left[0], a + left[1]), a + d),
                           _dip_strength(p, sign, (a + right[0], a + right[1]), a + d))
            ok = strength >= z_crit and h[d] < 0.5 * min(pl, pr)
            scored.append((ok, strength, k))
        bad = [t for t in scored if not t[0]]
        if not bad:
            break
        dips.pop(min(bad, key=lambda t: t[1])[2])
    accepted = [(a + d, st) for (_, st, _), d in zip(scored, dips)] if dips else []
    rejected = [(a + d, *flanks[d]) for d in candidates if d not in dips]
    return accepted, rejected


def _peak_of(p: SlopeProfile, sign: int, a: int, b: int) -> int:
    """Grid index of the steepest slope (in the run's direction) in [a, b]: the stage's inflection."""
    return a + int(np.argmax(sign * p.g[a:b + 1]))


def find_critical_points(profile: SlopeProfile, z_crit: float, *, min_checkpoints: int = 3,
                         state: np.ndarray | None = None, tentative: bool = False) -> list[Boundary]:
    """Boundaries of ``profile`` at threshold ``z_crit`` (see the module docstring), sorted by x.

    ``min_checkpoints``: fewest checkpoints a flat ('-') stage must hold. ``state``: the slope's
    sign on the grid (+1, -1, 0 = not significant) when another method decided it (the change-point
    detector); default: thresholding |z| at ``z_crit``. ``tentative``: also return the candidates
    of step 5 (``Boundary.tentative`` set), which the caller must test on the data.
    """
    p = profile
    q = p.in_log_step()  # plateaus: lowest slope against log step
    z = p.g / p.sd
    if state is None:
        state = np.where(z > z_crit, 1, np.where(z < -z_crit, -1, 0))
    runs = [(s, a, b) for s, a, b in _segments(state) if s != 0]
    if not runs:
        return []
    # merge same-sign runs whose gap is not a significant dip, weakest first
    while True:
        weakest, where = np.inf, -1
        for k in range(len(runs) - 1):
            (s0, a0, b0), (s1, a1, b1) = runs[k], runs[k + 1]
            if s0 != s1:
                continue
            d = b0 + 1 + int(np.argmin(s0 * q.g[b0 + 1:a1]))
            strength = min(_dip_strength(q, s0, (a0, b0), d), _dip_strength(q, s1, (a1, b1), d))
            if strength < weakest:
                weakest, where = strength, k
        if where < 0 or weakest >= z_crit:
            break
        s0, a0, _ = runs[where]
        runs[where:where + 2] = [(s0, a0, runs[where + 1][2])]
    out: list[Boundary] = []
    xs = p.xs
    # plateaus inside runs, and each run's steepest point next to either end (between its dips)
    ends = []
    for s_, a_, b_ in runs:
        dips, others = _dips_in_run(q, s_, a_, b_, z_crit)
        cuts = [a_, *[d for d, _ in dips], b_]
        for k, (d, st) in enumerate(dips):
            lo, hi = _peak_of(q, s_, cuts[k], d), _peak_of(q, s_, d, cuts[k + 2])
            out.append(Boundary(float(xs[d]), "plateau", st, float(xs[lo]), float(xs[hi]), sign=s_))
        ends.append((_peak_of(q, s_, cuts[0], cuts[1]), _peak_of(q, s_, cuts[-2], cuts[-1])))
        if tentative:  # dips the slope test cannot resolve: the data around them decide (step 5)
            out += [Boundary(float(xs[d]), "plateau", 0.0, float(xs[lo]), float(xs[hi]), tentative="plateau", sign=s_)
                    for d, lo, hi in others]
    first, last = runs[0], runs[-1]
    m = len(xs) - 1
    if first[1] > 0 and (tentative or _is_flat(p, 0, first[1], z_crit, min_checkpoints)):
        out.append(Boundary(float(xs[first[1]]), "flat_end", float(np.max(np.abs(z[first[1]:first[2] + 1]))),
                            float(xs[0]), float(xs[ends[0][0]]), "flat_before",
                            "" if _is_flat(p, 0, first[1], z_crit, min_checkpoints) else "flat|plateau", first[0]))
    for k in range(len(runs) - 1):
        (s0, a0, b0), (s1, a1, b1) = runs[k], runs[k + 1]
        lo, hi = float(xs[ends[k][1]]), float(xs[ends[k + 1][0]])
        if s0 == s1:
            d = b0 + 1 + int(np.argmin(s0 * q.g[b0 + 1:a1]))
            strength = min(_dip_strength(q, s0, (a0, b0), d), _dip_strength(q, s1, (a1, b1), d))
            kind, where = "plateau", float(xs[d])
        else:
            strength = float(min(np.max(np.abs(z[a0:b0 + 1])), np.max(np.abs(z[a1:b1 + 1]))))
            kind, where = ("peak" if s0 > 0 else "trough"), _zero_crossing(p, b0, a1)
        if a1 - b0 > 1 and _is_flat(p, b0 + 1, a1 - 1, z_crit, min_checkpoints):
            mid = 0.5 * float(xs[b0 + 1] + xs[a1 - 1])
            out.append(Boundary(float(xs[b0 + 1]), "flat_start", strength, lo, mid, "flat_after"))
            out.append(Boundary(float(xs[a1 - 1]), "flat_end", strength, mid, hi, "flat_before"))
        else:
            out.append(Boundary(where, kind, strength, lo, hi, sign=s0))
    if last[2] < m and (tentative or _is_flat(p, last[2], m, z_crit, min_checkpoints)):
        out.append(Boundary(float(xs[last[2]]), "flat_start", float(np.max(np.abs(z[last[1]:last[2] + 1]))),
                            float(xs[ends[-1][1]]), float(xs[m]), "flat_after",
                            "" if _is_flat(p, last[2], m, z_crit, min_checkpoints) else "flat|plateau", last[0]))
    return sorted(out, key=lambda b: b.x)
