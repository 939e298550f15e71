"""The Dash app (``devinterp serve out/``): browse runs, compare two, re-run detection live.

Figures come from :mod:`devinterp.report.figures` (the same functions as the HTML report). The
app lists the run directories under a root folder, shows a run's overview (and a second run's, to
compare), re-runs :func:`devinterp.transitions.detect_stages` with the chosen method and penalty, and,
when a point of the overview is clicked, shows the heads of the stage that holds that step.

The callbacks are thin wrappers of the plain functions below (``run_names``, ``load_run``,
``stages_for``, ``stage_at``, ``heads_view``), which the tests call directly. Dash is an optional
dependency: importing this module without it raises ImportError naming the package to install.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from devinterp.report import figures as F
from devinterp.results import Results, load_results
from devinterp.tables import STAGE_COLUMNS

log = logging.getLogger(__name__)

METHODS = ("critical", "changepoint", "consensus")
SAVED = "saved"
DETECT = "detect"


# ---------------------------------------------------------------------------------------------------
# Plain functions (what the callbacks do)


def run_names(root: str | Path) -> list[str]:
    """Names of the run directories under ``root``: folders with ``metrics/*.parquet`` or ``metrics.csv``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of runs")
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (any((p / "metrics").glob("*.parquet")) or (p / "metrics.csv").is_file()))


def _mtime(path: Path) -> float:
    stamps = [path.stat().st_mtime]
    for name in ("metrics", "metrics.csv", "stages.csv", "manifest.json"):
        if (path / name).exists():
            stamps.append((path / name).stat().st_mtime)
    return max(stamps)


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime: float) -> Results:
    return load_results(path)


def load_run(root: str | Path, name: str) -> Results:
    """:func:`load_results` of ``root/name``, cached until the folder's files change."""
    path = Path(root) / name
    return _load_cached(str(path), _mtime(path))


def parse_penalty(text: str | float | None) -> str | float:
    """The penalty box's value: ``"bic"`` (also for an empty box) or a positive number.

    Raises ValueError naming the text when it is neither.
    """
    if text is None or str(text).strip() in ("", "bic"):
        return "bic"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"penalty must be 'bic' or a positive number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"penalty must be 'bic' or a positive number, got {text!r}")
    return value


def stages_for(results: Results, source: str = SAVED, *, method: str = "critical", penalty: str | float = "bic",
               bootstrap: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """The stages to show and notes about them.

    ``source="saved"`` gives the run's stages.csv; ``source="detect"`` re-runs
    ``detect_stages(metrics, method=..., penalty=..., bootstrap=...)`` on the run's metrics table
    (with the smoother ``devinterp refine`` froze, for a refined run).
    Detection errors (a bad setting, an unusable table) and a missing detector come back as an empty
    table and a note saying why, so the app shows the message instead of failing.
    """
    if source == SAVED:
        stages = results.stages if results.stages is not None else pd.DataFrame(columns=STAGE_COLUMNS)
        return stages, ([] if len(stages) else ["no saved stages (stages.csv): run `devinterp detect` or re-detect here"])
    if source != DETECT:
        raise ValueError(f"source must be {SAVED!r} or {DETECT!r}, got {source!r}")
    try:
        from devinterp.transitions import detect_stages
    except ImportError as err:
        return pd.DataFrame(columns=STAGE_COLUMNS), [f"stage detection is unavailable: {err}"]
    from devinterp.config import DetectConfig
    from devinterp.refine import frozen_smoother

    settings = {"method": method, "penalty": penalty, "bootstrap": int(bootstrap)}
    smoother = frozen_smoother(results.manifest, {**DetectConfig().model_dump(), **settings},  # a refined run's
                               results.metrics["step"])
    try:
        stages = detect_stages(results.metrics, smoother=smoother, **settings)
    except Exception as err:  # noqa: BLE001 - any detector error is shown to the user, not raised in the server
        log.warning("detect_stages failed: %s", err)
        return pd.DataFrame(columns=STAGE_COLUMNS), [f"detection failed: {type(err).__name__}: {err}"]
    return stages, list(stages.attrs.get("notes", []))


def stage_at(stages: pd.DataFrame, step: float) -> dict | None:
    """The stage row (as a dict) whose [start_step, end_step] holds ``step``; the later one on a
    shared boundary; None when no stage holds it."""
    if stages is None or len(stages) == 0 or step is None:
        return None
    rows = stages[(stages["start_step"] <= step) & (stages["end_step"] >= step)]
    if rows.empty:
        return None
    return rows.sort_values("start_step").iloc[-1].to_dict()


def heads_view(results: Results, stages: pd.DataFrame, stage: dict | None) -> tuple[go.Figure | None, str]:
    """The head explorer highlighting a stage's heads, and a line of text naming them.

    Without a stage: the explorer with its default heads. A run without per-head metrics gives no figure.
    """
    heads = [h.strip() for h in str(stage.get("heads") or "").split(",") if h.strip()] if stage else []
    if stage:
        text = (f"Stage {int(stage['stage'])} (type {stage.get('type', '-')}, steps {stage['start_step']:g}"
                f"–{stage['end_step']:g}): " + (", ".join(heads) if heads else "no heads attributed"))
    else:
        text = "Click a point of the overview to show the heads of the stage at that step."
    try:
        fig = F.head_explorer_figure(results.metrics, stages, highlight=heads or None)
    except F.MissingData as err:
        return None, f"{text} ({err})"
    return fig, text


def _empty(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=F.esc(message), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 14, "color": "#777"})
    fig.update_layout(template=F.TEMPLATE, height=200, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def overview_or_note(results: Results | None, stages: pd.DataFrame | None, title: str) -> go.Figure:
    if results is None:
        return _empty("choose a run")
    try:
        return F.overview_figure(results.metrics, stages, title=title)
    except F.MissingData as err:
        return _empty(str(err))


# ---------------------------------------------------------------------------------------------------
# The app


def create_app(root: str | Path) -> Any:
    """A Dash app over the runs in ``root`` (see the module docstring). Raises ImportError naming
    ``dash`` when it is not installed, FileNotFoundError when ``root`` is not a folder."""
    try:
        import dash
        from dash import Input, Output, State, dcc, html
    except ImportError as err:
        raise ImportError("the dashboard needs the 'dash' package: pip install 'devinterp-phases[app]'") from err

    root = Path(root)
    names = run_names(root)
    app = dash.Dash(__name__, title="devinterp", serve_locally=True)
    options = [{"label": n, "value": n} for n in names]
    label = {"fontSize": "12px", "color": "#6b7280", "display": "block", "marginBottom": "2px"}
    box = {"display": "inline-block", "marginRight": "18px", "verticalAlign": "top"}
    app.layout = html.Div(style={"fontFamily": F.FONT, "maxWidth": "1240px", "margin": "0 auto", "padding": "16px"},
                          children=[
        html.H2("devinterp · developmental stages"),
        html.Div(f"{len(names)} run(s) in {root}", style={"color": "#6b7280"}),
        html.Div(style={"margin": "14px 0"}, children=[
            html.Div(style={**box, "width": "260px"}, children=[
                html.Label("Run", style=label),
                dcc.Dropdown(id="run", options=options, value=names[0] if names else None, clearable=False)]),
            html.Div(style={**box, "width": "260px"}, children=[
                html.Label("Compare with", style=label),
                dcc.Dropdown(id="compare", options=options, value=None, placeholder="(none)")]),
            html.Div(style=box, children=[
                html.Label("Stages", style=label),
                dcc.RadioItems(id="source", value=SAVED, inline=True, options=[
                    {"label": " saved ", "value": SAVED}, {"label": " re-detect ", "value": DETECT}])]),
            html.Div(style={**box, "width": "150px"}, children=[
                html.Label("Method", style=label),
                dcc.Dropdown(id="method", options=list(METHODS), value="critical", clearable=False)]),
            html.Div(style=box, children=[
                html.Label("Penalty (changepoint)", style=label),
                dcc.Input(id="penalty", value="bic", debounce=True, style={"width": "90px"})]),
            html.Div(style=box, children=[
                html.Label("Bootstrap", style=label),
                dcc.Input(id="bootstrap", type="number", min=0, step=1, value=0, debounce=True,
                          style={"width": "70px"})]),
        ]),
        html.Div(id="notes", style={"color": "#b45309", "fontSize": "13px", "minHeight": "18px"}),
        dcc.Loading(dcc.Graph(id="overview", config={"displaylogo": False})),
        dcc.Graph(id="compare-overview", config={"displaylogo": False}, style={"display": "none"}),
        dcc.Graph(id="stages-table", config={"displaylogo": False}),
        html.H3("Heads of a stage"),
        html.Div(id="stage-heads", style={"fontSize": "14px", "marginBottom": "6px"}),
        dcc.Graph(id="heads", config={"displaylogo": False}),
        dcc.Store(id="stages-store"),
    ])

    @app.callback(Output("overview", "figure"), Output("compare-overview", "figure"),
                  Output("compare-overview", "style"), Output("stages-table", "figure"),
                  Output("stages-store", "data"), Output("notes", "children"),
                  Input("run", "value"), Input("compare", "value"), Input("source", "value"),
                  Input("method", "value"), Input("penalty", "value"), Input("bootstrap", "value"))
    def _update(run, compare, source, method, penalty, bootstrap):
        notes: list[str] = []
        if not run:
            return _empty("no runs found"), _empty(""), {"display": "none"}, _empty("no stages"), None, ""
        try:
            pen = parse_penalty(penalty)
        except ValueError as err:
            pen, notes = "bic", [str(err) + "; using 'bic'"]
        results = load_run(root, run)
        stages, more = stages_for(results, source, method=method, penalty=pen, bootstrap=bootstrap or 0)
        notes += more
        main = overview_or_note(results, stages, run)
        if compare:
            other = load_run(root, compare)
            other_stages, other_notes = stages_for(other, source, method=method, penalty=pen, bootstrap=bootstrap or 0)
            notes += [f"{compare}: {n}" for n in other_notes]
            second, style = overview_or_note(other, other_stages, compare), {"display": "block"}
        else:
            second, style = _empty(""), {"display": "none"}
        try:
            table = F.stages_table_figure(stages, title=f"Stages of {run}")
        except F.MissingData as err:
            table = _empty(str(err))
        return main, second, style, table, stages.to_json(orient="records"), " · ".join(notes)

    @app.callback(Output("heads", "figure"), Output("stage-heads", "children"),
                  Input("overview", "clickData"), Input("stages-store", "data"), State("run", "value"))
    def _heads(click, stages_json, run):
        if not run:
            return _empty("no run"), ""
        results = load_run(root, run)
        stages = pd.read_json(StringIO(stages_json), orient="records") if stages_json else pd.DataFrame(columns=STAGE_COLUMNS)
        step = click["points"][0].get("x") if click and click.get("points") else None
        fig, text = heads_view(results, stages, stage_at(stages, step))
        return (fig if fig is not None else _empty("no per-head metrics")), text

    return app


def serve(root: str | Path = "out", *, host: str = "127.0.0.1", port: int = 8050, debug: bool = False) -> None:
    """Run the app on ``host:port`` (loopback by default: the app is for the local user; pass
    ``host="0.0.0.0"`` deliberately to expose it)."""
    app = create_app(root)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine can read these runs", host)
    app.run(host=host, port=port, debug=debug)


__all__ = ["create_app", "serve", "run_names", "load_run", "stages_for", "stage_at", "heads_view", "parse_penalty"]
