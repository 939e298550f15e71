"""Health checks of an LLC estimate: each returns a reason string when it fails.

Thresholds, and why (all module constants, so a caller can see and cite them):

* ``nonfinite`` — any NaN/inf loss or LLC. The chain left the region where the loss is defined
  (usually epsilon too large for the curvature).
* ``runaway`` — the LLC significantly above ``d/2`` (d = number of sampled coordinates):
  llc - Z_RUNAWAY*stderr > RUNAWAY_MARGIN * d/2, or any single chain above RUNAWAY_CHAIN_FACTOR * d/2. The true LLC
  of any model obeys lambda <= d/2 (REFERENCE.md §1.1; regular models attain it, so an honest
  estimate of a regular model scatters around d/2 and must not be flagged): an estimate clearly
  above means the chain is not sampling the localized posterior but climbing away from w*.
  Z_RUNAWAY = 3 (0.1% one-sided false alarms); RUNAWAY_CHAIN_FACTOR = 2: one chain at twice
  the bound is far outside the per-chain scatter of any healthy run seen in the tests.
  RUNAWAY_MARGIN = 1.25: SGLD at an accepted step size still overestimates slightly (discretization,
  a few % at drift/noise ratio 0.1), and with many chains the stderr is tiny, so a regular model's
  honest estimate can sit a few % above d/2; 25% above is not discretization.
* ``negative`` — LLC < -Z_NEGATIVE * noise, noise = sqrt(stderr^2 + (nbeta * se(init loss))^2).
  A true LLC is >= 0; a significantly negative estimate means SGLD keeps finding lower loss,
  i.e. w* is not a local minimum of L_n (or the init loss is noisy) — report, don't clip (§1.5).
  Z = 2: one-sided false-alarm rate 2.3% for a correct sampler.
* ``rising`` / ``falling`` (non-stationary) — Geweke-style comparison of the first and last thirds
  of the chain-averaged post-burn-in trace: |z| > Z_TREND with z = (mean_last - mean_first) /
  sqrt(var_first/ess_first + var_last/ess_last), **and** the change nbeta*|Delta| larger than
  TREND_EFFECT * |LLC| (so a statistically detectable but immaterial drift is not flagged).
  Z_TREND = 3 (two-sided 0.3% for a stationary trace with accurate ESS; ESS from short segments is
  rough, hence not 2). TREND_EFFECT = 0.1: a drift of 10% of the estimate within the draws is the
  accuracy the project asks of an LLC. The chain-averaged trace is used because all chains share
  their minibatches, so per-chain z's are correlated and cannot be combined as independent.
* ``rhat`` — split R-hat (Gelman et al., BDA3 §11.4: each chain split in halves) above RHAT_MAX =
  1.1, the classic threshold; the stricter 1.01 of Vehtari et al. (2021) presumes ESS > 400, which
  a few hundred autocorrelated draws per chain cannot give. Detects chains that have not mixed
  (e.g. stuck in different parts of a flat valley) or trend within a chain.
* ``low_ess`` — some chain's effective sample size (Geyer's initial positive sequence) below
  ESS_MIN = 5. Then each third of a chain holds fewer than two independent draws, so the trend and
  R-hat checks above have no power, and the chain's own mean has a relative noise of > 45%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Z_NEGATIVE = 2.0
Z_RUNAWAY = 3.0
RUNAWAY_CHAIN_FACTOR = 2.0
RUNAWAY_MARGIN = 1.25
Z_TREND = 3.0
TREND_EFFECT = 0.1
RHAT_MAX = 1.1
ESS_MIN = 5.0


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Autocorrelation of a 1-d series at lags 0..n-1 (FFT; 1 at lag 0; zeros for a constant series)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    x = x - x.mean()
    var = float(np.dot(x, x))
    if n < 2 or var == 0.0:
        return np.r_[1.0, np.zeros(max(n - 1, 0))]
    f = np.fft.rfft(x, n=2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    return acf / acf[0]


def ess(x: np.ndarray) -> float:
    """Effective sample size of one series by Geyer's initial positive sequence (1992).

    Sums the autocorrelations in consecutive pairs while a pair's sum stays positive;
    ESS = n / (-1 + 2 * sum of those pairs). Returns n for a constant series.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4:
        return float(n)
    rho = autocorrelation(x)
    tau, k = 0.0, 0
    while k + 1 < n:
        pair = rho[k] + rho[k + 1]
        if pair <= 0:
            break
        tau += pair
        k += 2
    tau = max(-1.0 + 2.0 * tau, 1.0 / n)
    return float(min(n / tau, n * math.log10(max(n, 10))))


def split_rhat(trace: np.ndarray) -> float:
    """Split R-hat of ``trace: [chains, draws]`` (each chain cut into two halves). nan if < 4 draws."""
    trace = np.asarray(trace, dtype=np.float64)
    c, n = trace.shape
    half = n // 2
    if half < 2:
        return float("nan")
    parts = np.concatenate([trace[:, :half], trace[:, n - half:]], axis=0)  # [2c, half]
    means = parts.mean(1)
    w = parts.var(1, ddof=1).mean()
    b = half * means.var(ddof=1)
    if w == 0:
        return 1.0 if b == 0 else float("inf")
    var_plus = (half - 1) / half * w + b / half
    return float(math.sqrt(var_plus / w))


def trend_z(trace: np.ndarray) -> tuple[float, float]:
    """(z, delta) of the last vs first third of the chain-averaged trace ``[chains, draws]``."""
    m = np.asarray(trace, dtype=np.float64).mean(0)
    k = len(m) // 3
    if k < 3:
        return float("nan"), float("nan")
    first, last = m[:k], m[-k:]
    delta = float(last.mean() - first.mean())
    var = first.var(ddof=1) / ess(first) + last.var(ddof=1) / ess(last)
    if var == 0:
        return (0.0 if delta == 0 else math.copysign(float("inf"), delta)), delta
    return delta / math.sqrt(var), delta


@dataclass
class Diagnosis:
    """Outcome of :func:`diagnose`: ``healthy`` iff ``reasons`` is empty; ``stats`` holds the numbers checked."""

    healthy: bool
    reasons: list[str]
    stats: dict[str, float] = field(default_factory=dict)


def diagnose(
    loss_trace: np.ndarray, chain_llcs: np.ndarray, *, llc: float, stderr: float, init_loss: float,
    init_loss_stderr: float, nbeta: float, d_sampled: int,
) -> Diagnosis:
    """Run every check on a finished estimate.

    loss_trace: [chains, draws] post-burn-in minibatch losses; chain_llcs: [chains];
    llc/stderr: the estimate and its standard error across chains; init_loss (and its standard
    error) in nats; d_sampled: number of coordinates SGLD moved.
    """
    reasons: list[str] = []
    trace = np.asarray(loss_trace, dtype=np.float64)
    chain_llcs = np.asarray(chain_llcs, dtype=np.float64)
    stats: dict[str, float] = {}
    if not (np.isfinite(trace).all() and np.isfinite(chain_llcs).all() and math.isfinite(init_loss)):
        bad = int((~np.isfinite(trace).all(axis=1)).sum())
        reasons.append(f"nonfinite: {bad} of {trace.shape[0]} chains produced NaN/inf losses (epsilon too large?)")
        return Diagnosis(False, reasons, stats)
    top, bound = float(chain_llcs.max()), d_sampled / 2
    se = stderr if math.isfinite(stderr) else 0.0
    if llc - Z_RUNAWAY * se > RUNAWAY_MARGIN * bound or top > RUNAWAY_CHAIN_FACTOR * bound:
        reasons.append(
            f"runaway: LLC {llc:.4g} (largest chain {top:.4g}) is above d/2 = {bound:g}, the largest possible "
            "LLC (chains climbing away from w*: lower epsilon or raise gamma)"
        )
    noise = math.sqrt(stderr**2 + (nbeta * init_loss_stderr) ** 2) if math.isfinite(stderr) else float("nan")
    stats["noise"] = noise
    if math.isfinite(noise) and llc < -Z_NEGATIVE * noise:
        reasons.append(
            f"negative: LLC {llc:.4g} is below -{Z_NEGATIVE:g} x noise ({noise:.3g}): SGLD finds lower loss than "
            "at w*, so w* is not a local minimum (or the init loss is off)"
        )
    z, delta = trend_z(trace)
    stats["trend_z"], stats["trend_delta_llc"] = z, nbeta * delta if math.isfinite(delta) else delta
    if math.isfinite(z) and abs(z) > Z_TREND and nbeta * abs(delta) > TREND_EFFECT * abs(llc):
        word = "rising" if delta > 0 else "falling"
        reasons.append(
            f"{word}: the loss trace is not stationary (last vs first third: z = {z:.1f}, "
            f"change = {nbeta * delta:.3g} in LLC units); more burn-in or another epsilon"
        )
    rhat = split_rhat(trace) if trace.shape[0] >= 1 else float("nan")
    stats["rhat"] = rhat
    if math.isfinite(rhat) and rhat > RHAT_MAX:
        reasons.append(f"rhat: split R-hat {rhat:.3f} > {RHAT_MAX} (chains have not mixed)")
    chain_ess = np.array([ess(row) for row in trace])
    stats["ess_min"], stats["ess_total"] = float(chain_ess.min()), float(chain_ess.sum())
    if chain_ess.min() < ESS_MIN:
        reasons.append(f"low_ess: a chain has an effective sample size of {chain_ess.min():.1f} < {ESS_MIN:g}")
    return Diagnosis(not reasons, reasons, stats)
