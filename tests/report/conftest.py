"""Fixtures of the report tests: the released hoogland2024-lm curves, its stage table, a synthetic run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from devinterp.report.synthetic import synthetic_run
from devinterp.results import Results
from devinterp.tables import normalize_metrics

HOOGLAND = Path(__file__).resolve().parents[3] / "shared" / "data" / "hoogland2024-lm" / "metrics.csv"
# Stage table of the hoogland2024-lm README ("Language model"): notebook boundaries and types.
HOOGLAND_BOUNDARIES = [0, 900, 6500, 8500, 17500, 49900]
HOOGLAND_TYPES = ["A", "A", "B", "A", "-"]


@pytest.fixture(scope="session")
def hoogland_metrics() -> pd.DataFrame:
    if not HOOGLAND.is_file():
        pytest.skip(f"reference data {HOOGLAND} is absent (it lives in ../shared/data, outside the repo)")
    return normalize_metrics(pd.read_csv(HOOGLAND))


@pytest.fixture(scope="session")
def hoogland_stages() -> pd.DataFrame:
    b = HOOGLAND_BOUNDARIES
    return pd.DataFrame({
        "run": "hoogland2024-lm", "stage": range(1, 6), "start_step": b[:-1], "end_step": b[1:],
        "type": HOOGLAND_TYPES, "d_loss": [-3.595, -0.717, -0.071, -0.266, -0.077],
        "d_llc": [26.33, 22.54, -1.57, 8.63, 1.76], "d_llc_stderr": [1.0, 1.0, 0.5, 1.0, 1.0],
        "confidence": [0.97, 0.88, 0.71, 0.93, 0.52], "boundary_lo": [0, 800, 6000, 8000, 16500],
        "boundary_hi": [0, 1000, 7000, 9000, 18500], "heads": ["", "L0H1,L0H4", "L0H1", "L1H6,L1H7", ""],
        "method": "notebook"})


@pytest.fixture(scope="session")
def hoogland(hoogland_metrics, hoogland_stages) -> Results:
    return Results(metrics=hoogland_metrics, stages=hoogland_stages,
                   manifest={"run": "hoogland2024-lm", "config": {"recipe": "language"}})


@pytest.fixture(scope="session")
def synthetic() -> Results:
    """60 checkpoints, 2x8 heads, 4 chains, 2 unhealthy LLC estimates, 2 failed checkpoints."""
    return synthetic_run(n_checkpoints=60, chains=4)
