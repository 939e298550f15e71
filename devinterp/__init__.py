"""devinterp-phases: find the developmental stages of a training run.

Public API (DESIGN.md)::

    load_config(path) -> RunConfig
    run(config, out="out") -> Results
    train(config, out) -> CheckpointSource
    sweep(source, config, out) -> pd.DataFrame
    detect_stages(metrics, **settings) -> pd.DataFrame
    render_report(results, path) -> Path
    load_results(path) -> Results
    estimate_llc(model, data, loss_fn, **settings) -> LLCResult
    calibrate_llc(models, data, loss_fn, **search) -> LLCSettings
    refine(run_dir, boundaries=None, points=8) -> pd.DataFrame   # densify checkpoints at boundaries

Heavy modules (torch, plotly) load on first use, so ``import devinterp`` stays cheap and the
table-only parts (detection, report) work without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from devinterp.config import LLCSettings, RunConfig, load_config
from devinterp.results import Results, load_results

_LAZY = {
    "run": "devinterp.api",
    "train": "devinterp.api",
    "sweep": "devinterp.api",
    "render_report": "devinterp.api",
    "refine": "devinterp.refine",
    "detect_stages": "devinterp.transitions",
    "estimate_llc": "devinterp.llc",
    "calibrate_llc": "devinterp.llc",
    "LLCResult": "devinterp.llc",
    "CheckpointSource": "devinterp.checkpoints",
}

__all__ = ["LLCSettings", "Results", "RunConfig", "load_config", "load_results", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from devinterp.api import render_report, run, sweep, train
    from devinterp.checkpoints import CheckpointSource
    from devinterp.llc import LLCResult, calibrate_llc, estimate_llc
    from devinterp.refine import refine
    from devinterp.transitions import detect_stages


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'devinterp' has no attribute {name!r}")
