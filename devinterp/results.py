"""Load a finished (or partly finished) run directory: metrics, stages and manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from devinterp.tables import METRIC_COLUMNS, STAGE_COLUMNS, normalize_metrics, read_metrics_dir


@dataclass
class Results:
    """Tables of one run.

    Attributes:
        metrics: the long metrics table (DESIGN.md), one row per measurement.
        stages: the stages table (may be empty before detection).
        manifest: the run's manifest.json as a dict (empty when absent).
        path: the run directory, when loaded from disk.
    """

    metrics: pd.DataFrame
    stages: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STAGE_COLUMNS))
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def run(self) -> str:
        if len(self.metrics):
            return str(self.metrics["run"].iloc[0])
        return str(self.manifest.get("run", self.path.name if self.path else "run"))

    @cached_property
    def locality(self):
        """The run's LLC locality check (:func:`devinterp.locality.sweep_locality` of ``metrics``;
        None when it cannot be judged), computed once per Results."""
        from devinterp.locality import sweep_locality

        return sweep_locality(self.metrics)

    def series(self, metric: str) -> pd.DataFrame:
        """Model-level rows of ``metric`` (aggregate rows only, no per-chain rows), sorted by step."""
        m = self.metrics
        rows = m[(m["metric"] == metric) & m["layer"].isna() & m["chain"].isna()]
        return rows.sort_values("step").reset_index(drop=True)

    def wide(self, metric: str, value: str = "value") -> pd.DataFrame:
        """Per-head ``metric`` as a steps x heads frame; columns are labels like ``L1H2``."""
        m = self.metrics
        rows = m[(m["metric"] == metric) & m["layer"].notna() & m["chain"].isna()]
        if rows.empty:
            raise KeyError(f"no per-head rows for metric {metric!r} in run {self.run!r}")
        labels = "L" + rows["layer"].astype(int).astype(str) + "H" + rows["head"].astype(int).astype(str)
        out = rows.assign(label=labels).pivot_table(index="step", columns="label", values=value, aggfunc="mean")
        order = sorted(out.columns, key=lambda s: tuple(int(x) for x in s[1:].split("H")))
        return out[order]


def load_results(path: str | Path) -> Results:
    """Read a run directory (``out/<run>``) written by :func:`devinterp.run` or ``devinterp sweep``.

    Raises FileNotFoundError naming the folder when it holds no metrics.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run directory")
    metrics = read_metrics_dir(path / "metrics")
    if metrics.empty and (path / "metrics.csv").is_file():
        metrics = normalize_metrics(pd.read_csv(path / "metrics.csv"))
    stages_path = path / "stages.csv"
    stages = pd.read_csv(stages_path) if stages_path.is_file() else pd.DataFrame(columns=STAGE_COLUMNS)
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return Results(metrics=metrics, stages=stages, manifest=manifest, path=path)


__all__ = ["Results", "load_results", "METRIC_COLUMNS"]
