"""Planted-stage sweeps: metrics tables with known boundaries, for benchmarks and tests.

A planted LLC is a sum of smooth ramps in log step, one per stage, each with zero slope at both
ends: ramp(u) = (1 − cos πu)/2 on the stage, so every boundary is a critical point of the LLC
against log step — a peak (A→B), a trough (B→A), or a plateau between stages of the same type —
never a kink (DESIGN.md, REFERENCE.md §5.1). The noise is what an SGLD sweep with common random
numbers gives: each chain has its own offset (and a small scale error) shared by every checkpoint,
plus small independent per-checkpoint noise; the aggregate row's stderr is the across-chain one,
so it can be far larger than a small type-B dip that is nonetheless clear in the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Planted:
    """A planted sweep: its metrics table, the true boundaries (checkpoint indices) and types."""

    metrics: pd.DataFrame
    boundaries: list[int]
    types: list[str]
    steps: np.ndarray
    heads: list[str] = field(default_factory=list)  # per stage, the head planted to change


def schedule(kind: str, n: int, last: int) -> np.ndarray:
    """Checkpoint steps: 'log' (log-spaced from 1), 'loglinear' (quickstart-like: 0 and a third
    log-spaced, then linear), or 'linear' (every last/n steps from 0, like the paper's LM)."""
    if kind == "log":
        s = np.unique(np.round(np.geomspace(1, last, n)).astype(int))
    elif kind == "loglinear":
        k = max(4, n // 3)
        switch = last // 8
        s = np.unique(np.concatenate([[0], np.round(np.geomspace(1, switch, k)), np.linspace(switch, last, n - k)]).astype(int))
    elif kind == "linear":
        s = np.unique(np.linspace(0, last, n).astype(int))
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    return s


def _ramp(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1 - np.cos(np.pi * np.clip(u, 0.0, 1.0)))


def planted_sweep(rng: np.random.Generator, *, n_stages: int | None = None, null: bool = False,
                  sched: str | None = None, n: int | None = None, chains: int = 4,
                  types: list[str] | None = None, run: str = "planted",
                  n_layers: int = 2, n_heads: int = 4) -> Planted:
    """Draw one planted sweep.

    Args:
        rng: numpy Generator (the sweep is a pure function of its state).
        n_stages: planted stages (default 2–4); ignored when ``null``.
        null: no stage at all: the LLC is constant, linear or gently curved in log step with no
            critical point inside the run.
        sched, n: checkpoint schedule and count (default: drawn).
        types: stage types to plant ('A', 'B' or '-'); default drawn, with small B dips.
    """
    sched = sched or rng.choice(["log", "loglinear", "linear"])
    n = n or int(rng.integers(30, 90))
    last = int(rng.choice([3000, 20000, 50000]))
    steps = schedule(sched, n, last)
    n = len(steps)
    x = np.log(steps + 1.0)
    scale = float(rng.uniform(10, 100))
    base = float(rng.uniform(0.5, 2.0)) * scale
    labels = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
    if null:
        kind = rng.choice(["const", "linear", "curved"])
        u = (x - x[0]) / (x[-1] - x[0])
        if kind == "const":
            llc = np.full(n, base)
        elif kind == "linear":
            llc = base + rng.uniform(0.2, 1.0) * scale * u
        else:  # monotone: derivative 1 + c(2u - 1) > 0 for |c| < 1
            c = rng.uniform(-0.8, 0.8)
            llc = base + rng.uniform(0.2, 1.0) * scale * (u + c * (u**2 - u))
        bounds: list[int] = []
        stage_types: list[str] = []
        edges_x = [x[0], x[-1]]
        d_llcs = [llc[-1] - llc[0]]
    else:
        k = n_stages or int(rng.integers(2, 5))
        # boundaries at checkpoints, stages >= 6 checkpoints and >= 0.5 wide in log step
        # (a stage must be resolvable by the data); the first checkpoint with step 0 is skipped
        first = 1 if steps[0] == 0 else 0
        k = min(k, max(1, (n - first - 1) // 8))
        while True:
            for _ in range(300):
                cand = np.sort(rng.choice(np.arange(first + 6, n - 6), size=k - 1, replace=False))
                e = np.concatenate([[first], cand, [n - 1]])
                if np.all(np.diff(e) >= 6) and np.all(np.diff(x[e]) >= 0.5):
                    break
            else:
                if k > 2:
                    k -= 1
                    continue
                raise ValueError(f"cannot place 2 stages in {n} checkpoints of schedule {sched!r}")
            break
        if types is not None and len(types) != k:
            raise ValueError(f"asked for types {types} but only {k} stages fit in {n} checkpoints")
        bounds = [int(b) for b in cand]
        if types is None:
            stage_types = ["A"]
            for _ in range(k - 1):
                stage_types.append(rng.choice(["A", "B"], p=[0.55, 0.45]) if stage_types[-1] == "A" else "A")
            if k >= 3 and rng.random() < 0.25:
                stage_types[-1] = "-"
        else:
            stage_types = list(types)
        edges_x = list(x[e])
        d_llcs = []
        for t in stage_types:
            if t == "A":
                d_llcs.append(rng.uniform(0.3, 1.0) * scale)
            elif t == "B":
                d_llcs.append(-rng.uniform(0.03, 0.3) * scale)
            else:
                d_llcs.append(0.0)
        llc = base + sum(d * _ramp((x - a) / (b - a)) for d, a, b in zip(d_llcs, edges_x[:-1], edges_x[1:]))
    # noise: per-chain offsets shared across checkpoints (large), per-checkpoint noise (small)
    small = min([abs(d) for d in d_llcs if d != 0] or [scale * 0.1])
    tau = rng.uniform(0.5, 3.0) * small  # chain offsets: stderr ~ tau/sqrt(C) can exceed a B dip
    eta = rng.uniform(0.01, 0.05) * small * np.sqrt(chains)  # per-checkpoint per-chain noise
    offsets = rng.normal(0, tau, chains)
    gains = 1 + rng.normal(0, 0.01, chains)
    per_chain = gains[:, None] * llc[None, :] + offsets[:, None] + rng.normal(0, eta, (chains, n))
    # loss: falls in A stages (and a little in B stages), flat in '-' stages
    loss0 = float(rng.uniform(3, 8))
    drops = [rng.uniform(0.1, 0.6) if t == "A" else (rng.uniform(0.0, 0.05) if t == "B" else 0.0)
             for t in (stage_types or ["-"])]
    loss = loss0 - sum(dl * _ramp((x - a) / (b - a)) for dl, a, b in zip(drops, edges_x[:-1], edges_x[1:]))
    loss = loss + rng.normal(0, 0.003, n)
    # heads: one planted head per stage rises by 0.3 in prev_token (layer 0) or induction (layer 1)
    head_vals = {m: 0.03 + rng.normal(0, 0.002, (n, len(labels))) for m in ("prev_token", "induction")}
    planted_heads = []
    for a, b in zip(edges_x[:-1], edges_x[1:]) if stage_types else []:
        h = int(rng.integers(0, len(labels)))
        metric = "prev_token" if labels[h].startswith("L0") else "induction"
        head_vals[metric][:, h] += 0.3 * _ramp((x - a) / (b - a))
        planted_heads.append(labels[h])
    rows = []
    for i, s in enumerate(steps):
        vals = per_chain[:, i]
        rows.append(dict(step=s, checkpoint=i, metric="llc", value=vals.mean(),
                         stderr=vals.std(ddof=1) / np.sqrt(chains), healthy=True))
        rows += [dict(step=s, checkpoint=i, metric="llc", chain=c, value=vals[c], healthy=True) for c in range(chains)]
        rows.append(dict(step=s, checkpoint=i, metric="loss", value=loss[i]))
        for metric, table in head_vals.items():
            rows += [dict(step=s, checkpoint=i, metric=metric, layer=int(lab[1]), head=int(lab[3:]), value=table[i, j])
                     for j, lab in enumerate(labels)]
    df = pd.DataFrame(rows)
    df.insert(0, "run", run)
    return Planted(df, bounds, stage_types, steps, planted_heads)
