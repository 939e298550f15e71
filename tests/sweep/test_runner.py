"""The sweep on a real tiny run: table contract, resume, failure isolation."""

import shutil

import pandas as pd
import pytest

from devinterp.api import checkpoint_source, sweep
from devinterp.checkpoints import DirectorySource
from devinterp.tables import METRIC_COLUMNS


@pytest.fixture
def cheap(tiny_run):
    config, out = tiny_run
    return config.model_copy(update={"sweep": config.sweep.model_copy(update={"metrics": ["loss", "icl_score", "heads"]})})


def test_sweep_writes_the_long_table_and_resumes(tiny_run, cheap, tmp_path):
    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    config = cheap.model_copy(update={"checkpoints": tmp_path / "ck"})
    table = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    assert list(table.columns[: len(METRIC_COLUMNS)]) == METRIC_COLUMNS
    n_ckpt = len(DirectorySource(tmp_path / "ck"))
    heads = config.recipe.model.n_layers * config.recipe.model.n_heads
    assert len(table) == n_ckpt * (2 + 3 * heads)
    assert table["checkpoint"].max() == n_ckpt - 1
    files = sorted((tmp_path / "tiny" / "metrics").glob("*.parquet"))
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()  # as if killed before this one was written
    again = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, table)
    assert all(f.stat().st_mtime_ns == m for f, m in mtimes.items() if f != files[0])  # nothing else redone


def test_bad_checkpoint_is_recorded_and_the_rest_go_on(tiny_run, cheap, tmp_path):
    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    victim = sorted((tmp_path / "ck").glob("*.safetensors"))[2]
    victim.write_bytes(b"not a checkpoint")
    config = cheap.model_copy(update={"checkpoints": tmp_path / "ck"})
    table = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    from devinterp.manifest import read_manifest

    statuses = read_manifest(tmp_path / "tiny")["checkpoints"]
    bad_step = victim.stem
    assert statuses[bad_step]["status"] == "failed" and victim.name in statuses[bad_step]["reason"]
    assert int(bad_step) not in set(table["step"])
    assert table["step"].nunique() == len(statuses) - 1


def test_other_settings_in_same_folder_are_refused(tiny_run, cheap, tmp_path):
    from devinterp.api import RunDirError, prepare_run_dir

    prepare_run_dir(cheap, tmp_path)
    changed = cheap.model_copy(update={"sweep": cheap.sweep.model_copy(update={"eval_sequences": 7})})
    with pytest.raises(RunDirError, match="--force-new"):
        prepare_run_dir(changed, tmp_path)
    assert prepare_run_dir(changed, tmp_path, force_new=True).name == "tiny-2"
