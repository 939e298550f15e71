"""Sweep runner (checkpoints x metric groups) and its Parquet store."""

from devinterp.sweep.runner import run_sweep, sweep_data
from devinterp.sweep.store import MetricStore

__all__ = ["MetricStore", "run_sweep", "sweep_data"]
