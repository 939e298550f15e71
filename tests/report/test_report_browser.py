"""The report in a real browser: Debian's Chromium driven by Playwright's Python package.

Skips when either is missing (CI: ``apt-get install chromium`` and ``pip install playwright``; never
``playwright install``: the system Chromium is used). The page is opened from file:// with every
non-file request recorded, so a report that reaches for the network fails here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devinterp.report import render_report
from devinterp.results import Results

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("DEVINTERP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DEVINTERP_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A report opened in the browser, with the console errors, dialogs and non-file requests it caused."""

    def __init__(self, browser, path: Path):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.remote: list[str] = []
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:")) else self.remote.append(r.url))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_function("document.querySelectorAll('.plot').length === "
                                    "document.querySelectorAll('.plot.js-plotly-plot').length", timeout=20_000)

    def figure(self, name: str, expr: str):
        """Evaluate ``expr`` with ``gd`` bound to the graph div of figure ``name``."""
        return self.page.evaluate(f"(() => {{ const gd = document.querySelector('[data-figure=\"{name}\"]'); "
                                  f"return {expr}; }})()")


@pytest.fixture(scope="module")
def hoogland_page(browser, hoogland, tmp_path_factory):
    path = render_report(hoogland, tmp_path_factory.mktemp("browser") / "report.html")
    page = Page(browser, path)
    yield page
    page.page.close()


def test_report_loads_offline_without_errors(hoogland_page):
    assert hoogland_page.errors == []
    assert hoogland_page.remote == []
    names = hoogland_page.page.evaluate("[...document.querySelectorAll('.plot')].map(d => d.dataset.figure)")
    assert names == ["overview", "heatmap-0", "heatmap-1", "explorer", "diagnostics"]


def test_overview_renders_its_traces_and_stage_bands(hoogland_page):
    traces = hoogland_page.figure("overview", "gd._fullData.map(t => t.name)")
    assert {"loss", "train_loss", "llc", "icl_score"} <= set(traces)
    rects = hoogland_page.figure("overview", "gd._fullLayout.shapes.filter(s => s.type === 'rect').length")
    assert rects == 5
    # the bands are drawn: one path per shape in the SVG shape layers
    drawn = hoogland_page.figure("overview", "gd.querySelectorAll('.shapelayer path').length")
    assert drawn == 5
    labels = hoogland_page.figure("overview", "[...gd.querySelectorAll('.annotation-text')].map(a => a.textContent)")
    assert labels == ["1", "2", "3", "4", "5"]


def test_step_axis_buttons_switch_between_log_and_linear(hoogland_page):
    assert hoogland_page.figure("overview", "gd._fullLayout.xaxis.type") == "log"
    buttons = hoogland_page.page.query_selector_all('[data-figure="overview"] .updatemenu-button')
    assert len(buttons) == 2
    buttons[0].click()
    hoogland_page.page.wait_for_timeout(200)
    assert hoogland_page.figure("overview", "gd._fullLayout.xaxis.type") == "linear"
    assert hoogland_page.figure("overview", "gd._fullLayout.xaxis.range[0]") <= 100
    buttons[1].click()
    hoogland_page.page.wait_for_timeout(200)
    assert hoogland_page.figure("overview", "gd._fullLayout.xaxis.type") == "log"
    assert hoogland_page.errors == []


def test_heatmaps_and_explorer_render(hoogland_page):
    assert hoogland_page.figure("heatmap-0", "gd._fullData[0].type") == "heatmap"
    assert hoogland_page.figure("heatmap-0", "gd._fullData[0].z.length") == 16
    visible = hoogland_page.figure("explorer", "gd._fullData.filter(t => t.visible === true).map(t => t.name)")
    assert {"L1H6", "L1H7"} <= set(visible)


def test_a_hostile_run_name_is_shown_as_text_and_runs_nothing(browser, tmp_path, hoogland):
    evil = "<script>alert(1)</script>"
    results = Results(hoogland.metrics.assign(run=evil), hoogland.stages,
                      {"run": evil, "config": {"x": "</script><script>alert(2)</script>"}})
    page = Page(browser, render_report(results, tmp_path / "evil.html"))
    try:
        assert page.dialogs == [] and page.errors == []
        assert page.page.inner_text("h1") == evil
        assert "</script><script>alert(2)</script>" in page.page.inner_text("#run")
    finally:
        page.page.close()


def _serve(tmp_path, metrics, stages):
    """Serve the Dash app over one run on a free loopback port; yields its URL."""
    pytest.importorskip("dash", reason="the dashboard needs the optional 'dash' package")
    import threading

    from werkzeug.serving import make_server

    from devinterp.report.app import create_app

    run = tmp_path / "runs" / "syn"
    run.mkdir(parents=True)
    metrics.to_csv(run / "metrics.csv", index=False)
    stages.to_csv(run / "stages.csv", index=False)
    server = make_server("127.0.0.1", 0, create_app(run.parent).server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def dash_server(tmp_path, synthetic):
    yield from _serve(tmp_path, synthetic.metrics, synthetic.stages)


@pytest.fixture
def dash_server_one_stage(tmp_path, synthetic):
    """The synthetic run with a saved stages table of one stage spanning the whole run."""
    one = synthetic.stages.iloc[:1].copy()
    one["end_step"] = synthetic.stages["end_step"].max()
    one["type"] = "-"
    yield from _serve(tmp_path, synthetic.metrics, one)


OVERVIEW_BANDS = ("(() => { const gd = document.querySelector('#overview .js-plotly-plot');"
                  " return gd && gd._fullLayout ? gd._fullLayout.shapes.length : -1; })()")


def _wait_for_bands(page, condition: str, timeout: int = 30_000) -> int:
    """Wait until the app's overview has drawn stage bands whose count n satisfies ``condition``
    (a JS expression in n, e.g. 'n === 4'); return that count."""
    page.wait_for_function(f"(() => {{ const n = {OVERVIEW_BANDS}; return n >= 0 && ({condition}); }})()",
                           timeout=timeout)
    return page.evaluate(OVERVIEW_BANDS)


def test_dash_app_answers_a_control_change_with_new_stage_bands(browser, dash_server_one_stage):
    """Switching from the saved stages (one band) to live re-detection redraws the bands."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(dash_server_one_stage)
        assert _wait_for_bands(page, "n === 1") == 1
        page.get_by_text("re-detect").click()
        assert _wait_for_bands(page, "n > 1", timeout=60_000) > 1  # the planted run has several stages
        assert errors == []
    finally:
        page.close()


def test_dash_app_renders_and_a_click_shows_the_stage_heads(browser, dash_server):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(dash_server)
        assert _wait_for_bands(page, "n === 4") == 4
        # click the middle of the overview's plot area: the stage holding that step shows its heads
        box = page.locator("#overview .nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.wait_for_function("document.querySelector('#stage-heads').textContent.startsWith('Stage ')",
                               timeout=15_000)
        assert "Stage" in page.inner_text("#stage-heads")
        assert errors == []
    finally:
        page.close()
