"""The Dash app's functions: run listing, saved vs re-detected stages, clicking a stage, serving locally."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("dash", reason="the dashboard needs the optional 'dash' package")

from devinterp.report import app as A  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory, synthetic):
    root = tmp_path_factory.mktemp("runs")
    for name in ("alpha", "beta"):
        d = root / name
        d.mkdir()
        synthetic.metrics.assign(run=name).to_csv(d / "metrics.csv", index=False)
        synthetic.stages.assign(run=name).to_csv(d / "stages.csv", index=False)
        (d / "manifest.json").write_text(json.dumps({"run": name}))
    (root / "not-a-run").mkdir()
    return root


def test_run_names_lists_folders_with_metrics(root, tmp_path):
    assert A.run_names(root) == ["alpha", "beta"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        A.run_names(tmp_path / "missing")


def test_saved_stages_come_from_stages_csv(root, synthetic):
    stages, notes = A.stages_for(A.load_run(root, "alpha"), A.SAVED)
    assert list(stages["start_step"]) == list(synthetic.stages["start_step"]) and notes == []


def test_redetection_passes_method_and_penalty_to_detect_stages(root, monkeypatch):
    import devinterp.transitions as T

    calls = []

    def fake(metrics, **settings):
        calls.append((len(metrics), settings))
        return pd.DataFrame({"stage": [1], "start_step": [0], "end_step": [10], "type": ["A"], "heads": ["L0H1"]})

    monkeypatch.setattr(T, "detect_stages", fake)
    results = A.load_run(root, "alpha")
    stages, _ = A.stages_for(results, A.DETECT, method="changepoint", penalty=4.5, bootstrap=3)
    assert calls == [(len(results.metrics), {"method": "changepoint", "penalty": 4.5, "bootstrap": 3, "smoother": None})]
    assert list(stages["heads"]) == ["L0H1"]
    # a refined run: the smoother refine froze (fitted with the default axis and kernel) is passed on
    import dataclasses

    frozen = {"alpha": {"axis": "log_step", "offset": 1.0, "kernel": "matern52", "length": 1.0}}
    refined = dataclasses.replace(results, manifest={  # a copy: load_run's cached Results stay as they are
        **results.manifest, "smoother": {"runs": frozen, "settings": {"axis": "auto", "kernel": "matern52"}}})
    A.stages_for(refined, A.DETECT)
    assert calls[-1][1]["smoother"] == frozen and "smoother" not in A.load_run(root, "alpha").manifest


def test_redetection_errors_become_notes(root):
    stages, notes = A.stages_for(A.load_run(root, "alpha"), A.DETECT, method="nope")
    assert stages.empty and len(notes) == 1 and "detection failed" in notes[0] and "nope" in notes[0]


@pytest.mark.slow
def test_redetection_with_the_real_detector(root):
    with pytest.warns(UserWarning, match="unhealthy"):
        stages, notes = A.stages_for(A.load_run(root, "alpha"), A.DETECT, method="critical")
    assert len(stages) >= 1 and set(stages["type"]) <= {"A", "B", "-"}
    assert stages["start_step"].iloc[0] == 0


def test_penalty_box():
    assert A.parse_penalty("") == "bic" and A.parse_penalty(" bic ") == "bic" and A.parse_penalty("2.5") == 2.5
    for bad in ("-1", "0", "many"):
        with pytest.raises(ValueError, match="penalty"):
            A.parse_penalty(bad)


def test_stage_at_and_heads_of_the_clicked_stage(root, synthetic):
    stages = synthetic.stages
    second = stages.iloc[1]
    assert A.stage_at(stages, (second.start_step + second.end_step) / 2)["stage"] == 2
    assert A.stage_at(stages, second.start_step)["stage"] == 2  # a shared boundary opens the later stage
    assert A.stage_at(stages, 10**9) is None and A.stage_at(stages, None) is None
    fig, text = A.heads_view(A.load_run(root, "alpha"), stages, A.stage_at(stages, second.start_step))
    assert "Stage 2" in text and "L0H4, L0H1" in text
    shown = {t.name for t in fig.data if t.visible is True}
    assert shown == {"L0H4", "L0H1"}


def test_app_serves_its_layout_and_binds_loopback_by_default(root, monkeypatch):
    app = A.create_app(root)
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout").get_data(as_text=True)
    for component in ("run", "compare", "source", "method", "penalty", "overview", "stages-table", "heads"):
        assert f'"id":"{component}"' in layout.replace(" ", "")
    seen = {}
    monkeypatch.setattr(type(app), "run", lambda self, **kw: seen.update(kw))
    monkeypatch.setattr(A, "create_app", lambda r: app)
    A.serve(root)
    assert seen["host"] == "127.0.0.1"
