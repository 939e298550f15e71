"""Figures built from tables: the traces, stage bands, axes and escaping they must have."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from devinterp.report import figures as F
from devinterp.tables import normalize_metrics

from conftest import HOOGLAND_BOUNDARIES, HOOGLAND_TYPES


def _rects(fig):
    return [s for s in fig.layout.shapes if s.type == "rect"]


def _names(fig):
    return [t.name for t in fig.data]


def test_overview_has_the_panels_traces_and_one_band_per_stage(hoogland_metrics, hoogland_stages):
    fig = F.overview_figure(hoogland_metrics, hoogland_stages)
    names = _names(fig)
    for metric in ("loss", "train_loss", "llc", "icl_score"):
        assert names.count(metric) == 1, names
    # the released table has no stderr, so the band is the across-chain sd, labelled as such
    assert "LLC ± sd across chains" in names and "LLC ± stderr" not in names
    rects = _rects(fig)
    assert len(rects) == len(hoogland_stages) == 5
    assert [s.name for s in rects] == [f"stage {i}" for i in range(1, 6)]
    assert [s.x1 for s in rects] == HOOGLAND_BOUNDARIES[1:]
    # stage 1 starts at step 0, drawn from the first positive step (100) to stay finite on the log axis
    assert [s.x0 for s in rects] == [100] + HOOGLAND_BOUNDARIES[1:-1]
    assert [s.fillcolor for s in rects] == [F.STAGE_COLORS[t] for t in HOOGLAND_TYPES]
    assert all(s.yref == "paper" and s.y0 == 0 and s.y1 == 1 for s in rects)  # spans every panel
    # one legend entry per stage type present
    assert sorted(t.name for t in fig.data if t.meta == "stage-type") == sorted(F.STAGE_LABELS[k] for k in "AB-")


def test_overview_panels_share_one_x_axis_with_linked_hover(hoogland_metrics, hoogland_stages):
    fig = F.overview_figure(hoogland_metrics, hoogland_stages)
    assert {t.xaxis or "x" for t in fig.data} == {"x"}
    panel_of = {t.name: (t.yaxis or "y") for t in fig.data if t.name in ("loss", "train_loss", "llc", "icl_score")}
    assert panel_of == {"loss": "y", "train_loss": "y", "llc": "y2", "icl_score": "y3"}
    assert fig.layout.hovermode == "x unified" and fig.layout.hoversubplots == "axis"
    assert fig.layout.xaxis.showspikes is True
    domains = [fig.layout.yaxis.domain, fig.layout.yaxis2.domain, fig.layout.yaxis3.domain]
    assert all(a[0] > b[1] for a, b in zip(domains, domains[1:]))  # stacked, not overlapping


def test_step_axis_toggle_and_auto_log(hoogland_metrics, hoogland_stages):
    fig = F.overview_figure(hoogland_metrics, hoogland_stages)  # steps 100…50000 span > 2 decades
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.xaxis.range == pytest.approx((2.0, np.log10(50_000)))
    menu = next(m for m in fig.layout.updatemenus if m.name == "step axis")
    assert [b.label for b in menu.buttons] == ["Linear steps", "Log steps"] and menu.active == 1
    assert menu.buttons[0].args[0]["xaxis.type"] == "linear" and menu.buttons[1].args[0]["xaxis.type"] == "log"
    assert fig.layout.xaxis.dtick == 1 and menu.buttons[0].args[0]["xaxis.dtick"] is None  # decades only on log
    # on the log axis the step-0 train_loss (8.97, off the axis) does not stretch the loss panel
    assert fig.layout.yaxis.range[1] < 5.3
    assert menu.buttons[0].args[0]["yaxis.autorange"] is True and "yaxis.range" in menu.buttons[1].args[0]
    linear = F.overview_figure(hoogland_metrics, hoogland_stages, step_axis="linear")
    assert linear.layout.xaxis.type == "linear"
    # labels sit mid-band: arithmetic mean on a linear axis
    assert linear.layout.annotations[1].x == pytest.approx((900 + 6500) / 2)
    with pytest.raises(ValueError, match="step_axis"):
        F.overview_figure(hoogland_metrics, step_axis="sqrt")


def test_llc_band_is_plus_minus_stderr_and_unhealthy_estimates_are_marked(synthetic):
    m = synthetic.metrics
    fig = F.overview_figure(m, synthetic.stages)
    llc = F.model_series(m, "llc")
    lower = next(t for t in fig.data if t.name == "LLC ± stderr")
    upper = next(t for t in fig.data if t.name == "LLC ± stderr (upper)")
    se = llc["stderr"].astype(float).to_numpy()
    assert np.allclose(np.asarray(upper.y), llc["value"].to_numpy() + se)
    assert np.allclose(np.asarray(lower.y), llc["value"].to_numpy() - se)
    bad = next(t for t in fig.data if t.name == "unhealthy llc")
    expected = llc.loc[llc["healthy"] == False, "step"].tolist()  # noqa: E712
    assert list(bad.x) == expected and len(expected) == 2
    assert all("not stationary" in text for text in bad.hovertext)


def test_overview_without_any_panel_metric_names_what_is_missing(hoogland_metrics):
    heads_only = hoogland_metrics[hoogland_metrics["metric"] == "induction"]
    with pytest.raises(F.MissingData, match="loss, train_loss, llc, icl_score"):
        F.overview_figure(heads_only)


def test_heatmap_rows_are_heads_and_values_come_from_the_table(hoogland_metrics, hoogland_stages):
    fig = F.head_heatmap_figure(hoogland_metrics, "induction", hoogland_stages)
    (hm,) = fig.data
    assert list(hm.y) == [f"L{l}H{h}" for l in range(2) for h in range(8)]
    z = np.asarray(hm.z)
    assert z.shape == (16, 501)
    rows = hoogland_metrics[(hoogland_metrics["metric"] == "induction") & (hoogland_metrics["layer"] == 1)
                            & (hoogland_metrics["head"] == 7)].sort_values("step")
    assert np.allclose(z[15], rows["value"].to_numpy())
    assert list(np.asarray(hm.customdata)[0][:3]) == [0, 100, 200]  # hover shows the real steps
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert [s.x0 for s in lines] == HOOGLAND_BOUNDARIES[1:-1]  # inner boundaries only
    assert fig.layout.yaxis.autorange == "reversed"  # L0H0 on top


def test_heatmap_of_a_metric_without_head_rows_raises(hoogland_metrics):
    with pytest.raises(F.MissingData, match="'loss'"):
        F.head_heatmap_figure(hoogland_metrics, "loss")


def test_head_explorer_dropdown_switches_metric_and_starts_with_attributed_heads(hoogland_metrics, hoogland_stages):
    fig = F.head_explorer_figure(hoogland_metrics, hoogland_stages)
    heads = [t for t in fig.data if t.meta in ("induction", "prev_token")]
    assert len(heads) == 32
    menu = next(m for m in fig.layout.updatemenus if m.name == "metric")
    assert [b.label for b in menu.buttons] == ["induction", "prev_token"]
    vis = menu.buttons[1]["args"][0]["visible"]
    for trace, v in zip(fig.data, vis):
        if trace.meta == "induction":
            assert v is False
        elif trace.meta == "prev_token":
            assert v in (True, "legendonly")
    shown_prev = {t.name for t, v in zip(fig.data, vis) if t.meta == "prev_token" and v is True}
    assert {"L0H1", "L0H4", "L1H6", "L1H7"} <= shown_prev  # named by the stages table
    first = {t.name for t in fig.data if t.meta == "induction" and t.visible is True}
    assert {"L1H6", "L1H7"} <= first
    assert len(_rects(fig)) == 5


def test_head_explorer_highlight_and_missing(hoogland_metrics):
    fig = F.head_explorer_figure(hoogland_metrics, metric_names=["prev_token"], highlight=["L0H1"])
    assert [t.name for t in fig.data if t.visible is True] == ["L0H1"]
    with pytest.raises(F.MissingData, match="per-head"):
        F.head_explorer_figure(hoogland_metrics[hoogland_metrics["layer"].isna()])


def test_stage_rows_and_table_figure(hoogland_stages):
    rows = F.stage_rows(hoogland_stages)
    assert list(rows["Type"]) == HOOGLAND_TYPES
    assert rows.loc[2, "Steps"] == "6500 → 8500"
    assert rows.loc[2, "Δ LLC (± se)"] == "-1.57 ± 0.5"
    assert rows.loc[3, "Confidence"] == "93%" and rows.loc[3, "Heads"] == "L1H6,L1H7"
    assert rows.loc[0, "Heads"] == "–"
    fig = F.stages_table_figure(hoogland_stages)
    (table,) = fig.data
    type_col = F.STAGE_TABLE_COLUMNS.index("Type")
    assert list(table.cells.fill.color[type_col]) == [F.STAGE_COLORS[t] for t in HOOGLAND_TYPES]
    with pytest.raises(F.MissingData, match="no stages"):
        F.stages_table_figure(hoogland_stages.iloc[0:0])


def test_stage_rows_tolerates_minimal_tables():
    rows = F.stage_rows(pd.DataFrame({"start_step": [0, 10], "end_step": [10, 20], "type": ["B", None]}))
    assert list(rows["Stage"]) == ["1", "2"] and list(rows["Type"]) == ["B", "-"]
    assert rows.loc[0, "Confidence"] == "–"


def test_diagnostics_shows_every_chain_and_the_health_of_each_flagged_metric(synthetic):
    fig = F.diagnostics_figure(synthetic.metrics, synthetic.stages)
    names = _names(fig)
    assert [n for n in names if n.startswith("chain ")] == [f"chain {c}" for c in range(4)]
    assert "llc" in names and "unhealthy llc" in names
    health = {t.name: t for t in fig.data if t.name.startswith("health ")}
    assert set(health) == {"health llc", "health head_llc"}
    colors = list(health["health llc"].marker.color)
    assert colors.count(F.UNHEALTHY_COLOR) == 2 and colors.count(F.HEALTHY_COLOR) == len(colors) - 2
    assert set(health["health head_llc"].marker.color) == {F.HEALTHY_COLOR}
    assert len(_rects(fig)) == len(synthetic.stages)


def test_diagnostics_without_chains_or_flags(hoogland_metrics):
    fig = F.diagnostics_figure(hoogland_metrics)
    assert _names(fig) == ["llc"]
    assert "yaxis2" not in fig.layout.to_plotly_json()  # no health strip without flags
    with pytest.raises(F.MissingData, match="'llc'"):
        F.diagnostics_figure(hoogland_metrics[hoogland_metrics["metric"] != "llc"])


@pytest.mark.parametrize("calibration, shape", [
    ([{"epsilon": 1e-4, "llc": 10.0}, {"epsilon": 1e-3, "llc": 12.0}], (2, 2)),
    ({"epsilon": [1e-4, 1e-3, 1e-2], "llc": [1, 2, 3]}, (3, 2)),
    ({"epsilon": 1e-4, "chosen": True}, (2, 2)),
])
def test_calibration_frame_accepts_the_usual_shapes(calibration, shape):
    assert F.calibration_frame(calibration).shape == shape
    assert F.calibration_table_figure(calibration).data[0].type == "table"


@pytest.mark.parametrize("calibration", [None, [], {}, "n/a", [1, 2]])
def test_calibration_frame_rejects_non_tables(calibration):
    assert F.calibration_frame(calibration) is None
    with pytest.raises(F.MissingData, match="calibration"):
        F.calibration_table_figure(calibration)


def test_text_from_the_data_is_escaped_in_figures():
    evil = "<b>x</b>"
    df = normalize_metrics(pd.DataFrame({
        "run": "r", "step": [0, 1, 0, 1], "metric": [evil] * 4, "layer": [0, 0, 1, 1], "head": [0, 0, 0, 0],
        "value": [0.1, 0.2, 0.3, 0.4]}))
    fig = F.head_heatmap_figure(df, evil)
    assert fig.layout.title.text == "&lt;b&gt;x&lt;/b&gt; per head"
    assert fig.data[0].name == "&lt;b&gt;x&lt;/b&gt;" and evil not in fig.data[0].hovertemplate
    stages = pd.DataFrame({"start_step": [0], "end_step": [1], "type": ["A"], "heads": ["<i>L0H0</i>"]})
    table = F.stages_table_figure(stages).data[0]
    assert "&lt;i&gt;L0H0&lt;/i&gt;" in list(table.cells.values[F.STAGE_TABLE_COLUMNS.index("Heads")])


def test_essential_dynamics_figure_marks_the_planted_turn():
    """A sweep's token_loss rows whose latent path turns by 90° at checkpoint 30: the figure's
    turning-point trace sits there (±1 checkpoint); without token_loss rows it reports MissingData."""
    rng = np.random.default_rng(0)
    T, P, t0 = 80, 120, 30
    t = np.arange(T, dtype=float)
    latent = np.column_stack([t, np.zeros(T)]) + np.maximum(t - t0, 0)[:, None] * np.array([-1.0, 1.0])
    F_ = latent @ rng.normal(size=(2, P)) + rng.normal(0, 0.5, (T, P))
    steps = 10 * np.arange(T)
    rows = [dict(run="r", step=int(steps[i]), checkpoint=i, metric="token_loss", value=float(F_[i, j]), token=j)
            for i in range(T) for j in range(P)]
    metrics = normalize_metrics(pd.DataFrame(rows))
    fig = F.essential_dynamics_figure(metrics)
    turning = [tr for tr in fig.data if tr.name == "turning points"]
    assert len(turning) == 1 and len(turning[0].text) == 1
    assert abs(int(turning[0].text[0].replace(",", "")) - steps[t0]) <= 10
    assert {tr.name for tr in fig.data} >= {"checkpoints", "smoothed", "turning points"}
    with pytest.raises(F.MissingData, match="token_loss"):
        F.essential_dynamics_figure(metrics[metrics["metric"] != "token_loss"].assign(metric="loss"))
    assert "essential-dynamics" in [s.key for s in F.report_figures(metrics)]
