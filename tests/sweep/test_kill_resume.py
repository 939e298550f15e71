"""A sweep killed with SIGKILL (between files, mid-write, at random moments) resumes into a table
identical to an uninterrupted run, recomputing nothing that had finished.

The sweep runs as a subprocess (``python -m devinterp.cli -q sweep``). To kill it mid-write
deterministically, ``DEVINTERP_TEST_SLOW_WRITE`` makes every metrics write pause between its temp
file and the rename; the test kills the process while a temp file is on disk.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from devinterp.api import checkpoint_source, sweep
from devinterp.manifest import read_manifest
from devinterp.sweep.store import SLOW_WRITE_ENV

@pytest.fixture(scope="module")
def setup(cheap_sweep):
    """(config with the tiny checkpoints, its YAML path, the uninterrupted reference table)."""
    config, reference, root = cheap_sweep
    cfg_path = root / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return config, cfg_path, reference


def _start(cfg_path: Path, out: Path, slow_write: float | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(SLOW_WRITE_ENV, None)
    if slow_write:
        env[SLOW_WRITE_ENV] = str(slow_write)
    return subprocess.Popen([sys.executable, "-m", "devinterp.cli", "-q", "sweep", str(cfg_path), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _kill_mid_write(cfg_path: Path, out: Path, after_files: int, pause: float = 0.3, timeout: float = 120) -> None:
    """Start a sweep and SIGKILL it while a temp file exists and at least ``after_files`` files are done."""
    metrics = out / "tiny" / "metrics"
    proc = _start(cfg_path, out, slow_write=pause)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended before the kill point: {proc.stderr.read().decode()[-2000:]}")
            if metrics.is_dir() and len(list(metrics.glob("*.parquet"))) >= after_files and list(metrics.glob(".*.tmp")):
                _kill(proc)
                return
            time.sleep(0.01)
        pytest.fail("the sweep never reached the kill point")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _files(out: Path) -> dict[str, tuple[int, int]]:
    """Finished metric files -> (inode, mtime_ns): changes if a file is rewritten."""
    return {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in (out / "tiny" / "metrics").glob("*.parquet")}


def _check_resume(config, out: Path, reference: pd.DataFrame, seen: dict) -> None:
    table = sweep(checkpoint_source(config, out), config, out, progress=False)
    pd.testing.assert_frame_equal(table, reference, check_exact=True)
    now = _files(out)
    assert {k: now[k] for k in seen} == seen, "a finished file was recomputed"
    assert not list((out / "tiny" / "metrics").glob(".*.tmp")), "leftover temp files were not cleaned"
    statuses = read_manifest(out / "tiny")["checkpoints"]
    assert {s["status"] for s in statuses.values()} == {"done"}


def test_killed_mid_write_resumes_identically(setup, tmp_path):
    config, cfg_path, reference = setup
    out = tmp_path / "out"
    _kill_mid_write(cfg_path, out, after_files=4)
    temps = list((out / "tiny" / "metrics").glob(".*.tmp"))
    assert len(temps) == 1  # killed between the temp file and its rename
    seen = _files(out)
    assert 4 <= len(seen) < len(reference.groupby(["step", "metric"]))
    # a reader never sees the half-made file
    assert len(pd.concat([pd.read_parquet(out / "tiny" / "metrics" / f) for f in seen])) < len(reference)
    _check_resume(config, out, reference, seen)


@pytest.mark.slow
def test_killed_again_and_again_at_several_moments_resumes_identically(setup, tmp_path):
    config, cfg_path, reference = setup
    out = tmp_path / "out"
    seen: dict = {}

    def remember():
        for name, stamp in _files(out).items():
            assert seen.setdefault(name, stamp) == stamp, f"{name} was recomputed"

    _kill_mid_write(cfg_path, out, after_files=0)  # in the very first write
    remember()
    _kill_mid_write(cfg_path, out, after_files=len(seen) + 6)  # mid-write, later in the sweep
    remember()
    rng = random.Random(20261126)
    for _ in range(3):  # random moments: start-up, data building, between or inside writes
        proc = _start(cfg_path, out, slow_write=0.05)
        time.sleep(rng.uniform(0.5, 6.0))
        if proc.poll() is None:
            _kill(proc)
        remember()
    _check_resume(config, out, reference, seen)
