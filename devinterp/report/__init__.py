"""Figures and reports built from the tables of a run (never imports torch).

``render_report(results, path)`` writes the standalone HTML report; the figure functions are the
only place figures are built (the report, the Dash app and PNG export all call them).
"""

from devinterp.report.figures import (
    STAGE_COLORS,
    STAGE_LABELS,
    MissingData,
    add_stage_bands,
    add_step_axis_toggle,
    calibration_table_figure,
    diagnostics_figure,
    head_explorer_figure,
    head_heatmap_figure,
    overview_figure,
    stage_rows,
    stages_table_figure,
)
from devinterp.report.html import render_report, report_html

__all__ = [
    "render_report", "report_html", "overview_figure", "head_heatmap_figure", "head_explorer_figure",
    "stages_table_figure", "diagnostics_figure", "calibration_table_figure", "add_stage_bands",
    "add_step_axis_toggle", "stage_rows", "MissingData", "STAGE_COLORS", "STAGE_LABELS",
]
