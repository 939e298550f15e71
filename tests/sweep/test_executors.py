"""Every executor gives the same table: in-process, a process pool, a local Ray cluster.

Worker processes import torch and TransformerLens and build the sweep data once each (several
seconds on 2 cores), so these tests are marked slow; the pure function they share,
``measure_checkpoint``, is tested fast here.
"""

from __future__ import annotations

import pandas as pd
import pytest

from devinterp.api import checkpoint_source, sweep
from devinterp.config import ExecutorConfig
from devinterp.manifest import read_manifest
from devinterp.sweep import CheckpointTask, measure_checkpoint
from devinterp.sweep.executors import RAY_DIE_ONCE_ENV, InProcessExecutor, PoolExecutor, make_executor

@pytest.fixture(scope="module")
def setup(cheap_sweep):
    config, reference, _ = cheap_sweep
    return config, reference


def _with_executor(config, **settings):
    return config.model_copy(update={"sweep": config.sweep.model_copy(
        update={"executor": ExecutorConfig(**settings)})})


def test_measure_checkpoint_is_pure_and_isolates_failures(setup, tmp_path):
    config, reference = setup
    source = checkpoint_source(config)
    ckpt = source.checkpoints[3]
    task = CheckpointTask(3, ckpt, tuple(config.sweep.metrics))
    first = measure_checkpoint(source, task, config)
    assert not first.failed and set(first.rows) == set(config.sweep.metrics)
    assert not list(tmp_path.iterdir())  # wrote nothing anywhere we look
    again = measure_checkpoint(source, task, config)
    assert again.rows == first.rows  # same data, same weights, same rows
    expected = reference[(reference["step"] == ckpt.step) & (reference["metric"] == "loss")]["value"]
    assert first.rows["loss"][0]["value"] == expected.iloc[0]
    broken = CheckpointTask(9, type(ckpt)(12345, tmp_path / "nope.safetensors"), ("loss",))
    result = measure_checkpoint(source, broken, config)
    assert result.failed and "file is missing" in result.reason and not result.rows


def test_make_executor_picks_the_configured_kind():
    assert isinstance(make_executor(ExecutorConfig(), None), InProcessExecutor)
    assert isinstance(make_executor(ExecutorConfig(workers=2), None), PoolExecutor)
    mine = InProcessExecutor()
    assert make_executor(mine, None) is mine


@pytest.mark.slow
def test_process_pool_gives_the_same_table(setup, tmp_path):
    config, reference = setup
    config = _with_executor(config, kind="local", workers=2)
    table = sweep(checkpoint_source(config), config, tmp_path, progress=False)
    pd.testing.assert_frame_equal(table, reference, check_exact=True)
    workers = {s["worker"] for s in read_manifest(tmp_path / "tiny")["checkpoints"].values()}
    assert len(workers) == 2


@pytest.mark.slow
def test_ray_gives_the_same_table_and_retries_a_lost_worker(setup, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'devinterp-phases[ray]')")
    config, reference = setup
    marker = tmp_path / "died-once"
    config = _with_executor(config, kind="ray", workers=2, max_retries=2,
                            runtime_env={"env_vars": {RAY_DIE_ONCE_ENV: str(marker)}})
    table = sweep(checkpoint_source(config), config, tmp_path / "out", progress=False)
    assert marker.exists()  # one worker died mid-task ...
    pd.testing.assert_frame_equal(table, reference, check_exact=True)  # ... and its task was retried
    manifest = read_manifest(tmp_path / "out" / "tiny")
    assert {s["status"] for s in manifest["checkpoints"].values()} == {"done"}
    assert manifest["sweep"]["executor"] == "ray"
    import ray

    assert not ray.is_initialized()  # the cluster this sweep started was shut down
