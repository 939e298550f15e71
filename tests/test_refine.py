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
