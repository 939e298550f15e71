"""Gaussian-process smoother of one signal against its axis (REFERENCE.md §2.1).

The papers fit a GP to LLC(log step) and read boundaries off its derivative. This module does the
same with numpy alone: an RBF kernel plus white noise, a linear mean (generalised least squares,
Rasmussen & Williams 2006 §2.7), hyperparameters (length scale, amplitude, noise) by maximum
marginal likelihood over a log grid. Everything is estimated from the data, so the noise is the
checkpoint-to-checkpoint scatter, not the across-chain stderr (REFERENCE.md §5.1).

Once the hyperparameters are fixed the smoother is *linear in the data*: ``fit.operators(xs)``
returns matrices M, G with mean(xs) = M @ y and slope(xs) = G @ y. The bootstrap reuses them, so a
resample costs one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from devinterp.transitions.signals import noise_sd


KERNELS = ("rbf", "matern52")


def _rbf(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    return np.exp(-0.5 * ((a[:, None] - b[None, :]) / length) ** 2)


def _k(kind: str, a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    """Unit-amplitude kernel k(a_i, b_j)."""
    if kind == "rbf":
        return _rbf(a, b, length)
    r = np.abs(a[:, None] - b[None, :]) * (np.sqrt(5.0) / length)
    return (1.0 + r + r**2 / 3.0) * np.exp(-r)


def _dk(kind: str, a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    """∂k(a_i, b_j)/∂a_i (unit amplitude)."""
    d = a[:, None] - b[None, :]
    if kind == "rbf":
        return -d / length**2 * np.exp(-0.5 * (d / length) ** 2)
    r = np.abs(d) * (np.sqrt(5.0) / length)
    return -(5.0 / (3.0 * length**2)) * d * (1.0 + r) * np.exp(-r)


def _ddk(kind: str, a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    """∂²k(a_i, b_j)/∂a_i∂b_j (unit amplitude): the covariance of the slope process."""
    d = a[:, None] - b[None, :]
    if kind == "rbf":
        return (1 - d**2 / length**2) / length**2 * np.exp(-0.5 * (d / length) ** 2)
    r = np.abs(d) * (np.sqrt(5.0) / length)
    return (5.0 / (3.0 * length**2)) * (1.0 + r - r**2) * np.exp(-r)


@dataclass
class GPFit:
    """A fitted smoother. ``x``, ``y``: the data (y on its own scale); ``length``, ``amplitude``,
    ``noise``: hyperparameters (amplitude and noise in y's units, length in x's units)."""

    x: np.ndarray
    y: np.ndarray
    length: float
    amplitude: float
    noise: float
    log_likelihood: float
    kernel: str = "rbf"

    def __post_init__(self) -> None:
        n = len(self.x)
        K = self.amplitude**2 * _k(self.kernel, self.x, self.x, self.length) + self.noise**2 * np.eye(n)
        self._L = np.linalg.cholesky(K + 1e-12 * np.trace(K) / n * np.eye(n))
        self._cho = (self._L, True)
        H = np.vstack([np.ones(n), self.x])  # basis of the mean, 2 x n
        self._H = H
        Kinv_H = self._solve(H.T)  # n x 2
        self._A = H @ Kinv_H  # 2 x 2
        self._Kinv_H = Kinv_H

    def _solve(self, b: np.ndarray) -> np.ndarray:
        return cho_solve(self._cho, b)

    def _cross(self, xs: np.ndarray, derivative: bool) -> tuple[np.ndarray, np.ndarray]:
        """Kernel between grid and data (or its derivative in the grid point) and the basis there."""
        if derivative:
            k = self.amplitude**2 * _dk(self.kernel, xs, self.x, self.length)
            h = np.vstack([np.zeros(len(xs)), np.ones(len(xs))])
        else:
            k = self.amplitude**2 * _k(self.kernel, xs, self.x, self.length)
            h = np.vstack([np.ones(len(xs)), xs])
        return k, h

    def operator(self, xs: np.ndarray, derivative: bool = False) -> np.ndarray:
        """Matrix W (len(xs) x n) with W @ y = posterior mean (or its slope) at ``xs``."""
        k, h = self._cross(np.asarray(xs, float), derivative)
        Kinv_k = self._solve(k.T)  # n x m
        # beta = A^-1 H K^-1 y ; mean = h' beta + k K^-1 (y - H' beta)
        B = np.linalg.solve(self._A, self._Kinv_H.T)  # 2 x n, beta = B y
        R = h - self._H @ Kinv_k  # 2 x m
        return Kinv_k.T + R.T @ B

    def covariance(self, xs: np.ndarray, derivative: bool = False) -> np.ndarray:
        """Posterior covariance of the mean function (or of its slope) at ``xs``, basis
        uncertainty included (Rasmussen & Williams eq. 2.42)."""
        xs = np.asarray(xs, float)
        k, h = self._cross(xs, derivative)
        if derivative:
            kss = self.amplitude**2 * _ddk(self.kernel, xs, xs, self.length)
        else:
            kss = self.amplitude**2 * _k(self.kernel, xs, xs, self.length)
        v = solve_triangular(self._L, k.T, lower=True)
        R = h - self._H @ self._solve(k.T)
        cov = kss - v.T @ v + R.T @ np.linalg.solve(self._A, R)
        return 0.5 * (cov + cov.T)

    def mean(self, xs: np.ndarray) -> np.ndarray:
        return self.operator(xs) @ self.y

    def slope(self, xs: np.ndarray) -> np.ndarray:
        return self.operator(xs, derivative=True) @ self.y


def fit_gp(x: np.ndarray, y: np.ndarray, *, noise: float | None = None, n_lengths: int = 24,
           max_points: int = 160, kernel: str = "rbf", noise_floor: float | None = None) -> GPFit:
    """Fit the smoother to (x, y) by maximum marginal likelihood.

    Args:
        x, y: finite 1-D arrays of equal length >= 3 (x strictly increasing).
        noise: fix the noise sd instead of fitting it (used for short series, where three
            hyperparameters are not identifiable; default: fitted when len(x) >= 10, else fixed to
            the robust first-difference estimate :func:`noise_sd`).
        noise_floor: a lower bound of the fitted noise sd (e.g. the scatter between SGLD chains,
            :func:`~devinterp.transitions.signals.chain_noise_sd`, which cannot see noise that
            every chain shares); with too few points to fit the noise, the larger of the two.
        n_lengths: grid size for the length scale, log-spaced from the median checkpoint spacing
            (features narrower than the sampling cannot be resolved) to the whole x range.
        max_points: the hyperparameter search uses every k-th point so that at most this many
            remain (the search costs one eigendecomposition per length; the final fit uses all).
        kernel: 'rbf', 'matern52', or 'auto' (the one with the larger marginal likelihood).

    Returns a :class:`GPFit`. A constant ``y`` gives a fit whose slope is exactly 0.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = len(x)
    if n < 3:
        raise ValueError(f"fit_gp needs at least 3 points, got {n}")
    span = float(x[-1] - x[0])
    # OLS residuals for the hyperparameter search (the mean is refitted by GLS afterwards)
    H = np.vstack([np.ones(n), x]).T
    resid = y - H @ np.linalg.lstsq(H, y, rcond=None)[0]
    scale = float(np.std(resid))
    if scale <= 1e-12 * max(1.0, float(np.abs(y).max())):
        tiny = max(1e-12, 1e-9 * max(1.0, float(np.abs(y).max())))
        return GPFit(x, y, length=span or 1.0, amplitude=tiny, noise=tiny, log_likelihood=0.0,
                     kernel="rbf" if kernel == "auto" else kernel)
    if kernel not in (*KERNELS, "auto"):
        raise ValueError(f"kernel must be one of {(*KERNELS, 'auto')}, got {kernel!r}")
    nd = noise if noise is not None else noise_sd(y)
    fix_noise = noise is not None or n < 10
    floor = float(noise_floor) if noise_floor is not None and noise_floor > 0 and noise is None else 0.0
    if fix_noise:
        nd = max(nd, floor)
    nd = max(nd, 1e-6 * scale)
    dx = np.diff(x)
    lmin = max(float(np.median(dx)), span / 500)
    lengths = np.geomspace(lmin, span, n_lengths) if span > lmin else np.array([max(span, 1.0)])
    amps2 = scale**2 * np.geomspace(1e-3, 1e3, 25)
    noises2 = np.array([nd**2]) if fix_noise else nd**2 * np.geomspace(1e-2, 1e2, 25)
    if floor > 0 and not fix_noise:
        noises2 = np.unique(np.concatenate([[floor**2], noises2[noises2 > floor**2]]))
    best = (-np.inf, lengths[0], amps2[0], noises2[0], "rbf")
    k = max(1, int(np.ceil(n / max_points)))
    xk, rk = x[::k], resid[::k]
    for kind in (KERNELS if kernel == "auto" else (kernel,)):
        for length in lengths:
            lam, Q = np.linalg.eigh(_k(kind, xk, xk, length))
            lam = np.clip(lam, 0.0, None)
            q2 = (Q.T @ rk) ** 2
            ev = amps2[:, None, None] * lam[None, None, :] + noises2[None, :, None]
            ll = -0.5 * (q2 / ev).sum(-1) - 0.5 * np.log(ev).sum(-1)
            i, j = np.unravel_index(np.argmax(ll), ll.shape)
            if ll[i, j] > best[0]:
                best = (float(ll[i, j]), float(length), float(amps2[i]), float(noises2[j]), kind)
    ll, length, a2, s2, kind = best
    return GPFit(x, y, length=length, amplitude=float(np.sqrt(a2)), noise=float(np.sqrt(s2)), log_likelihood=ll,
                 kernel=kind)


def warp_offsets(steps: np.ndarray) -> np.ndarray:
    """Candidate offsets c of the axis log(step + c): 1 (the papers' log step), then every decade
    up to the first one at or above the last step (where the axis is nearly linear in step)."""
    last = float(np.max(steps)) if len(steps) else 1.0
    top = int(np.ceil(np.log10(max(last, 10.0))))
    return 10.0 ** np.arange(0, top + 1)


def candidate_axes(steps: np.ndarray, checkpoints: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
    """The axes 'auto' chooses from, as (name, offset, x): log(step + c) for c in
    :func:`warp_offsets`, and the checkpoint index (the axis on which the sampling is uniform)."""
    steps = np.asarray(steps, float)
    out = [("log_step", float(c), np.log(steps + c)) for c in warp_offsets(steps)]
    out.append(("checkpoint", 1.0, np.asarray(checkpoints, float)))
    return out


def fit_on_axis(steps: np.ndarray, checkpoints: np.ndarray, y: np.ndarray, *,
                kernel: str = "rbf", noise_floor: float | None = None) -> tuple[GPFit, str, float]:
    """Fit the smoother on the axis, among :func:`candidate_axes`, with the largest marginal
    likelihood (input warping, Snoek et al. 2014). Returns (fit, axis name, offset).

    Why: a stationary kernel has one length scale, but checkpoint schedules are log-spaced early
    and linear late, and stages are narrow or wide on either axis; the length scale that fits the
    dense stretch leaves a sparse one with slopes it cannot resolve (a clear early stage reads as
    flat). Critical points (zeros and sign changes of the slope) are invariant under a monotone
    change of axis, so the axis can be chosen on statistical grounds: the one on which the data
    look most like a stationary process. The likelihoods are of the same data ``y`` under
    different models, so they compare. ``noise_floor``: see :func:`fit_gp`.
    """
    best: tuple[GPFit, str, float] | None = None
    for name, c, x in candidate_axes(steps, checkpoints):
        if np.any(np.diff(x) <= 0):
            continue
        fit = fit_gp(x, y, kernel=kernel, noise_floor=noise_floor)
        if best is None or fit.log_likelihood > best[0].log_likelihood + 1e-9:
            best = (fit, name, c)
    return best


def grid_for(x: np.ndarray) -> np.ndarray:
    """Uniform evaluation grid over [x[0], x[-1]]: 3 points per checkpoint, 150 to 600 points."""
    m = int(np.clip(3 * len(x), 150, 600))
    return np.linspace(float(x[0]), float(x[-1]), m)


def slope_profile(fit: GPFit, xs: np.ndarray | None = None):
    """The fit's slope on a grid with its posterior covariance, as a
    :class:`~devinterp.transitions.critical.SlopeProfile`, and the slope operator G (slope = G @ y)."""
    from devinterp.transitions.critical import SlopeProfile

    xs = grid_for(fit.x) if xs is None else np.asarray(xs, float)
    G = fit.operator(xs, derivative=True)
    cov = fit.covariance(xs, derivative=True)
    return SlopeProfile(xs, G @ fit.y, cov, fit.length, fit.x), G
