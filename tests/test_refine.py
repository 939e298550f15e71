"""devinterp refine: exact resume of training, window choice, renumbering, and narrower intervals."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from devinterp.checkpoints import DirectorySource, load_state_dict
from devinterp.refine import RefineError, new_steps_in, refine, refine_windows


def _stages(rows):
    cols = ["stage", "start_step", "boundary_lo", "boundary_hi"]
    return pd.DataFrame(rows, columns=cols)


def test_windows_span_the_interval_to_the_neighbouring_checkpoints_and_merge():
    steps = [0, 10, 20, 30, 40, 50, 60, 100]
    stages = _stages([(1, 0, np.nan, np.nan), (2, 30, 20, 30), (3, 40, 40, 50)])
    # boundary 30 with interval 20..30 -> 10..40; boundary 40 (40..50) -> 30..60; overlapping: merged
    assert refine_windows(stages, steps) == [(10, 60)]
    assert refine_windows(stages, steps, boundaries=[29]) == [(10, 40)]
    # no interval: the boundary's own neighbours; none after the last checkpoint -> the window ends there
    late = _stages([(1, 0, np.nan, np.nan), (2, 100, np.nan, np.nan)])
    assert refine_windows(late, steps) == [(60, 100)]
    assert refine_windows(_stages([(1, 0, 0, 0)]), steps) == []
    with pytest.raises(RefineError, match="single stage"):
        refine_windows(_stages([(1, 0, 0, 0)]), steps, boundaries=[5])


def test_new_steps_are_evenly_spaced_inside_and_skip_existing():
    assert new_steps_in((100, 200), 4, set()) == [120, 140, 160, 180]
    assert new_steps_in((100, 200), 4, {140}) == [120, 160, 180]
    assert new_steps_in((10, 12), 5, set()) == [11]  # only one integer step fits


def test_resume_reproduces_the_original_run_bitwise(tiny_run, tmp_path):
    """Resuming from a saved checkpoint (weights, AdamW state, data stream) must give the very
    checkpoint the uninterrupted run saved later."""
    from devinterp.recipes.induction import resume_induction

    config, out = tiny_run
    shutil.copytree(out / "tiny", tmp_path / "tiny")
    ckpt_dir = tmp_path / "tiny" / "checkpoints"
    index = pd.read_csv(ckpt_dir / "index.csv")
    steps = sorted(index["step"])
    start, target = steps[-3], steps[-1]
    original = load_state_dict(ckpt_dir / f"{target}.safetensors")
    index[index["step"] != target].to_csv(ckpt_dir / "index.csv", index=False)
    (ckpt_dir / f"{target}.safetensors").unlink()
    rows = resume_induction(config, tmp_path / "tiny", start, [target], progress=False)
    assert [r["step"] for r in rows] == [target]
    again = load_state_dict(ckpt_dir / f"{target}.safetensors")
    for name, value in original.items():
        assert torch.equal(value, again[name]), name
    index = pd.read_csv(ckpt_dir / "index.csv")
    assert sorted(index["step"]) == steps and bool(index.set_index("step").loc[target, "refined"])
    with pytest.raises(ValueError, match="no checkpoint at step"):
        resume_induction(config, tmp_path / "tiny", start + 1, [target + 5], progress=False)


def test_refine_refuses_runs_it_cannot_retrain(tiny_run, tmp_path):
    config, out = tiny_run
    with pytest.raises(RefineError, match="config.yaml: missing"):
        refine(tmp_path / "nothing")
    shutil.copytree(out / "tiny", tmp_path / "tiny")
    with pytest.raises(RefineError, match="stages.csv: missing"):
        refine(tmp_path / "tiny")


def test_sweep_renumbers_checkpoints_when_the_source_gains_some(tiny_run, tmp_path):
    """Metrics files store each checkpoint's index in step order; checkpoints added in between (by
    refine) shift later indices, and the next sweep must rewrite them."""
    from devinterp.api import sweep

    config, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    cfg = config.model_copy(update={"checkpoints": tmp_path / "ck",
                                    "sweep": config.sweep.model_copy(update={"metrics": ["loss"]})})
    index = pd.read_csv(tmp_path / "ck" / "index.csv")
    held_back = index.iloc[[2]]
    index.drop(index.index[2]).to_csv(tmp_path / "ck" / "index.csv", index=False)
    first = sweep(DirectorySource(tmp_path / "ck"), cfg, tmp_path, progress=False)
    assert first["checkpoint"].tolist() == list(range(len(index) - 1))
    pd.concat([index.drop(index.index[2]), held_back]).sort_values("step").to_csv(tmp_path / "ck" / "index.csv",
                                                                                  index=False)
    second = sweep(DirectorySource(tmp_path / "ck"), cfg, tmp_path, progress=False).sort_values("step")
    assert second["checkpoint"].tolist() == list(range(len(index)))
    from devinterp.results import load_results

    assert load_results(tmp_path / "tiny").metrics.sort_values("step")["checkpoint"].tolist() == list(range(len(index)))


def test_refine_end_to_end_on_a_tiny_run(tiny_run, tmp_path):
    """The whole command on a real (tiny) run, from a stages table naming one boundary: the window
    around it gets new checkpoints, retrained and then measured with the run's frozen SGLD settings
    (only those are measured), detection and the report rerun, and the manifest records it all.
    (Whether the boundary itself sharpens depends on the run; BENCHMARKS.md has the quickstart.)"""
    import json

    import devinterp
    from devinterp.manifest import read_manifest

    config, out = tiny_run
    run_dir = tmp_path / "tiny"
    devinterp.run(config, tmp_path, progress=False)
    steps = DirectorySource(run_dir / "checkpoints").steps  # [0, 1, 3, 12, 40, 80, 120]
    old_files = {p.name: p.stat().st_mtime_ns for p in (run_dir / "metrics").glob("*.parquet")}
    settings_before = (run_dir / "llc_settings.json").read_text()
    # a boundary at 40 with interval 40..40: the window is 12..80
    pd.DataFrame([{"run": "tiny", "stage": 1, "start_step": 0, "end_step": 40, "type": "A", "boundary_lo": 0,
                   "boundary_hi": 0},
                  {"run": "tiny", "stage": 2, "start_step": 40, "end_step": 120, "type": "B", "boundary_lo": 40,
                   "boundary_hi": 40}]).to_csv(run_dir / "stages.csv", index=False)
    refine(run_dir, points=5, progress=False)

    info = read_manifest(run_dir)["refine"]
    assert info["windows"] == [[12, 80]]
    new = info["new_steps"]
    assert new and all(12 < s < 80 and s not in steps for s in new)
    after = DirectorySource(run_dir / "checkpoints").steps
    assert after == sorted(steps + new)
    metrics = devinterp.load_results(run_dir).metrics
    assert set(metrics["step"]) == set(after)  # every group measured at the new checkpoints
    assert metrics.groupby("step")["metric"].nunique().nunique() == 1
    assert metrics.sort_values("step").drop_duplicates("step")["checkpoint"].tolist() == list(range(len(after)))
    assert (run_dir / "llc_settings.json").read_text() == settings_before  # the frozen settings were reused
    unchanged = {p.name for p in (run_dir / "metrics").glob("*.parquet")
                 if old_files.get(p.name) == p.stat().st_mtime_ns}
    rewritten = set(old_files) - unchanged  # only renumbered files of later checkpoints were rewritten
    assert all(int(name.split("__")[0]) >= 40 for name in rewritten)
    assert pd.read_csv(run_dir / "stages_before_refine.csv")["start_step"].tolist() == [0, 40]
    assert "Refined boundaries" in (run_dir / "report.html").read_text()
    assert json.loads((run_dir / "manifest.json").read_text())["refine"]["points"] == 5


def test_refine_names_the_missing_training_state(tiny_run, tmp_path):
    from devinterp.config import dump_config

    config, out = tiny_run
    shutil.copytree(out / "tiny", tmp_path / "tiny")
    run_dir = tmp_path / "tiny"
    (run_dir / "config.yaml").write_text(dump_config(config))
    pd.DataFrame([{"run": "tiny", "stage": 1, "start_step": 0, "end_step": 40, "type": "A"},
                  {"run": "tiny", "stage": 2, "start_step": 40, "end_step": 120, "type": "B", "boundary_lo": 40,
                   "boundary_hi": 40}]).to_csv(run_dir / "stages.csv", index=False)
    (run_dir / "checkpoints" / "12.train_state.pt").unlink()
    with pytest.raises(RefineError, match=r"12\.train_state\.pt: missing.*resume at step 12$"):
        refine(run_dir, points=3, progress=False)
