"""PNG/SVG export of the report's figures (devinterp.report.export) and `devinterp report --png/--svg`.

The tests that render start a real Chromium through kaleido (about 6 s per browser start); they are
skipped, with the reason, where kaleido or a browser is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devinterp import cli
from devinterp.report import export
from devinterp.report import figures as F
from devinterp.report.export import ExportError, export_figures
from devinterp.report.synthetic import synthetic_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _browser_or_none() -> str | None:
    try:
        return export.find_browser()
    except ExportError:
        return None


needs_renderer = pytest.mark.skipif(
    importlib.util.find_spec("kaleido") is None or _browser_or_none() is None,
    reason="figure export needs kaleido (pip install 'devinterp-phases[export]') and a Chromium browser "
           "(apt-get install chromium, or set DEVINTERP_CHROMIUM)")


@pytest.fixture(scope="module")
def small_run():
    """30 checkpoints, 1 layer x 4 heads, 2 chains: every figure of the report, rendered quickly."""
    return synthetic_run(n_checkpoints=30, n_layers=1, n_heads=4, chains=2)


def _write_run_dir(path: Path, results) -> Path:
    path.mkdir(parents=True)
    results.metrics.to_csv(path / "metrics.csv", index=False)
    results.stages.to_csv(path / "stages.csv", index=False)
    (path / "manifest.json").write_text(json.dumps(results.manifest))
    return path


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


EXPECTED_NAMES = ["overview", "heatmap-prev_token", "heatmap-induction", "heatmap-duplicate_token",
                  "heatmap-head_llc", "explorer-prev_token", "explorer-induction", "explorer-duplicate_token",
                  "explorer-head_llc", "diagnostics"]


# --------------------------------------------------------------------------------------------------
# Without a browser


def test_static_figure_list_is_the_reports_with_one_explorer_per_metric(small_run):
    report = [s.key for s in F.report_figures(small_run.metrics, small_run.stages)]
    assert report == ["overview", "heatmap-0", "heatmap-1", "heatmap-2", "heatmap-3", "explorer", "diagnostics"]
    static = F.report_figures(small_run.metrics, small_run.stages, static=True)
    assert [s.name for s in static] == EXPECTED_NAMES


def test_static_figure_drops_buttons_and_hidden_traces(small_run):
    fig = F.head_explorer_figure(small_run.metrics, small_run.stages, metric_names=["induction"], highlight=["L0H1"])
    assert fig.layout.updatemenus and any(t.visible == "legendonly" for t in fig.data)
    out = F.static_figure(fig, width=900)
    assert not out.layout.updatemenus and out.layout.width == 900
    assert not any(t.visible == "legendonly" for t in out.data)
    assert "click" not in (out.layout.legend.title.text or "")
    assert fig.layout.updatemenus  # the original is untouched


def test_file_stem_is_safe():
    assert F.file_stem("head_llc") == "head_llc"
    assert F.file_stem("../a b/<c>") == "a_b_c"
    assert F.file_stem("///") == "figure"


def test_unknown_format_is_refused(small_run, tmp_path):
    with pytest.raises(ValueError, match="png"):
        export_figures(small_run, tmp_path, formats=("jpg",))


def test_no_browser_raises_export_error_naming_the_package(small_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_kaleido", lambda: object())
    monkeypatch.setattr(export, "find_browser", lambda: None)
    with pytest.raises(ExportError, match="apt-get install chromium"):
        export_figures(small_run, tmp_path / "figures")
    assert not (tmp_path / "figures").exists()


def test_no_kaleido_raises_export_error_naming_the_package(small_run, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "kaleido", None)  # import kaleido -> ImportError
    with pytest.raises(ExportError, match="pip install kaleido"):
        export_figures(small_run, tmp_path / "figures", formats=("svg",))


def test_browser_from_environment(tmp_path, monkeypatch):
    exe = tmp_path / "my-chrome"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("DEVINTERP_CHROMIUM", str(exe))
    assert export.find_browser() == str(exe)
    monkeypatch.setenv("DEVINTERP_CHROMIUM", str(tmp_path / "absent"))
    with pytest.raises(ExportError, match="DEVINTERP_CHROMIUM"):
        export.find_browser()


def test_cli_without_browser_still_writes_the_html_and_exits_2(small_run, tmp_path, monkeypatch, capsys):
    run_dir = _write_run_dir(tmp_path / "synthetic", small_run)
    monkeypatch.setattr(export, "_kaleido", lambda: object())
    monkeypatch.setattr(export, "find_browser", lambda: None)
    assert cli.main(["-q", "report", str(run_dir), "--png", "--svg"]) == 2
    assert (run_dir / "report.html").is_file() and (run_dir / "report.html").stat().st_size > 100_000
    err = capsys.readouterr().err
    assert "apt-get install chromium" in err and "HTML report was written" in err
    assert not (run_dir / "figures").exists()


def test_cli_without_flags_exports_nothing(small_run, tmp_path, monkeypatch):
    run_dir = _write_run_dir(tmp_path / "synthetic", small_run)
    monkeypatch.setattr(export, "export_figures", lambda *a, **k: pytest.fail("export without --png/--svg"))
    assert cli.main(["-q", "report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file() and not (run_dir / "figures").exists()


# --------------------------------------------------------------------------------------------------
# With kaleido and a browser


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "figures"
    return folder, export_figures(small_run, folder, formats=("png", "svg"), scale=2)


@pytest.mark.slow
@needs_renderer
def test_export_writes_every_figure_as_png_and_svg(exported, small_run):
    folder, paths = exported
    specs = F.report_figures(small_run.metrics, small_run.stages, static=True)
    heights = {s.name: s.make().layout.height for s in specs}
    assert [p.name for p in paths] == [f"{n}.{fmt}" for n in EXPECTED_NAMES for fmt in ("png", "svg")]
    assert sorted(os.listdir(folder)) == sorted(p.name for p in paths)  # no temp files left
    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".png":
            width, height = png_size(data)
            assert width == 2 * export.DEFAULT_WIDTH, path.name  # scale 2 of the 1000 px default width
            assert height == 2 * heights[path.stem] and 300 <= height <= 3000, (path.name, height)
        else:
            root = ET.fromstring(data)
            assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), path.name
            assert float(root.get("width")) == export.DEFAULT_WIDTH


@pytest.mark.slow
@needs_renderer
def test_cli_report_with_png_writes_html_then_figures(small_run, tmp_path, capsys):
    run_dir = _write_run_dir(tmp_path / "synthetic", small_run)
    out = tmp_path / "paper-figures"
    assert cli.main(["-q", "report", str(run_dir), "--svg", "--figures-dir", str(out)]) == 0
    assert (run_dir / "report.html").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.svg" for n in EXPECTED_NAMES)
    assert f"figures: {len(EXPECTED_NAMES)} files in {out}" in capsys.readouterr().out
