"""A synthetic run (metrics, stages, manifest) with every column and metric the report shows.

For the report benchmark (scripts/bench_report.py), the report tests and demos: it exercises every
figure (per-chain LLC rows, per-head scores and head LLCs, unhealthy estimates with reasons, failed
checkpoints, a calibration table) without a sweep. The curves are smooth stand-ins, not science.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from devinterp.results import Results
from devinterp.tables import normalize_metrics

HEAD_METRICS = ("prev_token", "induction", "duplicate_token", "head_llc")


def synthetic_steps(n_checkpoints: int, last: int = 20_000) -> np.ndarray:
    """``n_checkpoints`` distinct steps from 0 to ``last``: log-spaced early, linear later."""
    n_log = n_checkpoints // 2
    steps = set(np.unique(np.geomspace(1, last / 4, n_log).astype(int)).tolist()) | {0}
    linear = np.linspace(last / 4, last, n_checkpoints).astype(int)
    for s in linear:
        if len(steps) >= n_checkpoints:
            break
        steps.add(int(s))
    return np.array(sorted(steps)[:n_checkpoints], dtype=np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def synthetic_run(n_checkpoints: int = 200, n_layers: int = 2, n_heads: int = 8, chains: int = 4,
                  seed: int = 0, run: str = "synthetic") -> Results:
    """A :class:`Results` of ``n_checkpoints`` checkpoints, ``n_layers`` x ``n_heads`` heads, ``chains``
    SGLD chains: metrics loss, train_loss, llc (aggregate + per chain), icl_score and the per-head
    metrics of :data:`HEAD_METRICS`; 4 stages (A, B, A, -); a manifest with two failed checkpoints and
    a calibration table. Two LLC estimates are unhealthy, with reasons."""
    rng = np.random.default_rng(seed)
    steps = synthetic_steps(n_checkpoints)
    n = len(steps)
    t = np.log10(steps + 1) / np.log10(steps[-1] + 1)  # 0 -> 1 in log time
    frames = []

    def rows(metric, values, layer=None, head=None, chain=None, stderr=None, healthy=None, reason=None):
        frames.append(pd.DataFrame({
            "run": run, "step": steps, "checkpoint": np.arange(n), "metric": metric, "layer": layer, "head": head,
            "chain": chain, "value": values, "stderr": stderr, "healthy": healthy, "reason": reason}))

    loss = 2.0 + 5.0 * (1 - _sigmoid((t - 0.25) * 12)) - 0.6 * _sigmoid((t - 0.7) * 20)
    rows("loss", loss)
    rows("train_loss", loss + rng.normal(0, 0.05, n))
    llc = 40 + 80 * _sigmoid((t - 0.3) * 14) - 15 * _sigmoid((t - 0.55) * 30) + 25 * _sigmoid((t - 0.75) * 25)
    per_chain = llc[None, :] + rng.normal(0, 4, (chains, n))
    healthy = np.ones(n, dtype=bool)
    bad = [n // 3, (2 * n) // 3]
    healthy[bad] = False
    reason = np.where(healthy, None, "loss trace not stationary after burn-in")
    rows("llc", per_chain.mean(0), stderr=per_chain.std(0, ddof=1) / np.sqrt(chains), healthy=healthy, reason=reason)
    for c in range(chains):
        rows("llc", per_chain[c], chain=c, healthy=healthy, reason=reason)
    rows("icl_score", -0.05 - 0.2 * _sigmoid((t - 0.7) * 20) + rng.normal(0, 0.01, n))
    for metric in HEAD_METRICS:
        for layer in range(n_layers):
            for head in range(n_heads):
                onset = rng.uniform(0.3, 0.9)
                height = rng.uniform(0.02, 0.6) if (layer + head + len(metric)) % 3 == 0 else rng.uniform(0, 0.05)
                values = 0.02 + height * _sigmoid((t - onset) * 25) + rng.normal(0, 0.005, n)
                if metric == "head_llc":
                    values = 5 + 100 * values
                    rows(metric, values, layer=layer, head=head, stderr=np.full(n, 0.5), healthy=np.ones(n, bool))
                else:
                    rows(metric, values, layer=layer, head=head)
    metrics = normalize_metrics(pd.concat(frames, ignore_index=True))
    return Results(metrics=metrics, stages=_stages(run, steps), manifest=_manifest(run, steps))


def _stages(run: str, steps: np.ndarray) -> pd.DataFrame:
    cut = [int(steps[0])] + [int(steps[int(len(steps) * q)]) for q in (0.35, 0.55, 0.8)] + [int(steps[-1])]
    return pd.DataFrame({
        "run": run, "stage": [1, 2, 3, 4], "start_step": cut[:-1], "end_step": cut[1:], "type": ["A", "B", "A", "-"],
        "d_loss": [-4.5, -0.05, -0.6, -0.01], "d_llc": [80.0, -15.0, 25.0, 0.4], "d_llc_stderr": [2.0, 1.5, 2.0, 1.0],
        "confidence": [0.98, 0.81, 0.9, 0.55], "boundary_lo": [cut[0]] + [int(c * 0.9) for c in cut[1:4]],
        "boundary_hi": [cut[0]] + [int(c * 1.1) for c in cut[1:4]],
        "heads": ["L0H1", "L0H4,L0H1", "L1H6,L1H7,L0H3", ""], "method": "pelt"})


def _manifest(run: str, steps: np.ndarray) -> dict:
    statuses = {str(int(s)): {"status": "done"} for s in steps}
    for s in steps[[5, len(steps) // 2]]:
        statuses[str(int(s))] = {"status": "failed", "reason": "checkpoint file truncated (safetensors header)"}
    return {
        "run": run, "config_hash": "0123456789abcdef",
        "config": {"name": run, "recipe": {"model": {"n_layers": 2, "n_heads": 8, "d_model": 256}},
                   "sweep": {"llc": {"chains": 4, "draws": 200, "epsilon": 3e-4, "nbeta": 30.0}}},
        "versions": {"devinterp-phases": "0.1.0", "plotly": "synthetic"}, "python": "3.11",
        "machine": {"platform": "synthetic", "cpus": 2}, "timings": {"train_seconds": 100.0, "sweep_seconds": 250.0},
        "checkpoints": statuses,
        "llc_settings": {"settings": {"epsilon": 3e-4, "gamma": 100.0, "nbeta": 30.0, "chains": 4, "draws": 200},
                         "calibration": [{"epsilon": e, "nbeta": 30.0, "llc": 100 + 10 * i, "healthy": i < 3}
                                         for i, e in enumerate((1e-4, 3e-4, 1e-3, 3e-3))]},
    }


__all__ = ["synthetic_run", "synthetic_steps", "HEAD_METRICS"]
