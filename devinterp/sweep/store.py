"""The metrics store of a run: one Parquet file per (checkpoint, metric group), written atomically.

``metrics/<step:08d>__<group>.parquet`` exists only when that group finished at that checkpoint
(each is written to a hidden temp file ``.<name>.<random>.tmp`` beside it, then renamed), so a
rerun computes exactly what is missing. A write killed before its rename leaves only a temp file,
which readers ignore (only ``*.parquet`` is read) and the next sweep deletes.

Only the main process of a sweep writes here (workers return rows), under the run folder's lock.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from devinterp import _io
from devinterp.tables import normalize_metrics, read_metrics_dir

# Test hook: seconds to sleep between writing a temp file and renaming it, so a test can kill a
# sweep mid-write deterministically. Unset in normal use.
SLOW_WRITE_ENV = "DEVINTERP_TEST_SLOW_WRITE"


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
        df = normalize_metrics(df)
        pause = float(os.environ.get(SLOW_WRITE_ENV) or 0)

        def write(tmp: Path) -> None:
            df.to_parquet(tmp, index=False)
            if pause:
                time.sleep(pause)  # the temp file is whole, the rename has not happened

        return _io.atomic_write(self.path(step, group), write)

    def temp_files(self) -> list[Path]:
        """Temp files of writes that never reached their rename (hidden, ending in .tmp)."""
        return sorted(self.folder.glob(".*.tmp")) if self.folder.is_dir() else []

    def clean_temp(self, stale_seconds: float = 600.0) -> int:
        """Delete leftover temp files: all of them in ``metrics/`` (call only while holding the run
        folder's sweep lock), and those older than ``stale_seconds`` in the run folder itself (e.g. of
        manifest.json; other boxes may be writing there right now)."""
        removed = 0
        now = time.time()
        run_dir = self.folder.parent
        top = []
        for p in run_dir.glob(".*.tmp") if run_dir.is_dir() else []:
            try:
                if now - p.stat().st_mtime > stale_seconds:
                    top.append(p)
            except FileNotFoundError:  # its writer just renamed it
                pass
        for tmp in self.temp_files() + top:
            try:
                tmp.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def read(self) -> pd.DataFrame:
        return read_metrics_dir(self.folder)

    def renumber(self, order: dict[int, int], table: pd.DataFrame | None = None) -> int:
        """Make every file's ``checkpoint`` column the step's index in ``order`` ({step: index}); files
        of steps whose index changed (checkpoints were added in between, e.g. by ``devinterp refine``)
        are rewritten atomically. ``table``: the store's contents if already read. Returns the number of
        files rewritten. Call under the sweep lock."""
        table = self.read() if table is None else table
        if table.empty:
            return 0
        expected = table["step"].map(order)
        stale = sorted(set(table.loc[expected.notna() & (expected != table["checkpoint"]), "step"].astype(int)))
        rewritten = 0
        for step in stale:
            for path in sorted(self.folder.glob(f"{step:08d}__*.parquet")):
                df = pd.read_parquet(path)
                df["checkpoint"] = order[step]
                df = normalize_metrics(df)
                _io.atomic_write(path, lambda tmp, df=df: df.to_parquet(tmp, index=False))
                rewritten += 1
        return rewritten
