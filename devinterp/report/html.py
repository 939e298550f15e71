"""The standalone HTML report: one self-contained file that opens from disk with no network.

``render_report(results, path)`` writes it atomically. plotly.js is inlined once in ``<head>``; each
figure (built by :mod:`devinterp.report.figures`) is a ``<div>`` plus a small script calling
``Plotly.newPlot``. Text from the data is HTML-escaped everywhere, and the figure JSON has every
``<`` written as ``\\u003c`` so no string in it can close the ``<script>`` element.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from devinterp import _io
from devinterp.locality import LOCALITY_MIN
from devinterp.report import figures as F
from devinterp.results import Results
from devinterp.sweep.calibration import calibration_summary

PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "scrollZoom": False,
                 "modeBarButtonsToRemove": ["select2d", "lasso2d"]}

# Manifest keys shown in their own blocks; any other key is shown under "Other".
KNOWN_KEYS = ("run", "config", "config_hash", "versions", "python", "machine", "timings", "checkpoints",
              "llc_settings", "calibration", "updated")


def e(value: object) -> str:
    """``value`` as HTML text, every special character escaped (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def script_json(obj_json: str) -> str:
    """JSON text made safe to inline in a ``<script>``: ``<``, ``>``, ``&`` and the JS line separators
    become ``\\u`` escapes (same value once parsed), so ``</script>`` or ``<!--`` cannot occur."""
    return (obj_json.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# ---------------------------------------------------------------------------------------------------
# Building blocks


class _Figures:
    """Numbers the figure divs of one report and renders each as a div + newPlot script."""

    def __init__(self, filename: str) -> None:
        self.count = 0
        self.config = {**PLOTLY_CONFIG, "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}

    def block(self, fig: go.Figure, name: str) -> str:
        self.count += 1
        div_id = f"fig-{self.count}-{name}"
        payload = script_json(fig.to_json())
        config = script_json(json.dumps(self.config))
        return (f'<div class="plot" id="{e(div_id)}" data-figure="{e(name)}"></div>\n'
                f'<script>(function(){{var f={payload};'
                f'Plotly.newPlot({json.dumps(div_id)},f.data,f.layout,{config});}})();</script>')

    def build(self, name: str, make: Callable[[], go.Figure]) -> str:
        """The figure ``make()`` builds, or a "not available" note naming what is missing."""
        try:
            fig = make()
        except F.MissingData as err:
            return f'<p class="na">Not available: {e(err)}</p>'
        return self.block(fig, name)


def value_html(value: Any, depth: int = 0) -> str:
    """Any JSON-like value as escaped HTML: dicts as key/value tables, lists of dicts as tables."""
    if isinstance(value, dict):
        if not value:
            return '<span class="muted">(empty)</span>'
        rows = "".join(f"<tr><th>{e(k)}</th><td>{value_html(v, depth + 1)}</td></tr>" for k, v in value.items())
        return f'<table class="kv{" nested" if depth else ""}">{rows}</table>'
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return frame_html(pd.DataFrame(value))
        if not value:
            return '<span class="muted">(none)</span>'
        return ", ".join(value_html(v, depth + 1) for v in value)
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return e(format(value, ".6g"))
    return e(value)


def frame_html(frame: pd.DataFrame, *, classes: str = "data", cell: Callable[[str, Any], str] | None = None) -> str:
    """A DataFrame as an escaped HTML table; ``cell(column, value)`` may return custom (already safe) HTML."""
    head = "".join(f"<th>{e(c)}</th>" for c in frame.columns)
    body = []
    for record in frame.to_dict("records"):
        tds = []
        for col, val in record.items():
            tds.append(f"<td>{cell(col, val) if cell else _cell(val)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<div class="table-wrap"><table class="{e(classes)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return e(format(value, ".5g"))
    return e(value)


def type_badge(kind: str) -> str:
    color = F.STAGE_COLORS.get(kind, F.STAGE_COLORS["-"])
    return f'<span class="badge" style="background:{color}" title="{e(F.STAGE_LABELS.get(kind, kind))}">{e(kind)}</span>'


def stage_legend() -> str:
    items = "".join(f'<span class="legend-item"><span class="swatch" style="background:{F.STAGE_COLORS[k]}"></span>'
                    f"{e(F.STAGE_LABELS[k])}</span>" for k in F.STAGE_COLORS)
    return f'<div class="stage-legend"><span class="legend-title">Stage types</span>{items}</div>'


# ---------------------------------------------------------------------------------------------------
# Manifest readers (robust to anything missing)


def checkpoint_statuses(manifest: dict) -> pd.DataFrame:
    """``manifest["checkpoints"]`` as a frame with columns step, status, reason (empty when absent).

    Accepts ``{"<step>": {"status": ..., "reason": ...}}``, ``{"<step>": "done"}`` or a list of dicts
    with a ``step`` key.
    """
    raw = manifest.get("checkpoints") if isinstance(manifest, dict) else None
    records = []
    if isinstance(raw, dict):
        for step, info in raw.items():
            info = info if isinstance(info, dict) else {"status": info}
            records.append({"step": step, "status": info.get("status"), "reason": info.get("reason")})
    elif isinstance(raw, list):
        for info in raw:
            if isinstance(info, dict):
                records.append({"step": info.get("step"), "status": info.get("status"), "reason": info.get("reason")})
    frame = pd.DataFrame(records, columns=["step", "status", "reason"])
    numeric = pd.to_numeric(frame["step"], errors="coerce")
    return frame.assign(_order=numeric).sort_values("_order", na_position="last").drop(columns="_order").reset_index(drop=True)


def llc_settings(results: Results) -> dict:
    """The frozen SGLD settings and calibration: ``llc_settings.json`` of the run folder, overlaid by
    the manifest's ``llc_settings`` / ``calibration`` keys. Keys: ``settings``, ``calibration``,
    ``choice`` (the sentence saying why; any may be None)."""
    out: dict[str, Any] = {"settings": None, "calibration": None, "choice": None}
    if results.path is not None:
        path = Path(results.path) / "llc_settings.json"
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                loaded = {}
            if isinstance(loaded, dict):
                out["settings"] = loaded.get("settings", out["settings"])
                out["calibration"] = loaded.get("calibration", out["calibration"])
                out["choice"] = loaded.get("choice", out["choice"])
    manifest = results.manifest if isinstance(results.manifest, dict) else {}
    section = manifest.get("llc_settings")
    if isinstance(section, dict):
        out["settings"] = section.get("settings", section if "calibration" not in section else out["settings"])
        out["calibration"] = section.get("calibration", out["calibration"])
        out["choice"] = section.get("choice", out["choice"])
    if manifest.get("calibration") is not None:
        out["calibration"] = manifest["calibration"]
    return out


# ---------------------------------------------------------------------------------------------------
# Sections


def _section(anchor: str, title: str, body: str, intro: str = "") -> str:
    intro_html = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{e(anchor)}" class="card"><h2>{e(title)}</h2>{intro_html}{body}</section>'


def header_html(results: Results, statuses: pd.DataFrame, title: str | None = None) -> str:
    m = results.metrics
    steps = sorted(set(int(s) for s in m["step"])) if len(m) else []
    stages = results.stages if results.stages is not None else pd.DataFrame()
    kinds = [F._stage_type(t) for t in stages["type"]] if "type" in stages.columns else []
    failed = int((statuses["status"] == "failed").sum())
    unhealthy = len(F.health_table(m)) if "healthy" in m.columns else 0
    facts = [
        ("Checkpoints", f"{len(steps)}" + (f" (steps {steps[0]:,} – {steps[-1]:,})" if steps else "")),
        ("Stages", f"{len(stages)}" + (" (" + ", ".join(f"{kinds.count(k)} {k}" for k in "AB-" if k in kinds) + ")"
                                       if kinds else "")),
        ("Failed checkpoints", str(failed)),
        ("Unhealthy estimates", str(unhealthy)),
    ]
    local = results.locality if len(m) else None
    if local is not None:
        facts.append(("LLC locality", f"{'ok' if local.ok else 'fails'} (slope {local.slope:.2f})"))
    manifest = results.manifest if isinstance(results.manifest, dict) else {}
    if manifest.get("config_hash"):
        facts.append(("Config hash", str(manifest["config_hash"])))

    def warned(label: str, value: str) -> bool:
        if label in ("Failed checkpoints", "Unhealthy estimates"):
            return value != "0"
        return label == "LLC locality" and value.startswith("fails")
    cards = "".join(f'<div class="fact{" warn" if warned(label, value) else ""}">'
                    f'<div class="fact-label">{e(label)}</div><div class="fact-value">{e(value)}</div></div>'
                    for label, value in facts)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<header><div class="eyebrow">devinterp · developmental stages report</div>'
            f'<h1>{e(title or results.run)}</h1><div class="sub">run {e(results.run)} · generated {e(generated)}'
            f'{" · manifest updated " + e(manifest["updated"]) if manifest.get("updated") else ""}</div>'
            f'<div class="facts">{cards}</div>{stage_legend()}</header>')


def metadata_html(results: Results, statuses: pd.DataFrame) -> str:
    manifest = results.manifest if isinstance(results.manifest, dict) else {}
    blocks = []
    for key, label in (("versions", "Library versions"), ("machine", "Machine"), ("timings", "Timings")):
        value = manifest.get(key)
        if key == "versions" and manifest.get("python"):
            value = {"python": manifest["python"], **(value if isinstance(value, dict) else {})}
        if value:
            blocks.append(f'<div class="meta-block"><h3>{e(label)}</h3>{value_html(value)}</div>')
    grid = f'<div class="meta-grid">{"".join(blocks)}</div>' if blocks else ""
    config = manifest.get("config")
    config_html = (f'<details open><summary>Configuration</summary>{value_html(config)}</details>' if config else
                   '<p class="muted">No configuration in the manifest.</p>')
    other = {k: v for k, v in manifest.items() if k not in KNOWN_KEYS}
    other_html = f'<details><summary>Other manifest entries</summary>{value_html(other)}</details>' if other else ""
    return grid + config_html + checkpoints_html(statuses) + other_html


def checkpoints_html(statuses: pd.DataFrame) -> str:
    if statuses.empty:
        return '<h3>Checkpoints</h3><p class="muted">The manifest records no checkpoint statuses.</p>'
    counts = statuses["status"].fillna("unknown").astype(str).value_counts()
    summary = ", ".join(f"{n} {e(s)}" for s, n in counts.items())
    failed = statuses[statuses["status"] == "failed"]
    if failed.empty:
        return f'<h3>Checkpoints</h3><p>{summary}. No checkpoint failed.</p>'
    table = frame_html(failed[["step", "reason"]].rename(columns={"step": "step", "reason": "reason"}), classes="data failed")
    return f'<h3>Checkpoints</h3><p>{summary}.</p><h4 class="bad">Failed checkpoints</h4>{table}'


def stages_html(results: Results) -> str:
    rows = F.stage_rows(results.stages)
    if rows.empty:
        return '<p class="na">Not available: no stages. Run detection (<code>devinterp detect</code>) to fill stages.csv.</p>'

    def cell(col: str, val: Any) -> str:
        if col == "Type":
            return type_badge(str(val))
        if col == "Confidence" and str(val).endswith("%"):
            pct = float(str(val)[:-1])
            return (f'<div class="conf"><div class="conf-bar" style="width:{pct:.0f}%"></div>'
                    f'<span>{e(val)}</span></div>')
        if col == "Heads" and val != "–":
            return " ".join(f'<code class="head">{e(h.strip())}</code>' for h in str(val).split(","))
        return e(val)

    table = locality_warning_html(results) + frame_html(rows, classes="data stages", cell=cell)
    refined = refine_frame(results.manifest if isinstance(results.manifest, dict) else {})
    if refined is not None:
        table += ('<h3>Refined boundaries</h3><p class="muted">Checkpoints were added around these boundaries '
                  '(<code>devinterp refine</code>): each row is one densified window, with the boundaries found in it '
                  'before and after and the widest of their intervals, in steps. Boundaries elsewhere may move '
                  'too, since detection reruns on the whole run; a last row lists them when they did.</p>'
                  f'{frame_html(refined)}')
    return table


def locality_warning_html(results: Results) -> str:
    """A warning above the stages when the run's LLC fails the locality check: its types and boundaries
    then follow the sampler's drift as much as the model's development. Empty when it passes."""
    local = results.locality
    if local is None or local.ok:
        return ""
    return (f'<p class="bad"><b>The LLC of this run is not a local measurement</b>: {e(local.describe())}. '
            'Read these stages with that in mind: set SGLD settings that keep the chains near w* '
            '(<code>sweep.calibrate: auto</code>, or a smaller epsilon / larger gamma) and sweep again.</p>')


def refine_frame(manifest: dict) -> pd.DataFrame | None:
    """``manifest["refine"]`` as a table: for each refined window (steps a..b), the boundaries in it
    before refinement and after, with their intervals and widths (steps), and a last row
    "elsewhere (changed)" when the boundaries outside every window differ before and after. None
    when the run was not refined."""
    info = manifest.get("refine") if isinstance(manifest, dict) else None
    if not isinstance(info, dict) or not info.get("windows"):
        return None

    def listed(items, a, b):
        inside = [x for x in items or [] if a <= x["start_step"] <= b]
        if not inside:
            return "none", "–"
        spans = []
        for x in inside:
            lo, hi = x.get("boundary_lo"), x.get("boundary_hi")
            spans.append(f"{x['start_step']:g}" + ("" if lo is None or hi is None else f" [{lo:g}–{hi:g}]"))
        widths = [x["boundary_hi"] - x["boundary_lo"] for x in inside
                  if x.get("boundary_lo") is not None and x.get("boundary_hi") is not None]
        return ", ".join(spans), (f"{max(widths):g}" if widths else "–")

    rows = []
    for a, b in info["windows"]:
        new = [s for s in info.get("new_steps", []) if a < s < b]
        before, w_before = listed(info.get("before"), a, b)
        after, w_after = listed(info.get("after"), a, b)
        rows.append({"Window (steps)": f"{a:g}–{b:g}", "New checkpoints": len(new),
                     "Boundary before [interval]": before, "Width before": w_before,
                     "Boundary after [interval]": after, "Width after": w_after})
    from devinterp.refine import outside_windows  # numpy/pandas only

    elsewhere = [outside_windows(info.get(k), info["windows"]) for k in ("before", "after")]
    if elsewhere[0] != elsewhere[1]:
        rows.append({"Window (steps)": "elsewhere (changed)", "New checkpoints": 0,
                     "Boundary before [interval]": ", ".join(map(str, elsewhere[0])) or "none", "Width before": "–",
                     "Boundary after [interval]": ", ".join(map(str, elsewhere[1])) or "none", "Width after": "–"})
    return pd.DataFrame(rows)


def diagnostics_html(results: Results, figs: _Figures, spec: F.FigureSpec) -> str:
    parts = [figs.build(spec.key, spec.make)]
    bad = F.health_table(results.metrics) if "healthy" in results.metrics.columns else pd.DataFrame()
    if len(bad):
        shown = bad.head(200)
        more = f'<p class="muted">… and {len(bad) - 200} more.</p>' if len(bad) > 200 else ""
        parts.append(f'<h3 class="bad">Estimates that failed their diagnostics ({len(bad)})</h3>'
                     f'{frame_html(shown, classes="data failed")}{more}')
    else:
        parts.append('<p>No estimate in the table failed its diagnostics.</p>')
    local = results.locality
    if local is not None:
        parts.append(f'<p class="{"" if local.ok else "bad"}"><b>Locality across checkpoints</b>: '
                     f'{html.escape(local.describe())}. The chains\' mean loss should follow L<sub>n</sub>(w*) '
                     f'from checkpoint to checkpoint (slope near 1); below {LOCALITY_MIN:g} they forget w*.</p>')
    sgld = llc_settings(results)
    if isinstance(sgld["settings"], dict) and sgld["settings"]:
        parts.append(f'<h3>SGLD settings (frozen for the sweep)</h3>{value_html(sgld["settings"])}')
    if isinstance(sgld["choice"], str) and sgld["choice"]:
        parts.append(f'<p class="choice"><b>Why these settings</b>: {html.escape(sgld["choice"])}</p>')
    calib = F.calibration_frame(sgld["calibration"])
    if calib is not None:
        table = sgld["calibration"]
        summary = (calibration_summary({"calibration": table, "settings": sgld["settings"]})
                   if isinstance(table, list) and all(isinstance(r, dict) and {"gamma", "delta"} <= r.keys()
                                                      for r in table) else [])
        if summary:  # one line per localization tried; the full table folded below it
            listed = "".join(f"<li>{html.escape(line)}</li>" for line in summary)
            parts.append(f'<h3>Calibration</h3><ul>{listed}</ul><details><summary>every run tried '
                         f'({len(calib)} rows)</summary>{frame_html(calib)}</details>')
        else:
            parts.append(f'<h3>Calibration</h3>{frame_html(calib)}')
    return "".join(parts)


def report_html(results: Results, *, title: str | None = None, step_axis: str = "auto") -> str:
    """The whole report as one HTML string (see :func:`render_report`)."""
    metrics, stages = results.metrics, results.stages
    specs = {s.key: s for s in F.report_figures(metrics, stages, step_axis=step_axis)}  # validates step_axis
    statuses = checkpoint_statuses(results.manifest if isinstance(results.manifest, dict) else {})
    figs = _Figures(filename=f"{results.run}")
    heatmaps = "".join(figs.build(k, s.make) for k, s in specs.items() if k.startswith("heatmap-"))
    sections = [
        ("run", "Run", metadata_html(results, statuses), ""),
        ("overview", "Overview", figs.build("overview", specs["overview"].make),
         "Loss, LLC and ICL score over training on one shared step axis; coloured bands are the detected stages. "
         "Hover to read every panel at a step. The buttons switch the step axis between linear and log "
         "(log by default when checkpoints span two decades or more; step 0 is then off the axis)."),
        ("heatmaps", "Per-head scores",
         heatmaps or '<p class="na">Not available: the metrics table has no per-head metrics.</p>',
         "Each row is one attention head (L&lt;layer&gt;H&lt;head&gt;, 0-based); dashed lines are stage boundaries."),
        ("explorer", "Head explorer", figs.build("explorer", specs["explorer"].make),
         "Pick a metric in the menu; click heads in the legend to show or hide them. "
         "Heads named by the stage attribution and those that change most are shown first."),
        ("stages", "Stages", stages_html(results),
         "Confidence is the share of bootstrap resamples in which the stage's start boundary reappears; "
         "heads are those that changed most over the stage, ranked."),
        ("diagnostics", "SGLD diagnostics", diagnostics_html(results, figs, specs["diagnostics"]),
         "Per-chain LLC estimates around their mean, and the health of every estimate with diagnostics."),
    ]
    if "essential-dynamics" in specs:
        sections.append(("essential-dynamics", "Essential dynamics", figs.build("essential-dynamics",
                                                                            specs["essential-dynamics"].make),
                         "PCA of the per-token held-out losses on a fixed probe set across checkpoints "
                         "(REFERENCE.md §2.3): where the smoothed trajectory turns sharply (stars), development "
                         "changes course; compare with the LLC's stage boundaries (dashed)."))
    nav = "".join(f'<a href="#{a}">{e(t)}</a>' for a, t, _, _ in sections)
    body = "".join(_section(a, t, b, intro) for a, t, b, intro in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{e(title or results.run)} · devinterp report</title><style>{CSS}</style>"
        f"<script type=\"text/javascript\">{_plotlyjs()}</script></head>"
        f"<body><nav><span class=\"brand\">devinterp</span>{nav}</nav><main>{header_html(results, statuses, title)}{body}"
        "<footer>Self-contained report: opens offline; figures are interactive (zoom, hover, legend toggles)."
        "</footer></main></body></html>\n"
    )


def _plotlyjs() -> str:
    bundle = get_plotlyjs()
    if "</script" in bundle.lower():  # never true for released bundles; guard against a broken page
        raise RuntimeError("the plotly.js bundle contains '</script'; it cannot be inlined safely")
    return bundle


def render_report(results: Results, path: str | Path, *, title: str | None = None, step_axis: str = "auto") -> Path:
    """Write the run's report to ``path`` (atomically) and return the path.

    ``title`` replaces the run name as the heading (ReportConfig.title); ``step_axis`` ("auto",
    "log" or "linear") is the initial step axis of every figure (each has a button to switch).

    Input: a :class:`~devinterp.results.Results` (metrics table; stages and manifest may be empty).
    Output: one self-contained HTML file (plotly.js inlined once, no network access needed) with the
    run metadata (config, versions, machine, timings, failed checkpoints and reasons), the overview,
    per-head heatmaps, head explorer, stages table and SGLD diagnostics. A section whose data is
    missing shows a note naming what is missing instead of failing the report.
    """
    return _io.write_text(Path(path), report_html(results, title=title, step_axis=step_axis))


CSS = """
:root{--ink:#1f2430;--muted:#6b7280;--line:#e4e7ec;--bg:#f5f6f8;--card:#fff;--accent:#7A3FB0;--bad:#c62828}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.55 Inter,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
nav{position:sticky;top:0;z-index:10;display:flex;gap:18px;align-items:center;padding:10px 28px;background:rgba(255,255,255,.92);
 backdrop-filter:blur(6px);border-bottom:1px solid var(--line);font-size:14px}
nav a{color:var(--muted);text-decoration:none}nav a:hover{color:var(--accent)}
.brand{font-weight:700;color:var(--accent);margin-right:8px}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px}
header{margin:8px 0 20px}
.eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:12px;color:var(--muted)}
h1{font-size:30px;margin:4px 0 2px;word-break:break-word}
.sub{color:var(--muted);font-size:13px}
.facts{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0 14px}
.fact{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 16px;min-width:150px}
.fact-label{font-size:12px;color:var(--muted)}.fact-value{font-size:18px;font-weight:600}
.fact.warn .fact-value{color:var(--bad)}
.stage-legend{display:flex;flex-wrap:wrap;gap:16px;align-items:center;font-size:13px}
.legend-title{font-weight:600}
.legend-item{display:inline-flex;align-items:center;gap:6px}
.swatch{display:inline-block;width:14px;height:14px;border-radius:3px;opacity:.75}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:18px 22px;margin:18px 0;
 box-shadow:0 1px 2px rgba(16,24,40,.04)}
h2{font-size:20px;margin:0 0 6px}h3{font-size:15px;margin:18px 0 8px}h4{font-size:14px;margin:12px 0 6px}
.intro{color:var(--muted);margin:0 0 10px;font-size:14px}
.plot{width:100%;margin:6px 0 14px}
.na{color:var(--muted);font-style:italic}.muted{color:var(--muted)}.bad{color:var(--bad)}
.meta-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:14px}
.meta-block h3{margin-top:0}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:13px}
table.data{width:100%}
table.data th{text-align:left;background:#f0f2f5;font-weight:600;padding:7px 10px;border-bottom:1px solid var(--line)}
table.data td{padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
table.data tbody tr:nth-child(even){background:#fafbfc}
table.kv th{text-align:left;font-weight:500;color:var(--muted);padding:3px 14px 3px 0;vertical-align:top;white-space:nowrap}
table.kv td{padding:3px 0;word-break:break-word}
table.kv.nested{font-size:12px}
table.failed td{color:#7f1d1d}
details{margin:12px 0}summary{cursor:pointer;font-weight:600}
.badge{display:inline-block;min-width:22px;text-align:center;color:#fff;font-weight:700;border-radius:5px;padding:0 6px}
.conf{position:relative;min-width:90px;height:20px;background:#eef0f3;border-radius:4px;overflow:hidden}
.conf-bar{position:absolute;left:0;top:0;bottom:0;background:#a7c4e8}
.conf span{position:relative;padding-left:6px;font-size:12px;line-height:20px}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code.head{background:#f0ebf7;color:#5b2d8a;border-radius:4px;padding:1px 5px;margin-right:2px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:30px}
"""

__all__ = ["render_report", "report_html", "checkpoint_statuses", "llc_settings", "refine_frame", "script_json"]
