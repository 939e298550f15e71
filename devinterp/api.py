"""The pipeline as Python functions: train -> sweep -> detect -> report (DESIGN.md, 'Public API').

Each function reads what the previous one wrote to ``<out>/<run name>/`` and can be called alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import pandas as pd

from devinterp import _io
from devinterp.checkpoints import CheckpointSource, DirectorySource, open_source
from devinterp.config import LLC_EXECUTION_FIELDS, RunConfig, dump_config, load_config
from devinterp.manifest import environment, read_manifest, update_manifest
from devinterp.results import Results, load_results

log = logging.getLogger("devinterp")


class RunDirError(RuntimeError):
    """The output folder holds a run made with different settings."""


def run_dir_for(config: RunConfig, out: str | Path = "out") -> Path:
    return Path(out) / config.name


def _unmeasured_sweep_fields(config: RunConfig) -> tuple[str, ...]:
    """Sweep fields that do not change the metrics (where and how strictly they run, which groups;
    the calibration cap when calibration is off), dotted below the sweep (``llc.cuda_graph``)."""
    return (("executor", "strict", "metrics") + tuple(f"llc.{f}" for f in LLC_EXECUTION_FIELDS)
            + (("calibrate_max_length_factor",) if config.sweep.calibrate == "off" else ()))


def _exclusion(dotted: tuple[str, ...]) -> dict:
    """pydantic's nested ``exclude`` for dotted field names: ('a', 'b.c') -> {'a': True, 'b': {'c': True}}."""
    out: dict = {}
    for name in dotted:
        *parents, leaf = name.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = True
    return out


def measurement_hash(config: RunConfig) -> str:
    """Hash of the settings that determine the metrics: run name, checkpoints or source, recipe and
    sweep. Where they run (device, executor), strictness, the list of metric groups (adding one
    measures only it; each group's values do not depend on the others), detection and report
    settings may change freely between reruns, and so may the fields other sections gain."""
    sweep = config.sweep.model_dump(mode="json", exclude=_exclusion(_unmeasured_sweep_fields(config)))
    parts = {"name": config.name, "checkpoints": None if config.checkpoints is None else str(config.checkpoints),
             "source": None if config.source is None else config.source.model_dump(mode="json"),
             "recipe": config.recipe.model_dump(mode="json"), "sweep": sweep}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _flat(tree, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def settings_differences(run_dir: Path, config: RunConfig, most: int = 8) -> list[str]:
    """The measurement settings in which ``config`` differs from the run in ``run_dir``, as
    ``"key: theirs -> ours"`` lines, read from the run's resolved ``config.yaml`` (every default was
    written there, so a changed library default shows up too). Empty when that file is missing or
    unreadable, or when only fields the measurement hash ignores differ."""
    import yaml

    try:
        theirs = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(theirs, dict):
        return []
    ignored = tuple(f"sweep.{name}" for name in _unmeasured_sweep_fields(config))  # as measurement_hash
    measured = ("name", "checkpoints", "source", "recipe", "sweep")
    a, b = _flat(theirs), _flat(config.model_dump(mode="json"))
    keys = [k for k in sorted(set(a) | set(b)) if k.split(".")[0] in measured and not k.startswith(ignored)]
    diffs = [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in keys if a.get(k) != b.get(k)]
    return diffs[:most] + ([f"... and {len(diffs) - most} more"] if len(diffs) > most else [])


def prepare_run_dir(config: RunConfig, out: str | Path = "out", force_new: bool = False) -> Path:
    """Create ``out/<name>`` (or check it belongs to this config) and write the resolved config.yaml.

    Raises RunDirError when the folder holds a run measured with other settings (the executor,
    ``strict``, detection and report settings may change freely), unless ``force_new``: then the
    first of ``<name>-2``, ``<name>-3``, ... that is new or holds this very config is used, so
    rerunning with ``force_new`` resumes there instead of starting yet another folder.
    """
    want = measurement_hash(config)
    run_dir = run_dir_for(config, out)
    have = read_manifest(run_dir).get("measurement_hash")
    if have is not None and have != want:
        if not force_new:
            diffs = settings_differences(run_dir, config)
            said = ("; it differs in (that run -> this config):\n  " + "\n  ".join(diffs) + "\n") if diffs else "; "
            raise RunDirError(
                f"{run_dir} holds a run measured with other settings (hash {have}, this config {want}){said}"
                "use another run name, delete the folder, or pass --force-new to write to a new folder"
            )
        k = 2
        while True:
            run_dir = Path(out) / f"{config.name}-{k}"
            if read_manifest(run_dir).get("measurement_hash", want) == want and (
                    not run_dir.exists() or (run_dir / "manifest.json").is_file() or not any(run_dir.iterdir())):
                break
            k += 1
        log.warning("%s holds another config; writing to %s", run_dir_for(config, out), run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _io.write_text(run_dir / "config.yaml", dump_config(config))
    update_manifest(run_dir, run=config.name, measurement_hash=want, config_hash=config.hash(), **environment())
    return run_dir


def train(config: RunConfig, out: str | Path = "out", progress: bool = True, force_new: bool = False) -> DirectorySource:
    """Train the config's recipe (``recipe.name``) into ``out/<name>/checkpoints`` (skipped when already complete)."""
    from devinterp.recipes.registry import train_recipe

    run_dir = prepare_run_dir(config, out, force_new=force_new)
    t0 = time.perf_counter()
    source = train_recipe(config, run_dir, progress=progress)
    update_manifest(run_dir, timings={"train_seconds": round(time.perf_counter() - t0, 2)})
    return source


def checkpoint_source(config: RunConfig, out: str | Path = "out") -> CheckpointSource:
    """The checkpoints a sweep reads: ``source:`` (a folder or Hugging Face revisions in the local
    cache), the user's folder (``checkpoints:``), or the recipe's output ``out/<name>/checkpoints``."""
    if config.source is not None:
        return open_source(config.source, model=config.recipe.model)
    if config.checkpoints is not None:
        return DirectorySource(config.checkpoints, model=config.recipe.model)
    folder = run_dir_for(config, out) / "checkpoints"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no checkpoints yet; run `devinterp train` first or set `checkpoints:`")
    return DirectorySource(folder, model=config.recipe.model)


def sweep(source: CheckpointSource, config: RunConfig, out: str | Path = "out", progress: bool = True, *,
          strict: bool | None = None, force_new: bool = False, executor=None) -> pd.DataFrame:
    """Measure every checkpoint; resumable. Returns the long metrics table (DESIGN.md).

    A bad checkpoint is recorded as failed in manifest.json and the rest are measured; with ``strict``
    (default ``config.sweep.strict``) :class:`devinterp.sweep.SweepFailed` is raised afterwards.
    ``force_new`` writes to a new folder when ``out/<name>`` holds other settings (see
    :func:`prepare_run_dir`); ``executor`` overrides ``config.sweep.executor``.
    """
    from devinterp.sweep import run_sweep

    run_dir = prepare_run_dir(config, out, force_new=force_new)
    return run_sweep(source, config, run_dir, progress=progress, strict=strict, executor=executor)


def calibrate(source: CheckpointSource, config: RunConfig, out: str | Path = "out", *,
              force_new: bool = False) -> dict:
    """Freeze the run's SGLD settings without measuring anything: what ``sweep`` does first.

    With ``sweep.calibrate: auto`` this runs :func:`devinterp.llc.calibrate_llc` at the probed
    checkpoints and writes ``out/<name>/llc_settings.json``; with ``off`` it writes ``sweep.llc`` as
    given. When the file already exists nothing is rerun (the settings stay frozen for the run).
    A later ``sweep`` reads the file. Returns its content: {settings, calibration (the table, one
    dict per run tried, or None), choice, probed_steps}, ``path`` (the file) and ``new`` (False when
    the file was already there). Raises
    :class:`devinterp.llc.CalibrationError` when nothing on the grid passes (the table is then in
    ``llc_calibration_failed.json``)."""
    import json

    from devinterp.recipes.registry import check_family
    from devinterp.sweep.calibration import FILE, frozen_llc_settings
    from devinterp.sweep.runner import exclusive_lock

    run_dir = prepare_run_dir(config, out, force_new=force_new)
    with exclusive_lock(run_dir):
        new = not (run_dir / FILE).is_file()
        check_family(config, source.model_config())
        frozen_llc_settings(source, config, run_dir)
    return {**json.loads((run_dir / FILE).read_text()), "path": str(run_dir / FILE), "new": new}


def detect(run_dir: str | Path, config: RunConfig | None = None, **overrides) -> pd.DataFrame:
    """Detect stages from a run's metrics and write ``stages.csv``; ``overrides`` change DetectConfig fields.

    In a run that ``refine`` densified, the smoother frozen before the first refinement
    (``manifest.json["smoother"]``) is rebuilt on all checkpoints instead of being fitted anew, as
    long as the axis and kernel settings are those it was fitted with (see
    :func:`devinterp.refine.refine`)."""
    from devinterp.transitions import detect_stages

    run_dir = Path(run_dir)
    if config is None:
        config = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else RunConfig()
    settings = {**config.detect.model_dump(), **overrides}
    results = load_results(run_dir)
    if results.metrics.empty:
        raise FileNotFoundError(f"{run_dir}/metrics: no metrics yet; run `devinterp sweep` first")
    from devinterp.refine import frozen_smoother

    smoother = frozen_smoother(read_manifest(run_dir), settings, results.metrics["step"])
    stages = detect_stages(results.metrics, smoother=smoother, **settings)
    _io.write_csv(run_dir / "stages.csv", stages)
    update_manifest(run_dir, detect=settings)
    return stages


def render_report(results: Results, path: str | Path, config: RunConfig | None = None) -> Path:
    """Write the standalone HTML report of ``results`` to ``path``.

    Title and step axis come from ``config.report``, else from the run's own config.yaml.
    """
    from devinterp.report import render_report as _render

    report = _report_settings(results, config)
    return _render(results, path, title=report.title, step_axis=report.step_axis)


def export_figures(results: Results, folder: str | Path, formats=("png",), config: RunConfig | None = None, *,
                   scale: float = 2) -> list[Path]:
    """Write every figure of the report as ``<folder>/<figure>.png`` / ``.svg`` (for papers); returns
    the paths. The step axis comes from ``config.report`` as for :func:`render_report`. Needs the
    ``export`` extra (kaleido) and a Chromium browser, else raises
    :class:`devinterp.report.export.ExportError` saying what to install."""
    from devinterp.report.export import export_figures as _export

    report = _report_settings(results, config)
    return _export(results, folder, formats, scale=scale, step_axis=report.step_axis)


def _report_settings(results: Results, config: RunConfig | None):
    """``config.report``, else the report settings of the run's own config.yaml, else the defaults."""
    if config is None and results.path is not None and (results.path / "config.yaml").is_file():
        config = load_config(results.path / "config.yaml")
    return config.report if config is not None else RunConfig().report


def run(config: RunConfig | str | Path, out: str | Path = "out", progress: bool = True, *,
        force_new: bool = False) -> Results:
    """The whole pipeline: train (unless ``checkpoints:`` or ``source:`` is given), sweep, detect, report.

    Writes ``out/<name>/{checkpoints/, metrics/, stages.csv, report.html, manifest.json}``; with
    ``force_new``, a fresh ``out/<name>-k`` when ``out/<name>`` holds other settings.
    """
    if not isinstance(config, RunConfig):
        config = load_config(config)
    t0 = time.perf_counter()
    run_dir = prepare_run_dir(config, out, force_new=force_new)
    if config.checkpoints is not None or config.source is not None:
        source = checkpoint_source(config, out)
    else:
        source = train(config, out, progress, force_new=force_new)
    sweep(source, config, out, progress, force_new=force_new)
    t1 = time.perf_counter()
    detect(run_dir, config)
    t2 = time.perf_counter()
    results = load_results(run_dir)
    render_report(results, run_dir / "report.html", config)
    t3 = time.perf_counter()
    update_manifest(run_dir, timings={"detect_seconds": round(t2 - t1, 2), "report_seconds": round(t3 - t2, 2),
                                      "run_seconds": round(t3 - t0, 2)}, status="complete")
    return load_results(run_dir)
