"""The report stage: one self-contained ``report.html`` from a run or an evaluation folder.

Reading the inputs is :mod:`.inputs`, the viewer's data :mod:`.viewer_data`, the figures
:mod:`.render` (drawn by :mod:`.figures` and :mod:`.cartography`) and the HTML pieces
:mod:`.sections`; this module assembles the page. Images are embedded as base64 PNG, CSS and JS
inline: the page works offline and loads nothing from the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..run import REPORT_FILE
from .inputs import ReportInputs, load_report_inputs
from .render import render_figures
from .sections import (
    calibration_note,
    cards,
    density_table,
    figure_html,
    fmt,
    limitations,
    notes,
    occurrence_table,
)
from .viewer_data import MAX_VIEWER_CELLS, block_mean, viewer_payload

ASSETS = Path(__file__).resolve().parent

__all__ = [
    "ASSETS",
    "MAX_VIEWER_CELLS",
    "REPORT_FILE",
    "ReportInputs",
    "block_mean",
    "build_report",
    "cards",
    "load_report_inputs",
    "render_html",
    "viewer_payload",
]


def render_html(
    data: ReportInputs,
    max_viewer_cells: int = MAX_VIEWER_CELLS,
    on_figure: Callable[[str], None] | None = None,
) -> str:
    """The whole page as one string (no external resource)."""
    figs = render_figures(data, on_figure)
    payload = viewer_payload(data, max_viewer_cells)

    def section_figs(sid: str) -> str:
        return "".join(
            figure_html(f.png, f"<b>{html.escape(f.title)}.</b> {f.caption}", f.title, f.marks)
            for f in figs
            if f.section == sid
        )

    sections = [
        ("summary", "Summary", _summary(data)),
        ("viewer", "Interactive map", _viewer_section(payload["grid"]["factor"])),
        ("maps", "Maps per period", section_figs("maps")),
        ("confusion", "Confusion maps", section_figs("confusion")),
        (
            "residuals",
            "Residual maps",
            section_figs("residuals") or "<p class='note'>No density map: no residuals.</p>",
        ),
        ("curves", "ROC, PR and reliability", section_figs("curves")),
        (
            "scatter",
            "Predicted vs observed",
            section_figs("scatter") or "<p class='note'>No density map.</p>",
        ),
        ("bars", "Metrics per period", section_figs("bars")),
        ("table", "Metrics table", _table_section(data.metrics)),
        ("limits", "Limitations", limitations(data)),
    ]
    return _page(data, sections, payload)


def _summary(data: ReportInputs) -> str:
    m = data.metrics
    h, w = data.observed.shape[1:]
    cell_km = abs(data.transform[0]) / 1000
    return f"""
<p class="lead">{len(data.names)} periods on a {h} x {w} grid of {cell_km:g} km cells
({html.escape(data.crs_name)}); {fmt(m["pooled"]["occurrence"]["n"])} cell-periods with data,
{fmt(m["pooled"]["occurrence"]["n_positive"])} with new failures (observed density &gt;
{data.min_density:g} %). Threshold {fmt(m.get("threshold"))}
({html.escape(str(m.get("threshold_source")))}). Metrics: {html.escape(data.metrics_source)}.</p>
{cards(m)}"""


def _viewer_section(factor: int) -> str:
    return f"""
<p class="lead">Pick a layer and a period; drag to pan, scroll (or +/-) to zoom, hover to read a
cell, click to pin it, arrow keys step through periods.{
        " Shown at " + str(factor) + " x " + str(factor) + " block means." if factor > 1 else ""
    }</p>
<div class="viewer"><div>
<div class="viewer-controls"><div id="viewer-layers" role="group" aria-label="layer"></div></div>
<div class="viewer-controls"><button type="button" id="viewer-prev" aria-label="previous period">&#9664;</button>
<select id="viewer-period" aria-label="period"></select>
<button type="button" id="viewer-next" aria-label="next period">&#9654;</button>
<input type="range" id="viewer-period-range" min="0" value="0" step="1" aria-label="period slider">
<button type="button" id="viewer-zoom-in" aria-label="zoom in">+</button>
<button type="button" id="viewer-zoom-out" aria-label="zoom out">&minus;</button>
<button type="button" id="viewer-reset">fit</button></div>
<div class="canvas-wrap"><canvas id="viewer-canvas" tabindex="0" aria-label="map"></canvas></div>
<div id="viewer-legend"></div></div>
<div><div id="viewer-readout"></div>
<p class="help">Values are stored as 16-bit floats (about 3 significant digits). Confusion and
residual layers are computed in the page from the observed, susceptibility and density layers.</p>
</div></div>"""


def _table_section(m: dict[str, Any]) -> str:
    rows = [(p["name"], p) for p in m["periods"]] + [("pooled", m["pooled"])]
    fold_rows = [
        (f"fold {f['fold']}" + (f" ({f['label']})" if f.get("label") else ""), f)
        for f in m.get("folds") or []
    ]
    if isinstance(m.get("held_out"), dict):
        fold_rows += [(f"held out: {p['name']}", p) for p in m["held_out"]["periods"]]
        fold_rows.append(("held out: pooled", m["held_out"]["pooled"]))
    return f"""
<h3>Occurrence</h3>{occurrence_table(rows)}
{"<h3>Density and hazard</h3>" + density_table(rows) if m["pooled"].get("density") or m["pooled"].get("hazard") else ""}
<p class="note">D: density, H: hazard; +: cells with observed density &gt; 0; r: Pearson, &rho;:
Spearman. Pooled = every cell of every period together. Definitions: docs/metrics.md.</p>
{("<h3>Per fold / held out</h3>" + occurrence_table(fold_rows)) if fold_rows else ""}
{calibration_note(m)}
{notes(m)}"""


def _page(data: ReportInputs, sections: list[tuple[str, str, str]], payload: dict[str, Any]) -> str:
    from .. import __version__

    payload_json = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    css = (ASSETS / "report.css").read_text()
    js = (ASSETS / "viewer.js").read_text()
    inputs = "".join(
        f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in data.paths.items()
    )
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
        for sid, title, content in sections
    )
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()}'; base-uri 'none'; form-action 'none'">
<title>Landslide hazard report: {html.escape(data.directory.name or str(data.directory))}</title>
<style>{css}</style></head>
<body>
<header class="top"><h1>Space-time landslide hazard report</h1>
<p>{html.escape(str(data.directory.resolve()))} &middot; {len(data.names)} periods:
{html.escape(", ".join(data.names))}</p></header>
<nav class="toc">{nav}</nav>
<main>{body}
<section id="inputs"><h2>Inputs</h2><ul>{inputs}</ul></section></main>
<footer>landslide-hazard {__version__} &middot; generated {created} &middot; self-contained:
no network access needed.</footer>
<script type="application/json" id="viewer-data">{payload_json}</script>
<script>{js}</script>
</body></html>
"""


def build_report(
    directory: str | Path,
    max_viewer_cells: int = MAX_VIEWER_CELLS,
    show_progress: bool = False,
) -> Path:
    """Write ``directory/report.html`` (atomically) and return its path.

    ``max_viewer_cells`` caps the interactive viewer's grid (larger maps are shown as block
    means); ``show_progress`` draws a progress bar on stderr while the figures render.
    """
    from ..io import atomic_write_text

    directory = Path(directory)
    data = load_report_inputs(directory)
    out = directory / REPORT_FILE
    if not show_progress:
        atomic_write_text(out, render_html(data, max_viewer_cells))
        return out
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..streams import log_console

    with Progress(
        TextColumn("report: {task.description}"),
        BarColumn(),
        TextColumn("{task.completed} figures"),
        TimeElapsedColumn(),
        console=log_console(),
        transient=True,
    ) as progress:
        task = progress.add_task("rendering figures", total=None)

        def on_figure(title: str) -> None:
            progress.update(task, advance=1, description=f"rendered {title}")

        html_text = render_html(data, max_viewer_cells, on_figure)
    atomic_write_text(out, html_text)
    return out
