"""The report's static figures, rendered to PNG: maps per period and the diagnostics.

Each figure is a :class:`RenderedFigure`: the section it belongs to, a title, a caption, the
base64 PNG and, for a map, what its furniture is (:func:`cartography.map_annotations`: the
scale bar's label, the north arrow, the colour bars' tick labels), read from the Figure itself
before it is rendered and closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..evaluation.metrics import expected_calibration_error, reliability_curve
from .inputs import ReportInputs


class RenderedFigure(NamedTuple):
    section: str
    title: str
    caption: str
    png: str
    marks: dict[str, Any] | None = None  # a static map's furniture; None for other figures


class _FigureList(list):
    """A list that reports each rendered figure to a callback (for the progress bar)."""

    def __init__(self, on_add: Callable[[str], None] | None) -> None:
        super().__init__()
        self._on_add = on_add

    def append(self, item: RenderedFigure) -> None:
        super().append(item)
        if self._on_add is not None:
            self._on_add(item.title)

    def add(self, section: str, title: str, caption: str, fig, is_map: bool = False) -> None:
        """Render ``fig`` (a matplotlib Figure) and append it; a map's marks are read first."""
        from .cartography import map_annotations
        from .figures import to_png_base64

        marks = map_annotations(fig) if is_map else None
        self.append(RenderedFigure(section, title, caption, to_png_base64(fig), marks))


_MAP_FURNITURE = " Scale bar and north arrow (grid north) on the first panel."


def render_figures(
    data: ReportInputs, on_figure: Callable[[str], None] | None = None
) -> list[RenderedFigure]:
    """Every figure of the report, in page order; ``on_figure(title)`` after each."""
    out = _FigureList(on_figure)
    _quantity_maps(data, out)
    _error_maps(data, out)
    _diagnostics(data, out)
    return out


def _quantity_maps(data: ReportInputs, out: _FigureList) -> None:
    """Hazard, susceptibility, predicted and observed density, uncertainty: a map per period."""
    from matplotlib import colors as mcolors

    from . import figures as fg
    from .cartography import DENSITY_FLOOR, log_norm

    names, tr, crs = data.names, data.transform, data.crs_name
    dens_like = [data.observed] + ([data.density] if data.density is not None else [])
    dnorm = log_norm(np.concatenate([a.ravel() for a in dens_like]))

    def panels(stack, cmap, norm, label, title, extend="neither"):
        return fg.map_panels(
            stack, names, tr, crs, fg.ColourScale(cmap, norm, label, extend), title
        )

    if data.hazard is not None:
        out.add(
            "maps",
            "Hazard",
            f"Hazard = expected new failed area per cell and period "
            f"(% of the cell; {data.hazard_source}); log colour scale, values at or "
            f"below {DENSITY_FLOOR} % in the darkest colour; white = no data." + _MAP_FURNITURE,
            panels(
                data.hazard,
                "cividis",
                log_norm(data.hazard),
                "hazard, %",
                "Hazard (expected new failed area)",
                extend="both",
            ),
            is_map=True,
        )
    out.add(
        "maps",
        "Susceptibility",
        "Probability of at least one new landslide in the cell and period." + _MAP_FURNITURE,
        panels(
            data.susceptibility,
            "viridis",
            mcolors.Normalize(0, 1),
            "susceptibility (probability)",
            "Susceptibility",
        ),
        is_map=True,
    )
    if data.density is not None:
        out.add(
            "maps",
            "Predicted density",
            "Predicted new failed area, % of the cell (same log scale as the observed maps)."
            + _MAP_FURNITURE,
            panels(data.density, "magma", dnorm, "density, %", "Predicted area density", "both"),
            is_map=True,
        )
    out.add(
        "maps",
        "Observed density",
        "Observed new failed area (inventory), % of the cell." + _MAP_FURNITURE,
        panels(data.observed, "magma", dnorm, "density, %", "Observed area density", "both"),
        is_map=True,
    )
    if data.uncertainty is not None:
        _uncertainty_map(data, out, panels)


def _uncertainty_map(data: ReportInputs, out: _FigureList, panels) -> None:
    from matplotlib import colors as mcolors

    meta = data.uncertainty_meta
    what = data.uncertainty_label
    how = f" Made by {meta['method']}." if meta.get("method") else ""
    epistemic = (
        " It measures how much the fitted model itself could differ (epistemic), not the "
        "randomness of occurrence; read it next to the mean (docs/uncertainty.md)."
        if meta.get("statistic") == "standard deviation"
        else ""
    )
    uncertainty = data.uncertainty
    if uncertainty is None:
        return
    unorm = mcolors.Normalize(0, float(np.nanpercentile(uncertainty, 99.5)))
    out.add(
        "maps",
        "Uncertainty",
        f"Predictive uncertainty written by the run: the {what}.{how}{epistemic}" + _MAP_FURNITURE,
        panels(uncertainty, "cividis", unorm, what, "Uncertainty"),
        is_map=True,
    )


def _error_maps(data: ReportInputs, out: _FigureList) -> None:
    """Confusion maps at the report threshold and density residuals (paper Figs. 8 and 9)."""
    from . import figures as fg

    t, names, tr, crs = data.threshold, data.names, data.transform, data.crs_name
    classes = fg.confusion_classes(data.observed, data.susceptibility, t, data.min_density)
    out.add(
        "confusion",
        "Confusion maps",
        "True/false positives and negatives per cell at "
        f"threshold {t:.3g} (paper Fig. 8); insets count the cells on a log scale."
        + _MAP_FURNITURE,
        fg.confusion_maps(classes, names, tr, crs, t),
        is_map=True,
    )
    if data.density is not None:
        out.add(
            "residuals",
            "Residuals",
            "Observed minus predicted density (paper Fig. 9); "
            "symmetric log scale, linear within +-0.1 %." + _MAP_FURNITURE,
            fg.residual_maps(data.observed - data.density, names, tr, crs),
            is_map=True,
        )


def _diagnostics(data: ReportInputs, out: _FigureList) -> None:
    """ROC / PR, reliability, predicted vs observed, susceptibility vs density, metric bars."""
    from . import figures as fg

    names = data.names
    valid = np.isfinite(data.observed) & np.isfinite(data.susceptibility)
    ys = [(data.observed[i][valid[i]] > data.min_density).astype(float) for i in range(len(names))]
    ss = [data.susceptibility[i][valid[i]] for i in range(len(names))]
    out.add(
        "curves",
        "ROC and precision-recall",
        "Per period (colours, early = dark) and pooled (black).",
        fg.roc_pr_figure(ys, ss, names),
    )
    y_all, s_all = np.concatenate(ys), np.concatenate(ss)
    if s_all.size and s_all.min() >= 0 and s_all.max() <= 1:
        curve = reliability_curve(y_all, s_all)
        out.add(
            "curves",
            "Reliability",
            "Observed frequency of occurrence against the "
            "predicted probability, 15 equal-width bins, pooled.",
            fg.reliability_figure(curve, expected_calibration_error(y_all, s_all)),
        )
    if data.density is not None or data.hazard is not None:
        out.add(
            "scatter",
            "Predicted vs observed",
            "Hexagonal bins with log counts; dashed: 1:1 (paper Fig. 7, right).",
            fg.density_scatter_figure(data.observed, data.density, data.hazard),
        )
    if data.density is not None:
        out.add(
            "scatter",
            "Susceptibility vs density",
            "Smoothed 2-D density of cells "
            "over predicted susceptibility and predicted density per period (paper "
            "Fig. 11).",
            fg.susceptibility_density_kde(data.susceptibility, data.density, names),
        )
    out.add(
        "bars",
        "Metrics per period",
        "Occurrence scores at the report threshold; "
        "Pearson r and MAE of density and hazard on all and on positive cells.",
        fg.metric_bars(data.metrics["periods"], names),
    )
