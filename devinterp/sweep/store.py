"""The metrics store of a run: one Parquet file per (checkpoint, metric group), written atomically.

``metrics/<step:08d>__<group>.parquet`` exists only when that group finished at that checkpoint,
so a rerun computes exactly what is missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from devinterp import _io
from devinterp.tables import normalize_metrics, read_metrics_dir


class MetricStore:
    def __init__(self, run_dir: str | Path):
        self.folder = Path(run_dir) / "metrics"

    def path(self, step: int, group: str) -> Path:
        return self.folder / f"{step:08d}__{group}.parquet"

    def has(self, step: int, group: str) -> bool:
        return self.path(step, group).is_file()

    def write(self, run: str, step: int, checkpoint: int, group: str, rows: list[dict]) -> Path:
        """Write one group's rows for one checkpoint (adds run, step, checkpoint columns)."""
        df = pd.DataFrame(rows)
        df.insert(0, "run", run)
        df.insert(1, "step", step)
        df.insert(2, "checkpoint", checkpoint)
        return _io.write_parquet(self.path(step, group), normalize_metrics(df))

    def read(self) -> pd.DataFrame:
        return read_metrics_dir(self.folder)
