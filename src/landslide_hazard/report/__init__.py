"""The report stage: one self-contained HTML page of maps, plots, tables and a map viewer."""

from .build import REPORT_FILE, ReportInputs, build_report, load_report_inputs, render_html

__all__ = ["REPORT_FILE", "ReportInputs", "build_report", "load_report_inputs", "render_html"]
