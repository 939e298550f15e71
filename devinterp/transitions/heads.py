"""Which heads changed most over a stage (the ``heads`` column of the stages table)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from devinterp.transitions.signals import HEAD_METRICS, head_table, noise_sd


def head_tables(metrics: pd.DataFrame, names: tuple[str, ...] = HEAD_METRICS) -> dict[str, pd.DataFrame]:
    """Checkpoints x heads tables of the per-head metrics present in ``metrics``."""
    out = {}
    for name in names:
        t = head_table(metrics, name)
        if t is not None and t.shape[0] >= 2:
            out[name] = t
    return out


def rank_heads(tables: dict[str, pd.DataFrame], start_checkpoint: int, end_checkpoint: int,
               top: int = 3, significance: float = 2.0) -> list[str]:
    """Heads whose scores changed most between two checkpoints, ranked.

    For every per-head metric, a head's change is |score(end) − score(start)| divided by that
    metric's range over the whole run (all heads, all checkpoints), so metrics on different
    scales compare. A change counts only if it exceeds ``significance`` × √2 × the head's own
    checkpoint-to-checkpoint noise (robust first differences). Each metric contributes its ``top``
    largest changes; the union is ranked by the normalised change (a head listed once).
    """
    score: dict[str, float] = {}
    for table in tables.values():
        rows = table.index.to_numpy()
        if len(rows) < 2:
            continue
        i = int(np.argmin(np.abs(rows - start_checkpoint)))
        j = int(np.argmin(np.abs(rows - end_checkpoint)))
        if i == j:
            continue
        vals = table.to_numpy(float)
        rng = np.nanmax(vals) - np.nanmin(vals)
        if not np.isfinite(rng) or rng <= 0:
            continue
        change = np.abs(vals[j] - vals[i])
        noise = np.array([noise_sd(vals[:, k]) for k in range(vals.shape[1])])
        ok = np.isfinite(change) & (change > significance * np.sqrt(2) * noise)
        order = [k for k in np.argsort(-np.nan_to_num(change, nan=-1)) if ok[k]][:top]
        for k in order:
            label = str(table.columns[k])
            score[label] = max(score.get(label, 0.0), float(change[k] / rng))
    return [h for h, _ in sorted(score.items(), key=lambda kv: -kv[1])]
