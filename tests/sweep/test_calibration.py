"""`sweep.calibrate: auto`: SGLD settings chosen once at first/middle/last checkpoints, then frozen."""

import json

import pytest

from devinterp.api import sweep
from devinterp.config import LLCSettings


@pytest.mark.slow
def test_auto_calibration_is_chosen_once_and_frozen(tiny_run, tmp_path):
    config, out = tiny_run
    llc = config.sweep.llc.model_copy(update={"chains": 4, "draws": 40, "burnin": 20})
    config = config.model_copy(update={
        "checkpoints": out / "tiny" / "checkpoints",
        "sweep": config.sweep.model_copy(update={"calibrate": "auto", "metrics": ["llc"], "llc": llc}),
    })
    from devinterp.api import checkpoint_source

    source = checkpoint_source(config, tmp_path)
    table = sweep(source, config, tmp_path, progress=False)
    path = tmp_path / "tiny" / "llc_settings.json"
    saved = json.loads(path.read_text())
    frozen = LLCSettings.model_validate(saved["settings"])
    probed = saved["probed_steps"]
    steps = source.steps  # tiny run: [0, 1, 3, 12, 40, 80, 120]; middle by index 12, by step 40 (nearest 60)
    assert probed == [steps[0], steps[len(steps) // 2], min(steps, key=lambda s: abs(s - (steps[0] + steps[-1]) / 2)),
                      steps[-1]]
    # the chosen epsilon was tried at every probed model and passed there
    passing = [r for r in saved["calibration"] if r.get("epsilon") == frozen.epsilon and r.get("gamma") == frozen.gamma]
    full_runs = [r for r in passing if not str(r.get("reasons", "")).startswith("screened")]
    assert len(full_runs) == len(probed), saved["choice"]
    assert frozen.chains == 4 and frozen.draws == 40  # the rest as configured
    assert table[table["metric"] == "llc"]["step"].nunique() == len(source.steps)

    # a resumed sweep reads the frozen settings back instead of calibrating again
    before = path.stat().st_mtime_ns
    next((tmp_path / "tiny" / "metrics").glob("*__llc.parquet")).unlink()
    again = sweep(source, config, tmp_path, progress=False)
    assert path.stat().st_mtime_ns == before
    assert len(again) == len(table)
