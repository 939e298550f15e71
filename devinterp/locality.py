r"""Does the SGLD posterior stay local? A check across checkpoints (numpy only, no torch).

The LLC measures the basin around w\*: the chains' mean loss is E[L] = L_n(w\*) + llc / nbeta, and
for a local posterior it follows L_n(w\*) from one checkpoint to the next. Under weak localization
the chains of a real network can spread until they forget w\*: they then sample a region every
checkpoint shares (on the quickstart at delta 0.1, mean loss 4.34-4.37 nats at every probed
checkpoint, above the 4.16 of predicting uniformly, while L_n(w\*) ran from 4.16 to 3.12), and the
"LLC" is nbeta x (that plateau - L_n(w\*)): the loss curve upside down, not the geometry. No
single-checkpoint diagnostic sees this; every trace is stationary.

Between the two checkpoints with the highest and lowest L_n(w\*), the locality slope is

    b = (E[L]_high - E[L]_low) / (L*_high - L*_low)   (1 = the chains keep all of the difference)

with standard error from the two estimates' total stderrs / nbeta. A posterior fails the check when
b is significantly below LOCALITY_MIN = 1/2 (b + LOCALITY_Z * se < 1/2): the chains' mean loss kept
less than half of what training gained between the checkpoints, i.e. they forget more of w\* than
they remember. One half is a stated choice, not fitted (the same "halves" rule as the detector's
plateau test); z = 2 as for the ``negative`` check. Measured (BENCHMARKS.md): quickstart,
hand-picked settings (delta 32) b = 0.88; delta 0.1 b = -0.02; the ICL recipe at the paper's
settings b = 0.17 (20k steps) and 0.43 (100k). A legitimately rising LLC lowers b too (by
delta llc / (nbeta delta L*)), so b < 1/2 needs the LLC to grow by more than half of nbeta times
the loss gained, which no estimate on this project's runs does at local settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LOCALITY_MIN = 0.5
LOCALITY_Z = 2.0


@dataclass(frozen=True)
class Locality:
    """The locality slope between the checkpoints with the highest (``high``) and lowest (``low``)
    L_n(w*): indices into the inputs, their L_n(w*) and chain mean losses (nats), the slope and its
    standard error; ``ok`` is False when the slope is significantly below ``LOCALITY_MIN``."""

    high: int
    low: int
    init_loss_high: float
    init_loss_low: float
    mean_loss_high: float
    mean_loss_low: float
    slope: float
    stderr: float
    where: str = ""  # e.g. "steps 7 -> 2950": what high and low are, for describe()

    @property
    def ok(self) -> bool:
        return not (self.slope + LOCALITY_Z * self.stderr < LOCALITY_MIN)

    def describe(self) -> str:
        """One sentence with the figures, for tables, logs and reports."""
        where = f" ({self.where})" if self.where else ""
        return (f"chain mean loss {self.mean_loss_high:.4g} -> {self.mean_loss_low:.4g} nats where L_n(w*) "
                f"goes {self.init_loss_high:.4g} -> {self.init_loss_low:.4g}{where}: locality slope "
                f"{self.slope:.2f} ± {self.stderr:.2f}"
                + ("" if self.ok else f", significantly below {LOCALITY_MIN:g}: the chains keep less than half of the loss "
                   "difference between the checkpoints (posterior not local; the LLC reads the loss curve as much "
                   "as the basin)"))


def locality(init_losses: Sequence[float], llcs: Sequence[float], stderrs: Sequence[float],
             nbetas: float | Sequence[float], labels: Sequence[str] | None = None) -> Locality | None:
    """The locality slope of a set of estimates (one per checkpoint, same SGLD settings).

    init_losses: L_n(w*) per checkpoint (nats); llcs, stderrs: the LLC estimates and their total
    stderrs; nbetas: the inverse temperature (one value or one per checkpoint); labels: optional
    names of the checkpoints (e.g. "step 7") for ``where``. Non-finite entries are ignored. Returns
    None when fewer than two remain or their L_n(w*) are all equal.
    """
    L = np.asarray(init_losses, float)
    lam = np.asarray(llcs, float)
    se = np.asarray(stderrs, float)
    nb = np.broadcast_to(np.asarray(nbetas, float), L.shape)
    keep = np.isfinite(L) & np.isfinite(lam) & np.isfinite(nb) & (nb > 0)
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        return None
    hi, lo = int(idx[np.argmax(L[idx])]), int(idx[np.argmin(L[idx])])
    gap = L[hi] - L[lo]
    if not gap > 0:
        return None
    mean = L + lam / nb
    se_mean = np.where(np.isfinite(se), se, 0.0) / nb
    return Locality(high=hi, low=lo, init_loss_high=float(L[hi]), init_loss_low=float(L[lo]),
                    mean_loss_high=float(mean[hi]), mean_loss_low=float(mean[lo]),
                    slope=float((mean[hi] - mean[lo]) / gap), stderr=float(math.hypot(se_mean[hi], se_mean[lo]) / gap),
                    where=f"{labels[hi]} -> {labels[lo]}" if labels is not None else "")


def sweep_locality(metrics) -> Locality | None:
    """:func:`locality` of a metrics table's healthy aggregate LLC rows (columns ``init_loss`` and
    ``nbeta``, written by the sweep); None when the table lacks them. One run at a time: call it on
    one run's rows. ``high``/``low`` index the rows used, in step order; ``where`` names their steps."""
    need = {"metric", "value", "stderr", "init_loss", "nbeta"}
    if not need <= set(metrics.columns):
        return None
    rows = metrics[metrics["metric"] == "llc"]
    if "chain" in rows.columns:
        rows = rows[rows["chain"].isna()]
    if "healthy" in rows.columns:
        rows = rows[rows["healthy"].fillna(False).astype(bool)]
    rows = rows.sort_values("step")
    return locality(rows["init_loss"].to_numpy(float), rows["value"].to_numpy(float),
                    rows["stderr"].to_numpy(float), rows["nbeta"].to_numpy(float),
                    labels=[f"step {int(s)}" for s in rows["step"]])


__all__ = ["LOCALITY_MIN", "LOCALITY_Z", "Locality", "locality", "sweep_locality"]
