"""The two data contracts of DESIGN.md: the long metrics table and the stages table.

Only pandas here, so analysis and plotting work without torch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

METRIC_COLUMNS = ["run", "step", "checkpoint", "metric", "layer", "head", "chain", "value", "stderr", "healthy"]
METRIC_DTYPES = {
    "run": "string",
    "step": "int64",
    "checkpoint": "int64",
    "metric": "string",
    "layer": "Int64",
    "head": "Int64",
    "chain": "Int64",
    "value": "float64",
    "stderr": "Float64",
    "healthy": "boolean",
}

STAGE_COLUMNS = [
    "run", "stage", "start_step", "end_step", "type", "d_loss", "d_llc", "d_llc_stderr",
    "confidence", "boundary_lo", "boundary_hi", "heads", "method",
]


def normalize_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Give a metrics table every contract column with its dtype (missing optional columns -> null).

    Extra columns (e.g. ``reason``) are kept after the contract columns. Raises ValueError naming
    the missing required columns.
    """
    required = ["run", "step", "metric", "value"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"metrics table lacks required column(s) {missing}; has {list(df.columns)}")
    df = df.copy()
    if "checkpoint" not in df.columns:
        steps = sorted(df["step"].unique())
        df["checkpoint"] = df["step"].map({s: i for i, s in enumerate(steps)})
    for col in METRIC_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    df = df.astype({c: METRIC_DTYPES[c] for c in METRIC_COLUMNS})
    extra = [c for c in df.columns if c not in METRIC_COLUMNS]
    return df[METRIC_COLUMNS + extra]


def read_metrics_dir(folder: str | Path) -> pd.DataFrame:
    """Concatenate every ``*.parquet`` in ``folder`` into one normalized metrics table."""
    folder = Path(folder)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return normalize_metrics(pd.DataFrame(columns=METRIC_COLUMNS))
    frames = [pd.read_parquet(f) for f in files]
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    df = normalize_metrics(df)
    return df.sort_values(["step", "metric", "layer", "head", "chain"], na_position="first").reset_index(drop=True)
