"""Adaptive checkpoint densification: ``devinterp refine out/<run>``.

A boundary can only be placed as finely as the checkpoints around it allow. For each stage
boundary (or the ones asked for), :func:`refine` takes the window between the checkpoint before
its interval (``boundary_lo``) and the checkpoint after it (``boundary_hi``), resumes the recipe's
training from the window's first checkpoint (weights, AdamW state and data stream restored, so it
is the same run) and saves ``points`` evenly spaced new checkpoints inside the window; then it
measures only the new checkpoints (same frozen SGLD settings, same data and random streams: the
sweep's common random numbers) and detects stages again.

The detection smoother is frozen too: before the first refinement its hyperparameters (axis,
kernel, length scale, amplitude, noise) are fitted on the run's own grid and stored in
``manifest.json["smoother"]``; every later detection of the run (refine's, ``devinterp detect``'s
with the same axis and kernel settings, while no checkpoint lies beyond the steps it was fitted
on) rebuilds that smoother on all checkpoints. Why: one
stationary length scale fitted to a grid dense in one window and sparse elsewhere follows the
dense window, which changes the curve's model everywhere. Measured on the quickstart, refined
around its induction boundary: refitting turned the boundaries 1,075 / 1,600 into 147 / 975 (the
trough at 1,150 and the later rise lost, one B stage to the end); with the frozen smoother they
read 950 (the LLC's peak) / 1,050 / 1,150 (the trough) inside the window and 1,600 unchanged
outside (BENCHMARKS.md, "Refining boundaries"). On smooth planted curves the two agree
(``scripts/bench_refine_detect.py``).

Writes: the new checkpoints (``refined`` = True in ``checkpoints/index.csv``), their metrics,
``stages.csv`` (refined), ``stages_before_refine.csv`` (the stages before the first refinement),
``manifest.json["refine"]`` (windows, new steps, each boundary's interval before and after),
``manifest.json["smoother"]`` (once) and ``report.html``.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from devinterp import _io
from devinterp._callable_module import make_callable
from devinterp.manifest import read_manifest, update_manifest

log = logging.getLogger("devinterp.refine")


class RefineError(RuntimeError):
    """The run cannot be refined (no stages yet, no training state, a boundary not found)."""


def refine_windows(stages: pd.DataFrame, steps: list[int], boundaries: list[int] | None = None
                   ) -> list[tuple[int, int]]:
    """The step windows to densify: for each chosen boundary (every stage start after the first, or
    those nearest to ``boundaries``), from the last checkpoint before its interval's low end to the
    first checkpoint after its high end (the boundary itself when the interval is missing).
    Overlapping windows are merged; windows with no room for a new step are dropped."""
    steps = sorted(int(s) for s in steps)
    rows = stages[stages["stage"] > 1]
    if boundaries:
        starts = rows["start_step"].to_numpy(float)
        if len(starts) == 0:
            raise RefineError("the run has a single stage: there is no boundary to refine")
        picked = sorted({int(np.argmin(np.abs(starts - b))) for b in boundaries})
        rows = rows.iloc[picked]
    windows = []
    for r in rows.itertuples():
        lo = r.boundary_lo if pd.notna(getattr(r, "boundary_lo", np.nan)) else r.start_step
        hi = r.boundary_hi if pd.notna(getattr(r, "boundary_hi", np.nan)) else r.start_step
        before = [s for s in steps if s < min(lo, r.start_step)]
        after = [s for s in steps if s > max(hi, r.start_step)]
        a = before[-1] if before else steps[0]
        b = after[0] if after else steps[-1]
        if b - a >= 2:
            windows.append((a, b))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(windows):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def new_steps_in(window: tuple[int, int], points: int, existing: set[int]) -> list[int]:
    """``points`` evenly spaced integer steps strictly inside ``window``, minus steps already saved."""
    a, b = window
    grid = np.unique(np.round(np.linspace(a, b, points + 2)[1:-1]).astype(int))
    return [int(s) for s in grid if a < s < b and int(s) not in existing]


def _intervals(stages: pd.DataFrame) -> list[dict]:
    cols = ["stage", "start_step", "boundary_lo", "boundary_hi", "confidence", "type"]
    out = stages[stages["stage"] > 1][[c for c in cols if c in stages.columns]]
    return [{k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()}
            for row in out.to_dict("records")]


def outside_windows(intervals: list[dict] | None, windows: list[list[int]] | list[tuple[int, int]]) -> list[int]:
    """Start steps of the boundaries in ``intervals`` (``manifest["refine"]["before"/"after"]``) that
    lie in no refined window (steps a..b inclusive)."""
    return sorted(int(x["start_step"]) for x in intervals or []
                  if not any(a <= x["start_step"] <= b for a, b in windows))


def base_smoother(run_dir: str | Path, config) -> dict:
    """The detection smoother of the run's metrics as they are now, for ``manifest.json["smoother"]``:
    {runs: {run: hyperparameters} (``detect_stages(...).attrs["smoother"]``), settings: the axis and
    kernel settings it was fitted with, checkpoints: how many it was fitted on, span: [first, last]
    step it was fitted on, None without metrics}."""
    from devinterp.results import load_results
    from devinterp.transitions import detect_stages

    settings = {**config.detect.model_dump(), "bootstrap": 0}  # the bootstrap does not change the smoother
    metrics = load_results(run_dir).metrics
    with warnings.catch_warnings():  # this detection only reads the smoother; its warnings were shown before
        warnings.simplefilter("ignore")
        stages = detect_stages(metrics, **settings)
    return {"runs": stages.attrs.get("smoother", {}), "settings": {k: settings[k] for k in ("axis", "kernel")},
            "checkpoints": int(metrics["step"].nunique()),
            "span": [int(metrics["step"].min()), int(metrics["step"].max())] if len(metrics) else None}


def frozen_smoother(manifest: dict, settings: dict, steps=None) -> dict | None:
    """The smoother refine froze (``manifest["smoother"]["runs"]``, for ``detect_stages(smoother=...)``)
    when the detection ``settings`` have the axis and kernel it was fitted with and every one of
    ``steps`` (the metrics' steps; None = not checked) lies within the steps it was fitted on; None
    otherwise (the smoother is then fitted anew): refine only adds checkpoints inside that span, so
    a step outside it means the run was extended by other means (a resumed training or monitor),
    and a model of the old curve says nothing there."""
    frozen = manifest.get("smoother") if isinstance(manifest, dict) else None
    if not isinstance(frozen, dict) or not frozen.get("runs"):
        return None
    wanted = {k: settings.get(k) for k in ("axis", "kernel")}
    if frozen.get("settings") != wanted:
        log.info("the smoother frozen by refine was fitted with %s; fitting anew for %s", frozen.get("settings"), wanted)
        return None
    span = frozen.get("span")
    if span is not None and steps is not None and len(steps):
        lo, hi = int(np.min(steps)), int(np.max(steps))
        if lo < span[0] or hi > span[1]:
            log.warning("the run now reaches steps %d-%d, beyond the steps %d-%d its smoother was frozen on (by "
                        "refine); fitting the smoother anew", lo, hi, span[0], span[1])
            return None
    return frozen["runs"]


def refine(run_dir: str | Path, *, boundaries: list[int] | None = None, points: int = 8,
           progress: bool = True) -> pd.DataFrame:
    """Densify the checkpoints around the run's stage boundaries, measure them and re-detect.

    run_dir:    a run folder made by ``devinterp run`` with a recipe that can resume (``induction``,
                ``icl-regression``, ``language``; its checkpoints carry training
                state: ``train.save_train_state``, the default) and a ``stages.csv``.
    boundaries: steps near the boundaries to refine (default: every boundary).
    points:     new checkpoints per window (evenly spaced in steps).

    Returns the refined stages table (also written to ``stages.csv``). Raises :class:`RefineError`
    when the run has no stages yet, was not trained by a recipe, or its training state is missing.
    """
    from devinterp.api import detect, render_report
    from devinterp.checkpoints import DirectorySource
    from devinterp.config import load_config
    from devinterp.recipes.registry import recipe_spec
    from devinterp.recipes.train_state import train_state_path
    from devinterp.results import load_results
    from devinterp.sweep import run_sweep

    run_dir = Path(run_dir)
    if points < 1:
        raise ValueError(f"points must be at least 1, got {points}")
    config_path, stages_path = run_dir / "config.yaml", run_dir / "stages.csv"
    for path, what in ((config_path, "run `devinterp run CONFIG` first"), (stages_path, "run `devinterp detect` first")):
        if not path.is_file():
            raise RefineError(f"{path}: missing; {what}")
    config = load_config(config_path)
    if config.checkpoints is not None or config.source is not None:
        raise RefineError(f"{config_path}: refine retrains the recipe, but this run reads checkpoints from "
                          f"{config.checkpoints or config.source.kind}; it can only refine a recipe's own run")
    resume = recipe_spec(config).resume
    if resume is None:
        from devinterp.recipes.registry import RECIPE_SPECS

        can = ", ".join(name for name, spec in RECIPE_SPECS.items() if spec.resume is not None)
        raise RefineError(f"{config_path}: the {config.recipe.name!r} recipe cannot resume its training yet; "
                          f"refine supports: {can}")
    ckpt_dir = run_dir / "checkpoints"
    source = DirectorySource(ckpt_dir, model=config.recipe.model)
    stages = pd.read_csv(stages_path)
    windows = refine_windows(stages, source.steps, boundaries)
    if not windows:
        log.info("no boundary window has room for new checkpoints; nothing to refine")
        return stages
    before_path = run_dir / "stages_before_refine.csv"
    if not before_path.is_file():
        _io.write_csv(before_path, stages)
    if not read_manifest(run_dir).get("smoother"):  # frozen once, on the grid before any refinement
        update_manifest(run_dir, smoother=base_smoother(run_dir, config))
    t0 = time.perf_counter()
    existing = set(source.steps)
    added: list[int] = []
    for a, b in windows:
        wanted = new_steps_in((a, b), points, existing)
        if not wanted:
            continue
        if not train_state_path(ckpt_dir, a).is_file():
            raise RefineError(f"{train_state_path(ckpt_dir, a)}: missing; the run was trained without "
                              f"train.save_train_state, so training cannot resume at step {a}")
        log.info("refining %d..%d with %d new checkpoints", a, b, len(wanted))
        rows = resume(config, run_dir, a, wanted, progress)
        added += [r["step"] for r in rows]
        existing |= set(wanted)
    train_seconds = time.perf_counter() - t0
    run_sweep(DirectorySource(ckpt_dir, model=config.recipe.model), config, run_dir, progress=progress)
    refined = detect(run_dir, config)
    before, after = _intervals(pd.read_csv(before_path)), _intervals(refined)
    elsewhere = outside_windows(before, windows), outside_windows(after, windows)
    if elsewhere[0] != elsewhere[1]:
        # detection reruns on the whole run, and the new checkpoints refit the smoother for all of it
        log.warning("boundaries outside the refined windows changed: %s -> %s (detection reruns on the whole run; "
                    "stages_before_refine.csv keeps the earlier table)",
                    ", ".join(map(str, elsewhere[0])) or "none", ", ".join(map(str, elsewhere[1])) or "none")
    update_manifest(run_dir, refine={
        "windows": [list(w) for w in windows], "new_steps": sorted(added), "points": points,
        "train_seconds": round(train_seconds, 2), "seconds": round(time.perf_counter() - t0, 2),
        "before": before, "after": after})
    render_report(load_results(run_dir), run_dir / "report.html", config)
    return refined


# ``devinterp.refine`` is this module once it is imported: keep ``devinterp.refine(run_dir)`` working
make_callable(__name__, "devinterp.refine:refine")

__all__ = ["RefineError", "base_smoother", "frozen_smoother", "new_steps_in", "outside_windows", "refine",
           "refine_windows"]
