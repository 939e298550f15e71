"""The standalone report: self-contained, escaped, robust to missing data, written atomically."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from devinterp.report import render_report
from devinterp.report.html import checkpoint_statuses, script_json
from devinterp.results import Results, load_results
from devinterp.tables import normalize_metrics

EVIL_RUN = "<script>alert(1)</script>"


def _figure_payloads(text: str) -> list[dict]:
    """The figure JSON objects inlined in the report, parsed back."""
    return [json.loads(m) for m in re.findall(r"\(function\(\)\{var f=(\{.*?\});Plotly\.newPlot", text)]


def test_report_is_self_contained_with_plotlyjs_once(tmp_path, hoogland):
    path = render_report(hoogland, tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    text = path.read_text()
    bundle = get_plotlyjs()
    assert text.count(bundle[:300]) == 1 and text.count(bundle[-300:]) == 1
    assert not re.search(r"<script[^>]+src=", text), "no external scripts"
    assert not re.search(r"<link[^>]+href=\"?https?:", text), "no external stylesheets"
    # every figure div has its newPlot call; overview, 2 heatmaps, explorer, diagnostics
    divs = re.findall(r'data-figure="([^"]+)"', text)
    assert divs == ["overview", "heatmap-0", "heatmap-1", "explorer", "diagnostics"]
    assert text.count("Plotly.newPlot(") == len(divs)
    for anchor in ("run", "overview", "heatmaps", "explorer", "stages", "diagnostics"):
        assert f'<section id="{anchor}"' in text
    assert text.count("<script") == text.count("</script>") == 1 + len(divs)
    assert list(tmp_path.iterdir()) == [path]  # atomic write left no temp file


def test_report_figures_round_trip_with_stage_bands(tmp_path, hoogland):
    text = render_report(hoogland, tmp_path / "r.html").read_text()
    overview = _figure_payloads(text)[0]
    rects = [s for s in overview["layout"]["shapes"] if s["type"] == "rect"]
    assert len(rects) == 5
    assert {t.get("name") for t in overview["data"]} >= {"loss", "train_loss", "llc", "icl_score"}


def test_report_stages_table(tmp_path, hoogland):
    text = render_report(hoogland, tmp_path / "r.html").read_text()
    stages = text[text.index('<section id="stages"'):text.index('<section id="diagnostics"')]
    assert stages.count("<tr>") == 1 + 5
    assert stages.count('class="badge"') == 5
    assert '<code class="head">L1H6</code> <code class="head">L1H7</code>' in stages
    assert "93%" in stages and "-1.57 ± 0.5" in stages


def test_names_values_and_reasons_are_escaped_everywhere(tmp_path):
    evil_metric = "<img src=x onerror=alert(3)>"
    df = normalize_metrics(pd.DataFrame({
        "run": EVIL_RUN, "step": [0, 10, 0, 10, 0, 10, 0, 10],
        "metric": ["loss", "loss", "llc", "llc", evil_metric, evil_metric, evil_metric, evil_metric],
        "layer": [None, None, None, None, 0, 0, 1, 1], "head": [None, None, None, None, 0, 0, 0, 0],
        "value": [3.0, 2.0, 10.0, 12.0, 0.1, 0.2, 0.3, 0.4], "healthy": [None, None, True, False] + [None] * 4,
        "reason": [None, None, None, "</script><script>alert(4)</script>"] + [None] * 4}))
    stages = pd.DataFrame({"run": EVIL_RUN, "stage": [1], "start_step": [0], "end_step": [10], "type": ["A"],
                           "heads": ["<b>L0H0</b>"], "method": ["<u>m</u>"]})
    manifest = {"run": EVIL_RUN, "config": {"name": "</script><script>alert(2)</script>", "<k>": "v"},
                "checkpoints": {"10": {"status": "failed", "reason": "<iframe src=evil>"}}}
    text = render_report(Results(df, stages, manifest), tmp_path / "evil.html").read_text()
    for raw in (EVIL_RUN, "<script>alert(2)", "<script>alert(4)", "<img src=x", "<iframe", "<b>L0H0", "<u>m", "<k>"):
        assert raw not in text, raw
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt; · devinterp report</title>" in text
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in text
    assert "&lt;iframe src=evil&gt;" in text  # the failed checkpoint's reason, shown as text
    # only our own script elements: the bundle and one per figure
    assert text.count("<script") == 1 + text.count("Plotly.newPlot(")
    # the figure JSON still carries the (Plotly-escaped) names and parses back
    payloads = _figure_payloads(text)
    heat = next(p for p in payloads if p["data"][0]["type"] == "heatmap")
    assert heat["layout"]["title"]["text"] == "&lt;img src=x onerror=alert(3)&gt; per head"


def test_script_json_cannot_close_a_script_element():
    text = json.dumps({"a": "</script><!-- & \u2028"})
    safe = script_json(text)
    assert "</" not in safe and "<!--" not in safe and "<" not in safe
    assert json.loads(safe) == json.loads(text)


def test_report_marks_unhealthy_estimates_and_failed_checkpoints(tmp_path, synthetic):
    text = render_report(synthetic, tmp_path / "r.html").read_text()
    failed = [s for s, v in synthetic.manifest["checkpoints"].items() if v["status"] == "failed"]
    assert len(failed) == 2
    block = text[text.index('<h4 class="bad">Failed checkpoints</h4>'):]
    block = block[:block.index("</table>")]
    for step in failed:
        assert f"<td>{step}</td><td>checkpoint file truncated (safetensors header)</td>" in block
    assert '<div class="fact-label">Failed checkpoints</div><div class="fact-value">2</div>' in text
    # 2 aggregate + 2 x 4 chains unhealthy llc rows, each with its reason
    assert "Estimates that failed their diagnostics (10)" in text
    assert text.count("loss trace not stationary after burn-in") >= 10
    overview = _figure_payloads(text)[0]
    assert any(t.get("name") == "unhealthy llc" for t in overview["data"])
    # calibration and settings from the manifest
    assert "<h3>Calibration</h3>" in text and "SGLD settings (frozen for the sweep)" in text


def test_report_with_missing_data_still_renders(tmp_path):
    df = normalize_metrics(pd.DataFrame({"run": "bare", "step": [0, 1, 2], "metric": "loss", "value": [3.0, 2.0, 1.0]}))
    text = render_report(Results(df), tmp_path / "bare.html").read_text()
    assert text.count("Plotly.newPlot(") == 1  # the overview only
    assert "Not available: the metrics table has no per-head metrics." in text
    assert "Not available: no stages." in text
    assert "diagnostics need LLC rows" in text
    assert "No configuration in the manifest." in text and "records no checkpoint statuses" in text


def test_report_of_a_run_directory_reads_llc_settings_json(tmp_path, synthetic):
    run_dir = tmp_path / "synthetic"
    run_dir.mkdir()
    synthetic.metrics.to_csv(run_dir / "metrics.csv", index=False)
    synthetic.stages.to_csv(run_dir / "stages.csv", index=False)
    manifest = {k: v for k, v in synthetic.manifest.items() if k != "llc_settings"}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "llc_settings.json").write_text(json.dumps(
        {"settings": {"epsilon": 0.00042}, "calibration": {"epsilon": [1e-4, 4.2e-4], "llc": [90.0, 101.5]}}))
    text = render_report(load_results(run_dir), run_dir / "report.html").read_text()
    assert "0.00042" in text and "<h3>Calibration</h3>" in text and "101.5" in text


def test_report_says_why_the_sgld_settings_were_chosen(tmp_path, synthetic):
    run_dir = tmp_path / "synthetic"
    run_dir.mkdir()
    synthetic.metrics.to_csv(run_dir / "metrics.csv", index=False)
    synthetic.stages.to_csv(run_dir / "stages.csv", index=False)
    (run_dir / "manifest.json").write_text(json.dumps(
        {k: v for k, v in synthetic.manifest.items() if k != "llc_settings"}))
    row = {"gamma": 1.0, "delta": 0.1, "epsilon": 1e-3, "llc": 50.0, "passed": True, "reasons": ""}
    table = [{**row, "model": 0}, {**row, "model": 1},
             {**row, "model": None, "passed": False,
              "reasons": "rejected: chain mean loss 4.3 -> 4.3 nats ...: locality slope -0.02 ± 0.01, significantly below 0.5"},
             {**row, "gamma": 10.0, "delta": 1.0, "epsilon": 1e-2, "model": 1, "passed": False,
              "reasons": "screened: non-finite in a 200-step run"},
             {**row, "gamma": 10.0, "delta": 1.0, "epsilon": 1e-4, "model": 0},
             {**row, "gamma": 10.0, "delta": 1.0, "epsilon": 1e-4, "model": 1}]
    (run_dir / "llc_settings.json").write_text(json.dumps(
        {"settings": {"epsilon": 1e-4, "gamma": 10.0}, "calibration": table,
         "choice": "epsilon=0.0001 (largest of 3 tried ...), gamma=10 (smallest passing)"}))
    text = render_report(load_results(run_dir), run_dir / "report.html").read_text()
    assert "<b>Why these settings</b>: epsilon=0.0001 (largest of 3 tried ...), gamma=10" in text
    assert ("<li>delta 0.1 (gamma 1): 0 screening run(s), 2 full-length run(s); rejected: chains not local "
            "(locality slope -0.02 ± 0.01)</li>") in text
    assert "<li>delta 1 (gamma 10): 1 screening run(s), 2 full-length run(s); chosen, epsilon 0.0001</li>" in text
    assert "every run tried (6 rows)" in text


@pytest.mark.parametrize("raw, expected", [
    ({"checkpoints": {"20": {"status": "failed", "reason": "r"}, "3": {"status": "done"}}},
     [("3", "done", None), ("20", "failed", "r")]),
    ({"checkpoints": {"5": "done"}}, [("5", "done", None)]),
    ({"checkpoints": [{"step": 7, "status": "failed", "reason": "x"}]}, [(7, "failed", "x")]),
    ({}, []), ({"checkpoints": "garbage"}, []),
])
def test_checkpoint_statuses_accepts_the_manifest_shapes(raw, expected):
    frame = checkpoint_statuses(raw)
    got = [tuple(None if pd.isna(v) else v for v in row) for row in frame.itertuples(index=False)]
    assert got == expected


def test_report_package_does_not_import_torch():
    code = ("import sys; import devinterp.report, devinterp.report.synthetic; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_title_and_step_axis_options(tmp_path, hoogland):
    text = render_report(hoogland, tmp_path / "r.html", title="LM <2L>", step_axis="linear").read_text()
    assert "<h1>LM &lt;2L&gt;</h1>" in text and "run hoogland2024-lm" in text
    assert {p["layout"]["xaxis"]["type"] for p in _figure_payloads(text)} == {"linear"}
    with pytest.raises(ValueError, match="step_axis"):
        render_report(hoogland, tmp_path / "bad.html", step_axis="sqrt")
    assert not (tmp_path / "bad.html").exists()


def test_refine_table_pairs_each_window_with_its_boundaries_before_and_after():
    from devinterp.report.html import refine_frame

    assert refine_frame({}) is None
    info = {"windows": [[925, 1150]], "new_steps": [950, 975, 1025],
            "before": [{"start_step": 1075, "boundary_lo": 1000, "boundary_hi": 1075},
                       {"start_step": 1600, "boundary_lo": 1600, "boundary_hi": 1600}],
            "after": [{"start_step": 975, "boundary_lo": 950, "boundary_hi": 975}]}
    frame = refine_frame({"refine": info})
    row = frame.iloc[0]
    assert row["New checkpoints"] == 3
    assert row["Boundary before [interval]"] == "1075 [1000–1075]" and row["Width before"] == "75"
    assert row["Boundary after [interval]"] == "975 [950–975]" and row["Width after"] == "25"
    # the boundary at 1600 lies outside every refined window and is gone after: a row says so
    assert len(frame) == 2
    elsewhere = frame.iloc[1]
    assert elsewhere["Window (steps)"] == "elsewhere (changed)"
    assert elsewhere["Boundary before [interval]"] == "1600" and elsewhere["Boundary after [interval]"] == "none"
    # unchanged outside the windows: no such row
    info["after"].append({"start_step": 1600, "boundary_lo": 1525, "boundary_hi": 1675})
    assert len(refine_frame({"refine": info})) == 1


def test_stages_of_a_run_whose_llc_is_not_local_carry_a_warning(tmp_path):
    """Chains on a shared loss plateau (LLC = nbeta x (plateau - L_n(w*)): slope 0 by construction) get
    a warning above the stages and a 'fails' card; chains that follow w* get neither."""
    import numpy as np

    from devinterp.transitions import detect_stages

    steps = np.unique(np.round(np.geomspace(1, 3000, 30)).astype(int))
    init = 4.2 - 1.0 / (1 + np.exp(-(np.log(steps) - 6.5) * 3))
    nbeta = 1000.0

    def report(llc, name):
        m = normalize_metrics(pd.DataFrame([
            dict(run="r", step=int(s), checkpoint=i, metric=metric, value=float(v), stderr=1.0, healthy=True,
                 init_loss=float(L), nbeta=nbeta)
            for i, (s, v, L) in enumerate(zip(steps, llc, init))
            for metric, v in (("llc", v), ("loss", L))]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            stages = detect_stages(m, bootstrap=0)
        return render_report(Results(m, stages=stages), tmp_path / f"{name}.html").read_text()

    forgot = report(nbeta * (4.37 - init), "forgot")
    assert "The LLC of this run is not a local measurement" in forgot
    assert forgot.index("not a local measurement") < forgot.index('class="data stages"')
    assert '<div class="fact warn"><div class="fact-label">LLC locality</div><div class="fact-value">fails' in forgot
    local = report(50 + 100 * (4.2 - init), "local")
    assert "not a local measurement" not in local
    assert '<div class="fact"><div class="fact-label">LLC locality</div><div class="fact-value">ok' in local
