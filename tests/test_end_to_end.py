"""The whole chain once, on a real tiny run: CLI run -> checkpoints, metrics, stages, report."""

import pytest
import yaml

from devinterp import load_results
from devinterp.cli import main
from devinterp.tables import STAGE_COLUMNS


@pytest.mark.slow
def test_cli_run_produces_every_artifact(tmp_path, tiny_config):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    assert main(["-q", "run", str(cfg_path), "--out", str(tmp_path / "out")]) == 0
    run_dir = tmp_path / "out" / "tiny"
    for name in ("config.yaml", "manifest.json", "llc_settings.json", "stages.csv", "report.html", "checkpoints/index.csv"):
        assert (run_dir / name).is_file(), name
    results = load_results(run_dir)
    metrics = set(results.metrics["metric"])
    assert {"loss", "icl_score", "prev_token", "induction", "duplicate_token", "llc"} <= metrics
    llc = results.series("llc")
    assert len(llc) == results.metrics["step"].nunique() and llc["stderr"].notna().all()
    assert list(results.stages.columns) == STAGE_COLUMNS
    assert len(results.stages) >= 1
    assert results.stages["start_step"].iloc[0] == results.metrics["step"].min()
    assert results.manifest["status"] == "complete"
    # each box reruns alone
    assert main(["-q", "detect", str(run_dir), "--method", "critical"]) == 0
    assert main(["-q", "report", str(run_dir), "--output", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 100_000
