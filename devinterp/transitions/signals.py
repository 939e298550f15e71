"""Per-checkpoint signals from the long metrics table (DESIGN.md), aligned on one axis.

One job: turn rows into arrays. ``llc_signal`` keeps the per-chain values (rows with ``chain``
set) as a chains x checkpoints matrix, so that later steps can bootstrap over chains and take
differences chain by chain (common random numbers, REFERENCE.md §5.1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

AXES = ("auto", "log_step", "step", "checkpoint")
HEAD_METRICS = ("prev_token", "induction", "duplicate_token", "head_llc")


def to_axis(steps: np.ndarray, checkpoints: np.ndarray, axis: str, offset: float = 1.0) -> np.ndarray:
    """x coordinate of each checkpoint: log(step + offset) ('log_step' and 'auto'; offset 1 is the
    papers' log(step + 1): early checkpoints are log-spaced and development is log-paced), the step
    itself, or the checkpoint index. ('auto' picks the offset by marginal likelihood, see
    :func:`devinterp.transitions.smoothing.fit_on_axis`.)"""
    if axis in ("log_step", "auto"):
        return np.log(np.asarray(steps, float) + float(offset))
    if axis == "step":
        return np.asarray(steps, float)
    if axis == "checkpoint":
        return np.asarray(checkpoints, float)
    raise ValueError(f"axis must be one of {AXES}, got {axis!r}")


def noise_sd(y: np.ndarray) -> float:
    """Robust sd of white noise in ``y`` from first differences (REFERENCE.md §5):
    median|Δy − median Δy| / (0.6745·√2). NaNs are ignored; fewer than 2 values give 0."""
    y = np.asarray(y, float)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return 0.0
    d = np.diff(y)
    return float(np.median(np.abs(d - np.median(d))) / (0.6745 * np.sqrt(2.0)))


def chain_noise_sd(chains: np.ndarray | None) -> float | None:
    """Per-checkpoint noise sd of the mean over chains, from the chains themselves (REFERENCE.md
    §5.1), or None with fewer than 2 chains or 4 checkpoints.

    With common random numbers each chain differs from the others by an offset and a small scale
    error shared by every checkpoint, and by a slow drift; on top of that is the noise from one
    checkpoint to the next, which is what a smoother must treat as noise. Each chain's deviation
    from the across-chain mean has the curve itself removed exactly; regressing it on the mean
    (intercept and slope) removes the offset and scale, and first differences remove what is left
    of slow drift. With C chains the differences have variance 2 sigma_c^2 (1 - 1/C), and the mean
    over chains has noise sd sigma_c / sqrt(C); sigma_c is taken robustly (MAD) so that a few
    steep checkpoints do not inflate it."""
    if chains is None:
        return None
    C = np.asarray(chains, float)
    if C.ndim != 2 or C.shape[0] < 2 or C.shape[1] < 4 or not np.isfinite(C).all():
        return None
    n_chains = C.shape[0]
    mean = C.mean(0)
    X = np.column_stack([np.ones_like(mean), mean - mean.mean()])
    dev = C - mean
    resid = dev - (X @ np.linalg.lstsq(X, dev.T, rcond=None)[0]).T
    d = np.diff(resid, axis=1).ravel()
    mad = float(np.median(np.abs(d - np.median(d)))) / 0.6745
    sigma_c = mad / np.sqrt(2.0 * (1.0 - 1.0 / n_chains))
    return sigma_c / np.sqrt(n_chains)


@dataclass
class Signal:
    """One model-level signal at the checkpoints where it is finite.

    Attributes:
        name: metric name.
        step, checkpoint: int arrays (n,), increasing.
        y: values (n,) (for the LLC: the aggregate row, or the mean over chains when absent).
        stderr: (n,) or None.
        chains: (n_chains, n) per-chain values, or None (no per-chain rows, or incomplete).
    """

    name: str
    step: np.ndarray
    checkpoint: np.ndarray
    y: np.ndarray
    stderr: np.ndarray | None = None
    chains: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)


def _model_rows(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    m = metrics
    return m[(m["metric"] == metric) & m["layer"].isna() & m["head"].isna()]


def model_signal(metrics: pd.DataFrame, metric: str) -> Signal | None:
    """Model-level ``metric`` (aggregate rows: null layer/head/chain), NaNs dropped; None if absent."""
    rows = _model_rows(metrics, metric)
    rows = rows[rows["chain"].isna()]
    rows = rows[np.isfinite(rows["value"].to_numpy(float, na_value=np.nan))]
    if rows.empty:
        return None
    rows = rows.groupby("checkpoint", sort=True).agg(step=("step", "first"), value=("value", "mean"),
                                                     stderr=("stderr", "mean"))
    se = rows["stderr"].to_numpy(float, na_value=np.nan)
    return Signal(metric, rows["step"].to_numpy(np.int64), rows.index.to_numpy(np.int64),
                  rows["value"].to_numpy(float), se if np.isfinite(se).all() else None)


def llc_signal(metrics: pd.DataFrame, *, drop_unhealthy: bool = True, metric: str = "llc") -> Signal | None:
    """The LLC series with its per-chain matrix when every kept checkpoint has the same chains.

    Checkpoints whose LLC is flagged ``healthy == False`` are dropped with a warning (when
    ``drop_unhealthy``). Without aggregate rows, the mean over chains is used.
    """
    rows = _model_rows(metrics, metric)
    rows = rows[np.isfinite(rows["value"].to_numpy(float, na_value=np.nan))]
    if rows.empty:
        return None
    notes = []
    if drop_unhealthy and "healthy" in rows:
        bad = rows["healthy"].fillna(True).eq(False).to_numpy(bool)
        if bad.any():
            bad_steps = sorted(set(rows.loc[bad, "step"].astype(int)))
            msg = (f"dropped the {metric} at {len(bad_steps)} checkpoint(s) flagged unhealthy "
                   f"(steps {bad_steps[:10]}{' …' if len(bad_steps) > 10 else ''})")
            warnings.warn(msg, stacklevel=3)
            notes.append(msg)
            rows = rows[~bad]
    agg = model_signal(rows, metric)
    per_chain = rows[rows["chain"].notna()]
    chains = None
    if not per_chain.empty:
        wide = per_chain.pivot_table(index="chain", columns="checkpoint", values="value", aggfunc="mean")
        wide = wide.dropna(axis=1)  # checkpoints missing a chain
        if wide.shape[0] >= 2 and wide.shape[1] >= 3:
            chains = wide
    if agg is None and chains is None:
        return None
    if agg is None:
        steps = per_chain.groupby("checkpoint")["step"].first()
        ck = chains.columns.to_numpy(np.int64)
        agg = Signal(metric, steps.loc[ck].to_numpy(np.int64), ck, chains.to_numpy(float).mean(0))
    if chains is not None:
        keep = np.isin(agg.checkpoint, chains.columns.to_numpy(np.int64))
        if keep.sum() >= 3:
            agg = Signal(agg.name, agg.step[keep], agg.checkpoint[keep], agg.y[keep],
                         None if agg.stderr is None else agg.stderr[keep],
                         chains.loc[:, agg.checkpoint[keep]].to_numpy(float))
        else:
            notes.append("per-chain rows do not cover the aggregate checkpoints; no chain bootstrap")
    agg.notes = notes
    return agg


def head_table(metrics: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Per-head ``metric`` as checkpoints x heads (columns ``L{layer}H{head}``, index checkpoint;
    aggregate rows only). None when the table has no such rows."""
    m = metrics
    rows = m[(m["metric"] == metric) & m["layer"].notna() & m["head"].notna() & m["chain"].isna()]
    if rows.empty:
        return None
    labels = "L" + rows["layer"].astype(int).astype(str) + "H" + rows["head"].astype(int).astype(str)
    wide = rows.assign(label=labels).pivot_table(index="checkpoint", columns="label", values="value", aggfunc="mean")
    return wide.sort_index()
