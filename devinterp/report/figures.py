"""Every Plotly figure of the tool, each built from tables only (DESIGN.md "Plots are built in one place").

The HTML report (:mod:`devinterp.report.html`), the Dash app and PNG export all call these functions.
Inputs are the two data contracts of DESIGN.md: the long metrics table (``normalize_metrics`` output)
and the stages table. No torch here.

Text that comes from the data (run names, metric names, head labels, reasons) is HTML-escaped before
it goes into a figure: Plotly renders titles, legends, hover labels and table cells as a small subset
of HTML, so an unescaped ``<b>`` in a run name would be interpreted rather than shown.

Figures whose data is absent raise :class:`MissingData` (a ``ValueError``) naming what is missing, so
a caller can show "not available" for that figure and go on.
"""

from __future__ import annotations

import html
import re
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

STAGE_COLORS = {"A": "#E8853A", "B": "#3B78C2", "-": "#9AA0A6"}
"""Colour of a stage band by type: A orange (loss down, LLC up), B blue (LLC down), '-' grey."""

STAGE_LABELS = {"A": "Type A: loss ↓, LLC ↑", "B": "Type B: LLC ↓", "-": "No significant LLC change"}
"""Legend text of each stage type."""

BAND_OPACITY = 0.13
UNHEALTHY_COLOR = "#D62728"
HEALTHY_COLOR = "#2CA02C"
UNCHECKED_COLOR = "#B0B0B0"
HEAD_COLORS = qualitative.Dark24
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
TEMPLATE = "plotly_white"

# Panels of the overview, top to bottom: (panel title, metrics drawn in it).
OVERVIEW_PANELS = (("Loss", ("loss", "train_loss")), ("LLC", ("llc",)), ("ICL score", ("icl_score",)))


class MissingData(ValueError):
    """The tables lack what a figure needs; the message names the missing metric or column."""


# ---------------------------------------------------------------------------------------------------
# Table helpers


def esc(value: object) -> str:
    """``value`` as text safe to show in a Plotly label or in HTML (``&``, ``<``, ``>`` escaped)."""
    return html.escape(str(value), quote=False)


def head_label(layer: int, head: int) -> str:
    """The one head naming scheme of the tool: layer 1, head 2 -> ``"L1H2"`` (0-based numbers)."""
    return f"L{int(layer)}H{int(head)}"


def _label_key(label: str) -> tuple[int, int]:
    layer, head = label[1:].split("H")
    return int(layer), int(head)


def model_series(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Model-level aggregate rows of ``metric`` (no per-head, no per-chain rows), sorted by step."""
    rows = metrics[(metrics["metric"] == metric) & metrics["layer"].isna() & metrics["chain"].isna()]
    return rows.sort_values("step").reset_index(drop=True)


def per_head_metrics(metrics: pd.DataFrame) -> list[str]:
    """Names of the metrics that have per-head rows, in first-seen order."""
    rows = metrics[metrics["layer"].notna() & metrics["head"].notna() & metrics["chain"].isna()]
    return list(dict.fromkeys(str(m) for m in rows["metric"]))


def head_wide(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-head ``metric`` as a steps x heads frame; columns are head labels (``L0H0``…) in order.

    Raises MissingData when the table has no per-head rows of ``metric``.
    """
    rows = metrics[(metrics["metric"] == metric) & metrics["layer"].notna() & metrics["chain"].isna()]
    if rows.empty:
        raise MissingData(f"no per-head rows of metric {metric!r} in the metrics table")
    labels = "L" + rows["layer"].astype(int).astype(str) + "H" + rows["head"].astype(int).astype(str)
    wide = rows.assign(label=labels).pivot_table(index="step", columns="label", values="value", aggfunc="mean")
    return wide[sorted(wide.columns, key=_label_key)]


def _require(metrics: pd.DataFrame, columns: Iterable[str] = ("step", "metric", "value", "layer", "chain")) -> None:
    missing = [c for c in columns if c not in metrics.columns]
    if missing:
        raise MissingData(f"metrics table lacks column(s) {missing}; normalize it with devinterp.tables.normalize_metrics")


def _stages(stages: pd.DataFrame | None) -> pd.DataFrame:
    """The stages table sorted by stage, or an empty frame (no stages is a valid input everywhere)."""
    if stages is None or len(stages) == 0:
        return pd.DataFrame(columns=["stage", "start_step", "end_step", "type"])
    missing = [c for c in ("start_step", "end_step", "type") if c not in stages.columns]
    if missing:
        raise MissingData(f"stages table lacks column(s) {missing}")
    out = stages.copy()
    if "stage" not in out.columns:
        out["stage"] = range(1, len(out) + 1)
    return out.sort_values("start_step").reset_index(drop=True)


def _stage_type(value: object) -> str:
    text = "-" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return text if text in STAGE_COLORS else "-"


def _fmt(value: object, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "–"
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def stage_heads(stages: pd.DataFrame | None) -> list[str]:
    """Head labels named in the stages table's ``heads`` column, ranked, without duplicates."""
    stages = _stages(stages)
    if "heads" not in stages.columns:
        return []
    out: dict[str, None] = {}
    for cell in stages["heads"].dropna():
        for label in str(cell).split(","):
            label = label.strip()
            if label:
                out[label] = None
    return list(out)


# ---------------------------------------------------------------------------------------------------
# Shared decorations


def _base_layout(fig: go.Figure, title: str | None, height: int) -> None:
    """Shared look: template, font, margins, legend on top; ``title`` is plain text (escaped here)."""
    fig.update_layout(
        template=TEMPLATE,
        title={"text": esc(title), "x": 0.0, "xanchor": "left", "font": {"size": 16}} if title else None,
        height=height,
        font={"family": FONT, "size": 12, "color": "#2B2F36"},
        margin={"l": 70, "r": 30, "t": 70 if title else 40, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "xanchor": "left", "traceorder": "normal"},
        hoverlabel={"font": {"family": FONT}},
    )


def add_stage_bands(fig: go.Figure, stages: pd.DataFrame | None, *, xref: str = "x", labels: bool = True,
                    legend: bool = True, log_x: bool = False, floor: float | None = None) -> go.Figure:
    """Add one translucent rectangle per stage, spanning the figure's full height, coloured by type.

    Each rectangle is a shape named ``"stage <n>"`` (so exactly ``len(stages)`` rect shapes are
    added); with ``labels`` an annotation ``"<n>"`` sits on top of each band and shows the stage's
    numbers on hover; with ``legend`` one legend-only marker per stage type present explains the
    colours. ``log_x`` says the x axis starts as a log axis (annotation positions are given in
    log10 units there; Plotly converts them when the axis type is toggled). A band starting at
    step <= 0 starts at ``floor`` instead (default: a tenth of its end), so that it stays finite on
    a log axis. Returns ``fig``.
    """
    stages = _stages(stages)
    for row in stages.itertuples(index=False):
        kind = _stage_type(row.type)
        n = int(row.stage)
        x0 = row.start_step if row.start_step > 0 else (floor if floor else max(row.end_step / 10, 1e-9))
        fig.add_shape(type="rect", xref=xref, yref="paper", x0=x0, x1=row.end_step, y0=0, y1=1,
                      fillcolor=STAGE_COLORS[kind], opacity=BAND_OPACITY, line={"width": 0}, layer="below",
                      name=f"stage {n}")
        if labels:
            fig.add_annotation(x=_label_x(x0, row.end_step, log_x), xref=xref, y=1.0, yref="paper",
                               yanchor="bottom", text=f"<b>{n}</b>", showarrow=False,
                               font={"size": 11, "color": STAGE_COLORS[kind]},
                               hovertext=_stage_hover(row), name=f"stage label {n}")
    if legend:
        for kind in dict.fromkeys(_stage_type(t) for t in stages["type"]):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=STAGE_LABELS[kind],
                                     marker={"symbol": "square", "size": 12, "color": STAGE_COLORS[kind],
                                             "opacity": 0.5},
                                     hoverinfo="skip", meta="stage-type"))
    return fig


def step_floor(steps: Iterable[float]) -> float | None:
    """The first positive step: where a band starting at step 0 starts, so it stays finite on a log axis
    (Plotly draws step-0 points at the left edge of a log axis)."""
    positive = [float(s) for s in steps if s > 0]
    return min(positive) if positive else None


def _label_x(start: float, end: float, log_x: bool) -> float:
    """Middle of a band: arithmetic on a linear axis; geometric, in log10 units, on a log axis."""
    if not log_x:
        return (start + end) / 2
    lo = start if start > 0 else max(end / 10, 1e-9)
    return float((np.log10(lo) + np.log10(max(end, lo))) / 2)


def _stage_hover(row) -> str:
    parts = [f"Stage {int(row.stage)} ({esc(_stage_type(row.type))})",
             f"steps {_fmt(row.start_step, 'g')} → {_fmt(row.end_step, 'g')}"]
    confidence = getattr(row, "confidence", None)
    if confidence is not None and _fmt(confidence) != "–":
        parts.append(f"confidence {_fmt(confidence, '.0%')}")
    heads = getattr(row, "heads", None)
    if isinstance(heads, str) and heads:
        parts.append(f"heads {esc(heads)}")
    return "<br>".join(parts)


def _boundary_lines(fig: go.Figure, stages: pd.DataFrame | None, color: str = "white") -> None:
    """Dashed vertical lines at inner stage boundaries (for heatmaps, where bands would hide colour)."""
    stages = _stages(stages)
    for row in stages.iloc[1:].itertuples(index=False):
        fig.add_shape(type="line", xref="x", yref="paper", x0=row.start_step, x1=row.start_step, y0=0, y1=1,
                      line={"color": color, "width": 1.5, "dash": "dash"}, name=f"boundary {int(row.stage)}")


def _x_axes(fig: go.Figure) -> list[str]:
    names = [k for k in fig.layout.to_plotly_json() if k.startswith("xaxis")]
    return names or ["xaxis"]


def use_log_steps(steps: Iterable[float], step_axis: str = "auto") -> bool:
    """Whether a figure's step axis starts logarithmic: ``"log"``, ``"linear"``, or ``"auto"`` (log when
    the positive steps span at least two decades, as log-spaced checkpoint schedules do)."""
    if step_axis not in ("auto", "log", "linear"):
        raise ValueError(f"step_axis must be 'auto', 'log' or 'linear', got {step_axis!r}")
    if step_axis != "auto":
        return step_axis == "log"
    positive = np.asarray([s for s in steps if s > 0], dtype=float)
    return bool(len(positive) > 1 and positive.max() / positive.min() >= 100)


def log_range(steps: Iterable[float]) -> list[float] | None:
    """The log-axis x range [log10 first positive step, log10 last step], or None without positive steps.

    Plotly pins points at step <= 0 to far left of a log axis; starting the range at the first positive
    step keeps the line segment to them off screen.
    """
    positive = [float(s) for s in steps if s > 0]
    if not positive:
        return None
    lo, hi = min(positive), max(positive)
    return [float(np.log10(lo)), float(np.log10(hi if hi > lo else lo * 10))]


def add_step_axis_toggle(fig: go.Figure, *, log_x: bool = False, x_range_log: list[float] | None = None,
                         y_ranges_log: dict[str, list[float]] | None = None,
                         x: float = 0.0, y: float = 1.12, xanchor: str = "left") -> go.Figure:
    """Set every x axis of ``fig`` to log (``log_x``) or linear and add a "Linear steps / Log steps"
    button pair (an updatemenu named ``"step axis"``) that switches them all.

    ``x_range_log`` (log10 units, see :func:`log_range`) is the x range used on the log axis, and
    ``y_ranges_log`` ({"yaxis2": [lo, hi]}) y ranges for it (the values that remain in view, see
    :func:`_visible_y_ranges`); on the linear axis everything autoranges. Returns ``fig``.
    """
    axes = _x_axes(fig)

    def settings(kind: str) -> dict:
        out: dict = {}
        for ax in axes:
            out[f"{ax}.type"] = kind
            # ticks at powers of ten only: Plotly's in-between log ticks print one digit, so the heatmaps'
            # step 0 (drawn at half the first step, e.g. 0.5) read as "5"
            out[f"{ax}.dtick"] = 1 if kind == "log" else None
            if kind == "log" and x_range_log is not None:
                out[f"{ax}.range"] = list(x_range_log)
            else:
                out[f"{ax}.autorange"] = True
        for ax, rng in (y_ranges_log or {}).items():
            if kind == "log":
                out[f"{ax}.range"] = list(rng)
            else:
                out[f"{ax}.autorange"] = True
        return out

    fig.update_layout(settings("log" if log_x else "linear"))
    buttons = [{"label": label, "method": "relayout", "args": [settings(kind)]}
               for label, kind in (("Linear steps", "linear"), ("Log steps", "log"))]
    menus = list(fig.layout.updatemenus or [])
    menus.append({"type": "buttons", "direction": "right", "buttons": buttons, "showactive": True,
                  "active": 1 if log_x else 0, "x": x, "xanchor": xanchor, "y": y, "yanchor": "bottom",
                  "pad": {"r": 0, "t": 0}, "font": {"size": 11}, "bgcolor": "#F4F5F7", "bordercolor": "#D0D4DA",
                  "name": "step axis"})
    fig.update_layout(updatemenus=menus)
    return fig


# ---------------------------------------------------------------------------------------------------
# Overview


def _llc_band(metrics: pd.DataFrame, llc: pd.DataFrame) -> tuple[pd.Series, pd.Series, str] | None:
    """(step, half-width, label) of the LLC band: ±stderr where given, else ± the released chain sd."""
    stderr = pd.to_numeric(llc["stderr"], errors="coerce")
    if stderr.notna().any():
        ok = stderr.notna()
        return llc["step"][ok], stderr[ok].astype(float), "LLC ± stderr"
    sd = model_series(metrics, "llc_std")
    if len(sd):
        joined = llc[["step"]].merge(sd[["step", "value"]], on="step")
        return joined["step"], joined["value"].astype(float), "LLC ± sd across chains"
    return None


def _unhealthy(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["healthy"].fillna(True).eq(False)] if "healthy" in rows.columns else rows.iloc[0:0]


def _reason_text(rows: pd.DataFrame) -> list[str]:
    reasons = rows["reason"] if "reason" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    return [f"step {int(s)}: unhealthy" + (f" – {esc(r)}" if isinstance(r, str) and r else "")
            for s, r in zip(rows["step"], reasons)]


def overview_figure(metrics: pd.DataFrame, stages: pd.DataFrame | None = None, *, title: str | None = None,
                    step_axis: str = "auto") -> go.Figure:
    """Stacked panels over one shared step axis: loss (and train_loss), LLC, ICL score, with stage bands.

    Inputs: the metrics table and (optionally) the stages table. A panel is drawn when its metric has
    model-level rows; the LLC panel carries a ±stderr band (or ± the released across-chain sd,
    labelled so, when the table has no stderr) and red crosses at estimates with ``healthy == False``.
    All panels share one x axis, so hovering shows every panel's value at that step
    (``hovermode="x unified"``, ``hoversubplots="axis"``) with a spike line across.

    Output: a Figure with traces named ``loss``, ``train_loss``, ``llc``, ``icl_score``, the band
    traces, ``unhealthy llc``; one rect shape per stage. Raises MissingData when none of the panel
    metrics is present.
    """
    _require(metrics)
    panels = [(name, [m for m in names if len(model_series(metrics, m))]) for name, names in OVERVIEW_PANELS]
    panels = [(name, present) for name, present in panels if present]
    if not panels:
        raise MissingData("overview needs at least one of the metrics loss, train_loss, llc, icl_score; "
                          f"the table has {sorted(set(map(str, metrics['metric'].unique())))}")
    fig = go.Figure()
    gap, n = 0.06, len(panels)
    height = (1 - gap * (n - 1)) / n
    for i, (name, present) in enumerate(panels):
        yaxis = "y" if i == 0 else f"y{i + 1}"
        top = 1 - i * (height + gap)
        fig.update_layout({f"yaxis{'' if i == 0 else i + 1}": {
            "domain": [max(top - height, 0), top], "title": {"text": esc(name)}, "zeroline": False}})
        for metric in present:
            _add_overview_metric(fig, metrics, metric, yaxis)
    _base_layout(fig, title, 250 + 190 * n)
    fig.update_layout(hovermode="x unified", hoversubplots="axis",
                      xaxis={"title": {"text": "training step"}, "showspikes": True, "spikemode": "across",
                             "spikesnap": "cursor", "spikethickness": 1, "spikecolor": "#555",
                             "spikedash": "dot", "anchor": f"y{n}" if n > 1 else "y"})
    log_x = use_log_steps(metrics["step"], step_axis)
    floor = step_floor(metrics["step"])
    add_stage_bands(fig, stages, log_x=log_x, floor=floor)
    add_step_axis_toggle(fig, log_x=log_x, x_range_log=log_range(metrics["step"]),
                         y_ranges_log=_visible_y_ranges(fig, floor) if floor else None)
    return fig


def _visible_y_ranges(fig: go.Figure, floor: float) -> dict[str, list[float]]:
    """Per y axis, the range of the values at steps >= ``floor`` (5% padding): what a log step axis
    shows, so the step-0 value (off that axis) does not stretch a panel."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for trace in fig.data:
        if trace.x is None or trace.y is None or trace.meta == "stage-type":
            continue
        xs = np.asarray(trace.x, dtype=float)
        ys = np.asarray(trace.y, dtype=float)
        ys = ys[(xs >= floor) & np.isfinite(ys)]
        if len(ys):
            ax = "yaxis" + (trace.yaxis or "y")[1:]
            lo[ax] = min(lo.get(ax, np.inf), float(ys.min()))
            hi[ax] = max(hi.get(ax, -np.inf), float(ys.max()))
    out = {}
    for ax in lo:
        pad = 0.05 * (hi[ax] - lo[ax]) or 0.05 * max(abs(hi[ax]), 1.0)
        out[ax] = [lo[ax] - pad, hi[ax] + pad]
    return out


def _add_overview_metric(fig: go.Figure, metrics: pd.DataFrame, metric: str, yaxis: str) -> None:
    rows = model_series(metrics, metric)
    style = {"loss": {"color": "#1F2A44", "width": 2}, "train_loss": {"color": "#9DB3D9", "width": 1},
             "llc": {"color": "#7A3FB0", "width": 2}, "icl_score": {"color": "#1B8A6B", "width": 2}}[metric]
    if metric == "llc":
        band = _llc_band(metrics, rows)
        if band is not None:
            steps, half, label = band
            mid = rows.set_index("step")["value"].reindex(steps).to_numpy(float)
            fig.add_trace(go.Scatter(x=steps, y=mid + half.to_numpy(), yaxis=yaxis, mode="lines",
                                     line={"width": 0}, hoverinfo="skip", showlegend=False, name=f"{label} (upper)"))
            fig.add_trace(go.Scatter(x=steps, y=mid - half.to_numpy(), yaxis=yaxis, mode="lines",
                                     line={"width": 0}, fill="tonexty", fillcolor="rgba(122,63,176,0.18)",
                                     hoverinfo="skip", name=label))
    fig.add_trace(go.Scatter(x=rows["step"], y=rows["value"].astype(float), yaxis=yaxis, mode="lines",
                             line=style, name=metric, hovertemplate="%{y:.4g}"))
    bad = _unhealthy(rows)
    if metric == "llc" and len(bad):
        fig.add_trace(go.Scatter(x=bad["step"], y=bad["value"].astype(float), yaxis=yaxis, mode="markers",
                                 marker={"symbol": "x", "size": 9, "color": UNHEALTHY_COLOR},
                                 name="unhealthy llc", hovertext=_reason_text(bad), hoverinfo="text"))


# ---------------------------------------------------------------------------------------------------
# Per-head figures


def head_heatmap_figure(metrics: pd.DataFrame, metric: str, stages: pd.DataFrame | None = None, *,
                        title: str | None = None, step_axis: str = "auto") -> go.Figure:
    """Heatmap of a per-head score: rows are heads (``L0H0`` at the top), x is the training step.

    Inner stage boundaries are dashed vertical lines (bands would tint the colours). Output: a
    Figure with one Heatmap trace named ``metric``. Raises MissingData when ``metric`` has no
    per-head rows.
    """
    _require(metrics)
    wide = head_wide(metrics, metric)
    steps = wide.index.to_numpy()
    floor = step_floor(steps)
    x = np.where(steps > 0, steps, floor / 2) if floor else steps  # step 0 kept finite for the log view
    fig = go.Figure(go.Heatmap(
        x=x, y=list(wide.columns), z=wide.to_numpy(float).T, name=esc(metric), customdata=np.tile(steps, (wide.shape[1], 1)),
        colorscale="Viridis", colorbar={"title": {"text": esc(metric), "side": "right"}, "thickness": 12},
        hovertemplate="step %{customdata}<br>%{y}<br>" + esc(metric) + " %{z:.4g}<extra></extra>"))
    _base_layout(fig, title if title is not None else f"{metric} per head", 120 + 22 * wide.shape[1])
    fig.update_layout(xaxis={"title": {"text": "training step"}},
                      yaxis={"autorange": "reversed", "title": {"text": "head"}, "tickfont": {"size": 10}},
                      margin={"t": 60})
    _boundary_lines(fig, stages)
    add_step_axis_toggle(fig, log_x=use_log_steps(wide.index, step_axis), x=1.0, xanchor="right", y=1.02)
    return fig


def default_heads(metrics: pd.DataFrame, metric: str, stages: pd.DataFrame | None = None, *, top: int = 4) -> list[str]:
    """Heads shown at first in the explorer: heads the stages name, then the ``top`` heads whose
    ``metric`` ranges most over training."""
    wide = head_wide(metrics, metric)
    ranked = (wide.max() - wide.min()).sort_values(ascending=False)
    named = [h for h in stage_heads(stages) if h in wide.columns]
    return list(dict.fromkeys(named + list(ranked.index[:top])))


def head_explorer_figure(metrics: pd.DataFrame, stages: pd.DataFrame | None = None, *,
                         metric_names: Sequence[str] | None = None, highlight: Sequence[str] | None = None,
                         title: str | None = None, step_axis: str = "auto") -> go.Figure:
    """Curves of per-head scores over the stage bands, one dropdown entry per metric.

    For each metric in ``metric_names`` (default: every per-head metric) there is one trace per head,
    named by its label (``L1H6``) and coloured the same across metrics. Heads in ``highlight``
    (default: :func:`default_heads`) start visible, the rest are one legend click away
    (``"legendonly"``); a dropdown switches between metrics. Traces carry ``meta`` = metric name.
    Raises MissingData when there is no per-head metric.
    """
    _require(metrics)
    names = list(metric_names) if metric_names is not None else per_head_metrics(metrics)
    if not names:
        raise MissingData("head explorer needs per-head metrics (rows with layer and head); the table has none")
    fig = go.Figure()
    groups: list[tuple[str, int, int]] = []
    for i, metric in enumerate(names):
        wide = head_wide(metrics, metric)
        shown = set(highlight) if highlight is not None else set(default_heads(metrics, metric, stages))
        start = len(fig.data)
        for label in wide.columns:
            layer, head = _label_key(label)
            color = HEAD_COLORS[(layer * 8 + head) % len(HEAD_COLORS)]
            visible = (True if label in shown else "legendonly") if i == 0 else False
            fig.add_trace(go.Scatter(x=wide.index.to_numpy(), y=wide[label].to_numpy(float), mode="lines",
                                     name=label, legendgroup=label, meta=str(metric), visible=visible,
                                     line={"color": color, "width": 1.8, "dash": "solid" if layer % 2 == 0 else "dot"},
                                     hovertemplate=f"{label} %{{y:.4g}}<extra></extra>"))
        groups.append((metric, start, len(fig.data)))
    n_head_traces = len(fig.data)
    log_x = use_log_steps(metrics["step"], step_axis)
    add_stage_bands(fig, stages, legend=False, log_x=log_x, floor=step_floor(metrics["step"]))
    x_range_log = log_range(metrics["step"])
    n_total = len(fig.data)
    buttons = []
    for metric, start, stop in groups:
        shown = set(highlight) if highlight is not None else set(default_heads(metrics, metric, stages))
        visible = [False] * n_head_traces + [True] * (n_total - n_head_traces)
        for j in range(start, stop):
            visible[j] = True if fig.data[j].name in shown else "legendonly"
        buttons.append({"label": esc(metric), "method": "update",
                        "args": [{"visible": visible}, {"yaxis.title.text": esc(metric)}]})
    _base_layout(fig, title, 470)
    fig.update_layout(
        hovermode="x unified", yaxis={"title": {"text": esc(names[0])}}, xaxis={"title": {"text": "training step"}},
        legend={"orientation": "v", "x": 1.02, "y": 1, "xanchor": "left", "yanchor": "top", "font": {"size": 11},
                "title": {"text": "heads (click to toggle)"}},
        margin={"r": 160, "t": 80},
        updatemenus=[{"type": "dropdown", "buttons": buttons, "active": 0, "x": 0, "xanchor": "left",
                      "y": 1.12, "yanchor": "bottom", "showactive": True, "name": "metric",
                      "bgcolor": "#FFFFFF", "bordercolor": "#D0D4DA"}])
    add_step_axis_toggle(fig, log_x=log_x, x_range_log=x_range_log, x=0.22)
    return fig


# ---------------------------------------------------------------------------------------------------
# Stages table


STAGE_TABLE_COLUMNS = ["Stage", "Steps", "Type", "Δ loss", "Δ LLC (± se)", "Confidence", "Start boundary in",
                       "Heads", "Method"]


def stage_rows(stages: pd.DataFrame | None) -> pd.DataFrame:
    """The stages table as display strings, one row per stage, columns :data:`STAGE_TABLE_COLUMNS`.

    Values are not HTML-escaped here (callers escape for their medium); missing optional columns show
    as ``–``. Also used by the HTML report's native table, so both show the same numbers.
    """
    stages = _stages(stages)
    records = []
    for row in stages.to_dict("records"):
        d_llc = _fmt(row.get("d_llc"))
        se = _fmt(row.get("d_llc_stderr"))
        records.append({
            "Stage": str(int(row["stage"])),
            "Steps": f"{_fmt(row['start_step'], 'g')} → {_fmt(row['end_step'], 'g')}",
            "Type": _stage_type(row.get("type")),
            "Δ loss": _fmt(row.get("d_loss")),
            "Δ LLC (± se)": d_llc if se == "–" else f"{d_llc} ± {se}",
            "Confidence": _fmt(row.get("confidence"), ".0%"),
            "Start boundary in": ("–" if _fmt(row.get("boundary_lo")) == "–" else
                                  f"[{_fmt(row.get('boundary_lo'), 'g')}, {_fmt(row.get('boundary_hi'), 'g')}]"),
            "Heads": str(row["heads"]) if isinstance(row.get("heads"), str) and row.get("heads") else "–",
            "Method": str(row["method"]) if isinstance(row.get("method"), str) and row.get("method") else "–",
        })
    return pd.DataFrame(records, columns=STAGE_TABLE_COLUMNS)


def stages_table_figure(stages: pd.DataFrame | None, *, title: str | None = None) -> go.Figure:
    """The stages table as a Plotly Table: type cells coloured by stage type, confidence, heads.

    Raises MissingData when there are no stages.
    """
    rows = stage_rows(stages)
    if rows.empty:
        raise MissingData("no stages: run detection (devinterp detect) to fill stages.csv")
    fills = [[STAGE_COLORS[t] if col == "Type" else "#FFFFFF" for t in rows["Type"]] for col in rows.columns]
    fonts = [["#FFFFFF" if col == "Type" else "#2B2F36" for _ in rows["Type"]] for col in rows.columns]
    fig = go.Figure(go.Table(
        columnwidth=[0.5, 1.4, 0.5, 0.8, 1.3, 0.9, 1.4, 2.0, 1.0],
        header={"values": [f"<b>{esc(c)}</b>" for c in rows.columns], "fill_color": "#EEF0F3",
                "align": "left", "font": {"size": 12}},
        cells={"values": [[esc(v) for v in rows[c]] for c in rows.columns], "fill_color": fills,
               "font": {"color": fonts, "size": 12}, "align": "left", "height": 26}))
    _base_layout(fig, title, 120 + 28 * len(rows))
    fig.update_layout(margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return fig


# ---------------------------------------------------------------------------------------------------
# SGLD diagnostics


def calibration_frame(calibration: object) -> pd.DataFrame | None:
    """A calibration table (list of row dicts, dict of columns, dict of scalars, or DataFrame) as a
    DataFrame; None when ``calibration`` is empty or not table-like."""
    if calibration is None:
        return None
    if isinstance(calibration, pd.DataFrame):
        frame = calibration
    elif isinstance(calibration, list) and calibration and all(isinstance(r, dict) for r in calibration):
        frame = pd.DataFrame(calibration)
    elif isinstance(calibration, dict) and calibration:
        if all(isinstance(v, list) for v in calibration.values()) and len({len(v) for v in calibration.values()}) == 1:
            frame = pd.DataFrame(calibration)
        else:
            frame = pd.DataFrame({"setting": list(calibration), "value": [str(v) for v in calibration.values()]})
    else:
        return None
    return frame if len(frame) else None


def health_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of estimates that failed their diagnostics (``healthy == False``), aggregate and per-chain,
    with columns step, metric, head (label or ''), chain, value, reason (or '')."""
    bad = _unhealthy(metrics)
    heads = ["" if pd.isna(l) else head_label(l, h) for l, h in zip(bad["layer"], bad["head"])]
    reason = bad["reason"] if "reason" in bad.columns else pd.Series([""] * len(bad), index=bad.index)
    return pd.DataFrame({"step": bad["step"].to_numpy(), "metric": bad["metric"].astype(str).to_numpy(),
                         "head": heads, "chain": bad["chain"].astype("Int64").to_numpy(),
                         "value": bad["value"].to_numpy(float), "reason": reason.fillna("").astype(str).to_numpy()})


def diagnostics_figure(metrics: pd.DataFrame, stages: pd.DataFrame | None = None, *, title: str | None = None,
                       step_axis: str = "auto") -> go.Figure:
    """SGLD diagnostics over steps: per-chain LLC values around the aggregate (top), and, when the
    table has health flags, a health strip (bottom) with one row per estimated metric: green = every
    estimate of it at that step healthy, red = at least one failed (hover gives the heads/chains and
    reasons), grey = not checked. Unhealthy aggregate LLC estimates are also red crosses on top.

    Output: a Figure with traces ``chain <c>`` (one per chain), ``llc``, ``unhealthy llc``,
    ``health <metric>``; one rect shape per stage. Raises MissingData when the table has no LLC rows.
    """
    _require(metrics, ("step", "metric", "value", "layer", "chain", "healthy"))
    llc_rows = metrics[(metrics["metric"] == "llc") & metrics["layer"].isna()]
    if llc_rows.empty:
        raise MissingData("diagnostics need LLC rows (metric 'llc'); the metrics table has none")
    fig = go.Figure()
    chains = llc_rows[llc_rows["chain"].notna()]
    for chain, rows in chains.groupby("chain"):
        rows = rows.sort_values("step")
        fig.add_trace(go.Scatter(x=rows["step"], y=rows["value"].astype(float), mode="markers",
                                 name=f"chain {int(chain)}", marker={"size": 4, "opacity": 0.6},
                                 hovertemplate=f"chain {int(chain)} %{{y:.4g}}<extra></extra>"))
    agg = model_series(metrics, "llc")
    fig.add_trace(go.Scatter(x=agg["step"], y=agg["value"].astype(float), mode="lines", name="llc",
                             line={"color": "#7A3FB0", "width": 2}, hovertemplate="llc %{y:.4g}<extra></extra>"))
    bad = _unhealthy(agg)
    if len(bad):
        fig.add_trace(go.Scatter(x=bad["step"], y=bad["value"].astype(float), mode="markers", name="unhealthy llc",
                                 marker={"symbol": "x", "size": 9, "color": UNHEALTHY_COLOR},
                                 hovertext=_reason_text(bad), hoverinfo="text"))
    flagged = [str(m) for m in metrics.loc[metrics["healthy"].notna(), "metric"].unique()]
    for metric in flagged:
        _add_health_row(fig, metrics[metrics["metric"] == metric], metric)
    _base_layout(fig, title, 440 + (60 + 22 * len(flagged) if flagged else 0))
    llc_title = "LLC (aggregate and per chain)" if len(chains) else "LLC"
    if flagged:
        strip = min(0.07 + 0.05 * len(flagged), 0.35)
        fig.update_layout(yaxis={"domain": [strip + 0.1, 1.0], "title": {"text": llc_title}},
                          yaxis2={"domain": [0, strip], "type": "category", "title": {"text": "health"},
                                  "categoryorder": "array", "categoryarray": [esc(m) for m in flagged],
                                  "tickfont": {"size": 10}},
                          xaxis={"anchor": "y2"})
    else:
        fig.update_layout(yaxis={"title": {"text": llc_title}})
    fig.update_layout(hovermode="closest", xaxis={"title": {"text": "training step"}})
    log_x = use_log_steps(metrics["step"], step_axis)
    add_stage_bands(fig, stages, legend=False, log_x=log_x, floor=step_floor(metrics["step"]))
    x_range_log = log_range(metrics["step"])
    add_step_axis_toggle(fig, log_x=log_x, x_range_log=x_range_log)
    return fig


def _add_health_row(fig: go.Figure, rows: pd.DataFrame, metric: str) -> None:
    """One marker per step on the health strip: the worst health of ``metric``'s estimates at that step."""
    steps, colors, texts = [], [], []
    reasons = rows["reason"] if "reason" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    rows = rows.assign(_reason=reasons)
    for step, group in rows.groupby("step", sort=True):
        flags = group["healthy"]
        bad = group[flags.fillna(True).eq(False)]
        steps.append(step)
        if len(bad):
            colors.append(UNHEALTHY_COLOR)
            where = ["aggregate" if pd.isna(r.layer) and pd.isna(r.chain) else
                     (head_label(r.layer, r.head) if pd.notna(r.layer) else "") +
                     (f" chain {int(r.chain)}" if pd.notna(r.chain) else "")
                     for r in bad.itertuples()]
            detail = "; ".join(f"{esc(w.strip())}" + (f": {esc(r)}" if isinstance(r, str) and r else "")
                               for w, r in list(zip(where, bad["_reason"]))[:6])
            more = f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""
            texts.append(f"step {step}: {len(bad)} unhealthy {esc(metric)} estimate(s)<br>{detail}{more}")
        elif flags.notna().any():
            colors.append(HEALTHY_COLOR)
            texts.append(f"step {step}: {esc(metric)} healthy")
        else:
            colors.append(UNCHECKED_COLOR)
            texts.append(f"step {step}: {esc(metric)} not checked")
    fig.add_trace(go.Scatter(x=steps, y=[esc(metric)] * len(steps), yaxis="y2", mode="markers", name=f"health {esc(metric)}",
                             marker={"symbol": "square", "size": 7, "color": colors}, hovertext=texts,
                             hoverinfo="text", showlegend=False))


def calibration_table_figure(calibration: object, *, title: str | None = "SGLD calibration") -> go.Figure:
    """The calibration table (see :func:`calibration_frame` for accepted shapes) as a Plotly Table.

    Raises MissingData when there is no calibration table.
    """
    frame = calibration_frame(calibration)
    if frame is None:
        raise MissingData("no calibration table (manifest 'calibration' or llc_settings.json 'calibration')")
    fig = go.Figure(go.Table(
        header={"values": [f"<b>{esc(c)}</b>" for c in frame.columns], "fill_color": "#EEF0F3", "align": "left"},
        cells={"values": [[esc(_fmt(v) if isinstance(v, (float, np.floating)) else v) for v in frame[c]]
                          for c in frame.columns], "align": "left", "height": 24}))
    _base_layout(fig, title, 110 + 26 * len(frame))
    fig.update_layout(margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return fig


# ---------------------------------------------------------------------------------------------------
# The figures of the report, in order (the HTML report and figure export both iterate this list)


class FigureSpec(NamedTuple):
    """One figure of the report: ``key`` names its div in the HTML report (``data-figure``), ``name``
    is its file stem on export (``heatmap-induction``), ``make()`` builds it (may raise MissingData)."""

    key: str
    name: str
    make: Callable[[], go.Figure]


def essential_dynamics_figure(metrics: pd.DataFrame, stages: pd.DataFrame | None = None, *,
                              title: str | None = None, n_components: int = 3) -> go.Figure:
    """Essential dynamics (REFERENCE.md §2.3) of the per-token losses (``token_loss`` rows): left, the
    trajectory of the checkpoints in the plane of PC1 and PC2 (markers: raw scores coloured by stage
    type; line: the smoothed trajectory; stars: turning points, labelled with their step); right, each
    smoothed PC against the training step with the stage boundaries dashed. Raises MissingData when
    the table has no ``token_loss`` rows or too few checkpoints."""
    from plotly.subplots import make_subplots

    from devinterp.transitions.essential_dynamics import ed_from_metrics

    _require(metrics)
    try:
        ed = ed_from_metrics(metrics, n_components=n_components)
    except ValueError as err:
        raise MissingData(f"essential dynamics: {err}") from None
    if ed is None:
        raise MissingData("the metrics table has no token_loss rows (add token_loss to sweep.metrics)")
    k = ed.scores.shape[1]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.09,
                        subplot_titles=("trajectory, PC1 × PC2", "smoothed PCs over training"))
    st = _stages(stages)
    colours = []
    for step in ed.steps:
        inside = st[(st["start_step"] <= step) & (step <= st["end_step"])] if len(st) else st
        colours.append(STAGE_COLORS.get(_stage_type(inside["type"].iloc[0]), UNCHECKED_COLOR) if len(inside)
                       else UNCHECKED_COLOR)
    y_raw = ed.scores[:, 1] if k > 1 else np.zeros(len(ed.steps))
    y_smooth = ed.smoothed[:, 1] if k > 1 else np.zeros(len(ed.steps))
    fig.add_trace(go.Scatter(x=ed.scores[:, 0], y=y_raw, mode="markers", name="checkpoints",
                             marker={"color": colours, "size": 7, "line": {"width": 0.5, "color": "white"}},
                             customdata=ed.steps, hovertemplate="step %{customdata}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=ed.smoothed[:, 0], y=y_smooth, mode="lines", name="smoothed",
                             line={"color": "#444", "width": 1.5}, hoverinfo="skip"), row=1, col=1)
    if ed.turning_points:
        idx = [t.index for t in ed.turning_points]
        fig.add_trace(go.Scatter(
            x=ed.smoothed[idx, 0], y=y_smooth[idx], mode="markers+text", name="turning points",
            marker={"symbol": "star", "size": 13, "color": "#7A3FB0"}, text=[f"{t.step:,}" for t in ed.turning_points],
            textposition="top center", customdata=[np.degrees(t.angle) for t in ed.turning_points],
            hovertemplate="turning point at step %{text}<br>angle %{customdata:.0f}°<extra></extra>"), row=1, col=1)
    steps = ed.steps.astype(float)
    floor = step_floor(steps)
    x = np.where(steps > 0, steps, floor / 2) if floor else steps
    for i in range(k):
        share = ed.explained_variance_ratio[i]
        fig.add_trace(go.Scatter(x=x, y=ed.smoothed[:, i], mode="lines", name=f"PC{i + 1} ({share:.0%})",
                                 line={"color": HEAD_COLORS[i % len(HEAD_COLORS)]}, customdata=ed.steps,
                                 hovertemplate=f"PC{i + 1}" + " %{y:.3g} at step %{customdata}<extra></extra>"),
                      row=1, col=2)
    for t in ed.turning_points:
        fig.add_vline(x=max(t.step, floor / 2 if floor else t.step), line={"color": "#7A3FB0", "width": 1},
                      row=1, col=2)
    _base_layout(fig, title if title is not None else "Essential dynamics of the per-token losses", 470)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0, "xanchor": "left"},
                      margin={"t": 90, "b": 110})
    fig.update_xaxes(title_text="PC1", row=1, col=1)
    fig.update_yaxes(title_text="PC2", row=1, col=1)
    log_x = use_log_steps(steps)
    fig.update_xaxes(title_text="training step", type="log" if log_x else "linear", row=1, col=2)
    for row in st.iloc[1:].itertuples() if len(st) else []:
        fig.add_vline(x=max(float(row.start_step), floor / 2 if floor else 0.0),
                      line={"color": "#999", "width": 1, "dash": "dash"}, row=1, col=2)
    return fig


def file_stem(text: str) -> str:
    """``text`` made safe as a file name: anything but letters, digits, ``_ . -`` becomes ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._")
    return stem or "figure"


def report_figures(metrics: pd.DataFrame, stages: pd.DataFrame | None = None, *, step_axis: str = "auto",
                   static: bool = False) -> list[FigureSpec]:
    """Every figure of the report, in report order: overview, one heatmap per per-head metric, head
    explorer, diagnostics. Nothing is built until ``make()`` is called.

    With ``static`` (figure export), the head explorer becomes one figure per per-head metric
    (``explorer-<metric>``), since a picture has no dropdown to switch metrics.
    """
    use_log_steps([], step_axis)  # validates step_axis before any work
    ax = {"step_axis": step_axis}
    heads = per_head_metrics(metrics) if "layer" in metrics.columns and "head" in metrics.columns else []
    specs = [FigureSpec("overview", "overview", lambda: overview_figure(metrics, stages, **ax))]
    specs += [FigureSpec(f"heatmap-{i}", f"heatmap-{file_stem(m)}",
                         lambda m=m: head_heatmap_figure(metrics, m, stages, **ax)) for i, m in enumerate(heads)]
    if static and heads:
        specs += [FigureSpec(f"explorer-{i}", f"explorer-{file_stem(m)}",
                             lambda m=m: head_explorer_figure(metrics, stages, metric_names=[m], **ax))
                  for i, m in enumerate(heads)]
    else:
        specs.append(FigureSpec("explorer", "explorer", lambda: head_explorer_figure(metrics, stages, **ax)))
    specs.append(FigureSpec("diagnostics", "diagnostics", lambda: diagnostics_figure(metrics, stages, **ax)))
    if "metric" in metrics.columns and (metrics["metric"] == "token_loss").any():
        specs.append(FigureSpec("essential-dynamics", "essential-dynamics",
                                lambda: essential_dynamics_figure(metrics, stages)))
    return specs


def static_figure(fig: go.Figure, *, width: int | None = None) -> go.Figure:
    """A copy of ``fig`` for a picture (PNG/SVG): buttons and dropdowns removed, traces hidden behind a
    legend click (``"legendonly"``) left out, no "click to" hints, ``width`` set when the figure has
    none (interactive figures fill their page instead)."""
    out = go.Figure(fig)
    out.layout.updatemenus = ()
    for trace in out.data:
        if trace.visible == "legendonly":
            trace.visible = False
    legend_title = out.layout.legend.title.text
    if legend_title and "click" in legend_title:
        out.layout.legend.title.text = re.sub(r"\s*\(click[^)]*\)", "", legend_title)
    if width is not None and out.layout.width is None:
        out.layout.width = width
    return out


__all__ = [
    "STAGE_COLORS", "STAGE_LABELS", "MissingData", "esc", "head_label", "model_series", "per_head_metrics",
    "head_wide", "stage_heads", "add_stage_bands", "add_step_axis_toggle", "overview_figure",
    "head_heatmap_figure", "default_heads", "head_explorer_figure", "stage_rows", "stages_table_figure",
    "calibration_frame", "health_table", "diagnostics_figure", "calibration_table_figure", "FigureSpec",
    "essential_dynamics_figure",
    "report_figures", "static_figure", "file_stem",
]
