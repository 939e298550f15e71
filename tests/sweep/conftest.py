"""Sweep-test fixtures: the tiny run's checkpoints in a folder of their own, measured once."""

from __future__ import annotations

import shutil

import pytest

from devinterp.api import checkpoint_source, sweep

CHEAP_METRICS = ["loss", "icl_score", "heads"]


@pytest.fixture(scope="module")
def cheap_sweep(tiny_run, tmp_path_factory):
    """(config reading a copy of the tiny checkpoints with the cheap metrics, its uninterrupted
    in-process table, the module's scratch folder)."""
    config, out = tiny_run
    root = tmp_path_factory.mktemp("sweep")
    shutil.copytree(out / "tiny" / "checkpoints", root / "ck")
    config = config.model_copy(update={"checkpoints": root / "ck",
                                       "sweep": config.sweep.model_copy(update={"metrics": CHEAP_METRICS})})
    reference = sweep(checkpoint_source(config, root / "ref"), config, root / "ref", progress=False)
    return config, reference, root
