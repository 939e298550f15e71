r"""Does the SGLD posterior stay local? A check across checkpoints (numpy only, no torch).

The LLC measures the basin around w\*: the chains' mean loss is E[L] = L_n(w\*) + llc / nbeta, and
for a local posterior it follows L_n(w\*) from one checkpoint to the next. Under weak localization
the chains of a real network can spread until they forget w\*: they then sample a region every
checkpoint shares (on the quickstart at delta 0.1, mean loss 4.34-4.37 nats at every probed
checkpoint, above the 4.16 of predicting uniformly, while L_n(w\*) ran from 4.16 to 3.12), and the
"LLC" is nbeta x (that plateau - L_n(w\*)): the loss curve upside down, not the geometry. No
single-checkpoint diagnostic sees this; every trace is stationary.

Between two checkpoints i and j with L*_i > L*_j, the locality slope is

    b = (E[L]_i - E[L]_j) / (L*_i - L*_j)   (1 = the chains keep all of the difference)

with standard error from the two estimates' total stderrs / nbeta. It is judged on **every pair
whose loss gap is at least LOCALITY_SPAN = 1/2 of the run's range** of L* (over all its estimates,
unhealthy ones too: :func:`sweep_locality`), not only on the two
extremes: non-locality can hold for part of a run only. Measured: the calibrated 20k ICL sweep
(delta 10) had chain mean losses 4.13-4.19 at every checkpoint up to step 2,916 (the loss of
predicting 0 is 4.17) while L* fell 4.17 -> 2.12, and the chains followed L* only after step 3,839;
its extremes (steps 0 and 20,000) gave b = 0.70, the pair (0, 970) b = 0.02. Pairs with a smaller
gap are not judged: there a legitimate LLC change between checkpoints of nearly equal loss makes b
arbitrary (b = 1 - delta llc / (nbeta delta L*)); with the gap at least half the range, a false
alarm needs the LLC to change by more than nbeta x range / 4 between the two.

A set of estimates fails the check when some judged pair has b significantly below LOCALITY_MIN =
1/2: b + z se < 1/2, the chains' mean loss kept less than half of what training gained between the
checkpoints, i.e. they forget more of w* than they remember. One half is a stated choice, not
fitted (the same "halves" rule as the detector's plateau test). z keeps the family's chance of a
false alarm at that of one z = LOCALITY_Z = 2 test (as for the ``negative`` check): Bonferroni over
the judged pairs (z = 2 for one pair, 3.8-3.9 for the few hundred of a 36-44-checkpoint sweep).
Measured (BENCHMARKS.md): the quickstart's hand-picked settings (delta 32) pass with a worst pair
of 0.77; its calibrated delta 10 fails (steps 700 -> 1,000: chain mean loss 4.16 -> 4.02 while L*
went 4.07 -> 3.52, b = 0.25); delta 0.1 b = -0.02; the ICL recipe at the paper's settings b = -0.01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

LOCALITY_MIN = 0.5
LOCALITY_Z = 2.0
LOCALITY_SPAN = 0.5  # pairs judged: loss gap at least this share of the range of L*


def judged_pairs(init_losses: Sequence[float], span: float | None = None) -> list[tuple[int, int]]:
    """The pairs (i, j) the check judges: finite L*_i - L*_j >= LOCALITY_SPAN x span > 0, where span is
    the range of L* over the run (default: max - min of ``init_losses``)."""
    L = np.asarray(init_losses, float)
    idx = np.flatnonzero(np.isfinite(L))
    if len(idx) < 2:
        return []
    span = float(L[idx].max() - L[idx].min()) if span is None else float(span)
    if not span > 0:
        return []
    gap = L[idx][:, None] - L[idx][None, :]
    ii, jj = np.nonzero(gap >= LOCALITY_SPAN * span * (1 - 1e-12))
    return [(int(idx[i]), int(idx[j])) for i, j in zip(ii, jj)]


def pairs_z(n_pairs: int) -> float:
    """The z for ``n_pairs`` judged pairs: Bonferroni, so that the chance of any false alarm is that
    of a single one-sided LOCALITY_Z test (z = 2 for one pair)."""
    alpha = NormalDist().cdf(-LOCALITY_Z)
    return float(NormalDist().inv_cdf(1 - alpha / max(n_pairs, 1)))


@dataclass(frozen=True)
class Locality:
    """The worst judged pair of checkpoints (:func:`judged_pairs`): ``high`` (the larger L_n(w*)) and
    ``low`` index the inputs; their L_n(w*) and chain mean losses (nats), the slope and its standard
    error, the z it is judged with and how many pairs were judged. ``ok`` is False when the slope is
    significantly below ``LOCALITY_MIN`` (slope + z * stderr < LOCALITY_MIN). The worst pair is the
    one with the smallest slope + z * stderr."""

    high: int
    low: int
    init_loss_high: float
    init_loss_low: float
    mean_loss_high: float
    mean_loss_low: float
    slope: float
    stderr: float
    where: str = ""  # e.g. "steps 7 -> 2950": what high and low are, for describe()
    z: float = LOCALITY_Z
    pairs: int = 1
    nbeta: float = math.nan

    @property
    def llc_change(self) -> float:
        """The LLC at ``low`` minus the LLC at ``high``: nbeta x the change of E[L] - L_n(w*)."""
        return self.nbeta * ((self.mean_loss_low - self.init_loss_low) - (self.mean_loss_high - self.init_loss_high))

    @property
    def ok(self) -> bool:
        return not (self.slope + self.z * self.stderr < LOCALITY_MIN)

    def describe(self) -> str:
        """One sentence with the figures, for tables, logs and reports."""
        where = f" ({self.where})" if self.where else ""
        of = f" (worst of {self.pairs} pairs)" if self.pairs > 1 else ""
        text = (f"chain mean loss {self.mean_loss_high:.4g} -> {self.mean_loss_low:.4g} nats where L_n(w*) "
                f"goes {self.init_loss_high:.4g} -> {self.init_loss_low:.4g}{where}: locality slope "
                f"{self.slope:.2f} ± {self.stderr:.2f}{of}")
        if self.ok:
            return text
        text += (f", significantly below {LOCALITY_MIN:g}: the chains keep less than half of the loss difference "
                 "between the checkpoints (posterior not local; the LLC reads the loss curve as much as the basin)")
        if self.slope - self.z * self.stderr > 0 and math.isfinite(self.nbeta):  # the loss fell, by less than half:
            # a steep real LLC rise would also do this, so say how steep
            gap = self.init_loss_high - self.init_loss_low
            text += (f"; or the LLC rose steeply: it rose {self.llc_change:.3g}, more than nbeta x half the loss gap "
                     f"({self.nbeta * gap / 2:.3g}) - compare the chains' mean loss with the plateau (the "
                     "untrained model's)")
        return text


def locality(init_losses: Sequence[float], llcs: Sequence[float], stderrs: Sequence[float],
             nbetas: float | Sequence[float], labels: Sequence[str] | None = None, *,
             z: float | None = None, span: float | None = None) -> Locality | None:
    """The locality check of a set of estimates (one per checkpoint, same SGLD settings): the worst
    of the judged pairs (module docstring).

    init_losses: L_n(w*) per checkpoint (nats); llcs, stderrs: the LLC estimates and their total
    stderrs; nbetas: the inverse temperature (one value or one per checkpoint); labels: optional
    names of the checkpoints (e.g. "step 7") for ``where``; z: the threshold (default
    :func:`pairs_z` of the number of judged pairs); span: the run's range of L_n(w*) that the judged
    pairs' gaps are measured against (default: the range of the usable entries). Non-finite entries
    are ignored. Returns None when no pair is judged.
    """
    L = np.asarray(init_losses, float)
    lam = np.asarray(llcs, float)
    se = np.asarray(stderrs, float)
    nb = np.broadcast_to(np.asarray(nbetas, float), L.shape)
    keep = np.isfinite(L) & np.isfinite(lam) & np.isfinite(nb) & (nb > 0)
    pairs = judged_pairs(np.where(keep, L, np.nan), span)
    if not pairs:
        return None
    z = pairs_z(len(pairs)) if z is None else float(z)
    mean = L + lam / nb
    se_mean = np.where(np.isfinite(se), se, 0.0) / nb
    I, J = np.array(pairs).T
    gap = L[I] - L[J]
    slopes, errs = (mean[I] - mean[J]) / gap, np.hypot(se_mean[I], se_mean[J]) / gap
    k = int(np.argmin(slopes + z * errs))  # the worst pair: the most significant shortfall
    hi, lo, b, s = int(I[k]), int(J[k]), slopes[k], errs[k]
    return Locality(high=hi, low=lo, init_loss_high=float(L[hi]), init_loss_low=float(L[lo]),
                    mean_loss_high=float(mean[hi]), mean_loss_low=float(mean[lo]), slope=float(b), stderr=float(s),
                    where=f"{labels[hi]} -> {labels[lo]}" if labels is not None else "", z=z, pairs=len(pairs),
                    nbeta=float(np.sqrt(nb[hi] * nb[lo])))


def sweep_locality(metrics) -> Locality | None:
    """:func:`locality` of a metrics table's healthy aggregate LLC rows (columns ``init_loss`` and
    ``nbeta``, written by the sweep); None when the table lacks them or no pair is judged. One run at
    a time: call it on one run's rows. ``high``/``low`` index the rows used, in step order; ``where``
    names their steps.

    The judged pairs' loss gaps are measured against the range of L_n(w*) over every aggregate row,
    unhealthy ones too: the loss the run gained, not the part of it that the healthy estimates
    happen to cover. Where only checkpoints on a plateau are healthy (an H200 run of 2026-11-28:
    L_n(w*) 4.23-4.29 nats healthy out of 4.23-8.96), their small gaps are not judged: there any
    real LLC change between them would read as forgetting."""
    need = {"metric", "value", "stderr", "init_loss", "nbeta"}
    if not need <= set(metrics.columns):
        return None
    rows = metrics[metrics["metric"] == "llc"]
    if "chain" in rows.columns:
        rows = rows[rows["chain"].isna()]
    every = rows["init_loss"].to_numpy(float)
    every = every[np.isfinite(every)]
    span = float(every.max() - every.min()) if len(every) else None
    if "healthy" in rows.columns:
        rows = rows[rows["healthy"].fillna(False).astype(bool)]
    rows = rows.sort_values("step")
    return locality(rows["init_loss"].to_numpy(float), rows["value"].to_numpy(float),
                    rows["stderr"].to_numpy(float), rows["nbeta"].to_numpy(float),
                    labels=[f"step {int(s)}" for s in rows["step"]], span=span)


def locality_line(metrics) -> str:
    """One line for a run's printed results: whether its LLC passes the locality check, with the
    figures (:meth:`Locality.describe`); says so when the table cannot be judged."""
    local = sweep_locality(metrics)
    if local is None:
        return ("LLC locality: not judged (no two healthy estimates whose L_n(w*) differ by half the run's range, "
                "or no LLC rows with init_loss and nbeta)")
    verdict = "ok" if local.ok else "FAILS, so the stages follow the sampler's drift as much as development"
    return f"LLC locality: {verdict}: {local.describe()}"


__all__ = ["LOCALITY_MIN", "LOCALITY_SPAN", "LOCALITY_Z", "Locality", "judged_pairs", "locality", "locality_line",
           "pairs_z", "sweep_locality"]
