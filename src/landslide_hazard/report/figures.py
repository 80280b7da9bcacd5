"""Matplotlib figures of the report: arrays in, a Figure out (no file I/O here).

Every map is drawn on the real CRS (axes in km of easting / northing) with a scale bar, a north
arrow and a colour bar with labelled ticks (:mod:`.cartography`); colour maps read in grayscale
(viridis, cividis, magma; a diverging map only for signed residuals, whose magnitude still reads
in grayscale).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from ..evaluation.metrics import pr_curve_points, roc_curve_points  # noqa: E402
from .cartography import (  # noqa: E402
    NODATA_FACE,
    colorbar_ticks,
    grid_layout,
    map_extent_km,
    panel_size,
    style_map_axes,
)

# confusion classes, ordered by lightness so that they read in grayscale
CONFUSION_CLASSES = ("TN", "FP", "FN", "TP")
CONFUSION_COLORS = ("#d9d9d9", "#fdae61", "#c2262b", "#1f2a6b")
CONFUSION_LABELS = {
    "TN": "true negative",
    "FP": "false positive",
    "FN": "false negative",
    "TP": "true positive",
}

plt.rcParams.update(
    {
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": 100,
    }
)


def to_png_base64(fig: Figure, dpi: int = 96) -> str:
    """Render a figure to a base64 PNG string and close it."""
    buf = io.BytesIO()
    # every figure uses the constrained layout, so no second "tight" draw is needed
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass(frozen=True)
class ColourScale:
    """How a map's values become colours: the colour map, the normalisation, the colour bar's
    label and its ``extend`` arrows, and the colour of cells without data."""

    cmap: str
    norm: mcolors.Normalize
    label: str
    extend: str = "neither"
    nodata_face: str = NODATA_FACE


def map_panels(
    stack: np.ndarray,
    names: Sequence[str],
    transform: Sequence[float],
    crs_name: str,
    scale: ColourScale,
    suptitle: str,
) -> Figure:
    """Small multiples of a (period, y, x) stack with one shared colour bar.

    With a LogNorm, values at or below its vmin (zeros included) take the lowest colour.
    """
    cmap, norm, nodata_face = scale.cmap, scale.norm, scale.nodata_face
    n = stack.shape[0]
    rows, cols = grid_layout(n)
    pw, ph = panel_size(stack.shape[1:])
    fig, axes = plt.subplots(
        rows, cols, figsize=(pw * cols + 0.9, ph * rows + 0.5), squeeze=False, layout="constrained"
    )
    extent = map_extent_km(transform, stack.shape[1:])
    cm = plt.get_cmap(cmap).with_extremes(bad=nodata_face)
    if isinstance(norm, mcolors.LogNorm):
        cm = cm.with_extremes(under=cm(0.0))
        # LogNorm masks values <= 0 as invalid: lift them below vmin so they draw as "under"
        floor = norm.vmin * 0.5 if norm.vmin is not None else np.nan  # vmin None: autoscaled
        stack = np.where(np.isfinite(stack), np.maximum(stack, floor), np.nan)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        image = ax.imshow(stack[i], extent=extent, cmap=cm, norm=norm, interpolation="nearest")
        style_map_axes(ax, extent, crs_name, i == 0, names[i])
        ax.set_facecolor(nodata_face)
    if image is None:
        raise ValueError("map_panels: no period to draw")
    cbar = fig.colorbar(image, ax=axes, shrink=0.8, extend=scale.extend, pad=0.01)
    ticks, labels = colorbar_ticks(norm)
    cbar.set_ticks(ticks, labels=labels)
    cbar.set_label(scale.label)
    fig.suptitle(suptitle, fontsize=11)
    return fig


def confusion_classes(
    observed: np.ndarray, susceptibility: np.ndarray, threshold: float, min_density: float = 0.0
) -> np.ndarray:
    """Per cell 0 = TN, 1 = FP, 2 = FN, 3 = TP (float, NaN where an input is NaN)."""
    y = observed > min_density
    p = susceptibility >= threshold
    cls = np.where(y, np.where(p, 3.0, 2.0), np.where(p, 1.0, 0.0))
    cls[~(np.isfinite(observed) & np.isfinite(susceptibility))] = np.nan
    return cls


def confusion_maps(
    classes: np.ndarray,
    names: Sequence[str],
    transform: Sequence[float],
    crs_name: str,
    threshold: float,
) -> Figure:
    """Fig. 8 of the paper: TP/FP/FN/TN per cell and period, with log-count insets."""
    n = classes.shape[0]
    rows, cols = grid_layout(n)
    pw, ph = panel_size(classes.shape[1:])
    fig, axes = plt.subplots(
        rows,
        2 * cols,
        figsize=((pw + 0.8) * cols, ph * rows + 0.8),
        squeeze=False,
        width_ratios=[1.0, 0.22] * cols,
        layout="constrained",
    )
    extent = map_extent_km(transform, classes.shape[1:])
    cm = mcolors.ListedColormap(CONFUSION_COLORS).with_extremes(bad=NODATA_FACE)
    for i in range(rows * cols):
        ax, bar_ax = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        if i >= n:
            ax.set_visible(False)
            bar_ax.set_visible(False)
            continue
        ax.imshow(classes[i], extent=extent, cmap=cm, vmin=-0.5, vmax=3.5, interpolation="nearest")
        style_map_axes(ax, extent, crs_name, i == 0, names[i])
        counts = [int(np.sum(classes[i] == k)) for k in range(4)]
        bar_ax.bar(
            range(4),
            [max(c, 0.8) for c in counts],
            color=CONFUSION_COLORS,
            edgecolor="#444",
            lw=0.4,
            log=True,
        )
        bar_ax.set_xticks(range(4), CONFUSION_CLASSES, fontsize=6, rotation=90)
        bar_ax.tick_params(axis="y", labelsize=6, length=2)
        bar_ax.set_title("cells", fontsize=7)
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="#444", lw=0.4) for c in CONFUSION_COLORS
    ]
    fig.legend(
        handles,
        [f"{k} ({CONFUSION_LABELS[k]})" for k in CONFUSION_CLASSES],
        loc="outside lower center",
        ncols=4,
        frameon=False,
    )
    fig.suptitle(
        f"Confusion maps at threshold {threshold:.3g} (bars: cell counts, log scale)", fontsize=11
    )
    return fig


def residual_maps(
    residual: np.ndarray, names: Sequence[str], transform: Sequence[float], crs_name: str
) -> Figure:
    """Fig. 9 of the paper: observed - predicted density, symmetric-log diverging colours."""
    finite = np.abs(residual[np.isfinite(residual)])
    lim = float(np.percentile(finite, 99.9)) if finite.size else 1.0
    lim = max(lim, 0.2)
    norm = mcolors.SymLogNorm(linthresh=0.1, linscale=0.6, vmin=-lim, vmax=lim)
    return map_panels(
        residual,
        names,
        transform,
        crs_name,
        ColourScale(
            "RdBu",
            norm,
            "observed - predicted density, % (blue: under-predicted)",
            extend="both",
            nodata_face="#b5b5b5",
        ),
        "Density residuals (observed - predicted); grey = no data",
    )


# --------------------------------------------------------------------------------------------
# diagnostics


def _period_colors(n: int) -> list:
    cm = plt.get_cmap("viridis")
    return [cm(0.05 + 0.85 * i / max(n - 1, 1)) for i in range(n)]


def roc_pr_figure(
    y_by_period: Sequence[np.ndarray], s_by_period: Sequence[np.ndarray], names: Sequence[str]
) -> Figure:
    """ROC and precision-recall curves per period (thin) and pooled (thick black)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.4), layout="constrained")
    colors = _period_colors(len(names))
    series = [(names[i], y_by_period[i], s_by_period[i], colors[i], 1.0) for i in range(len(names))]
    series.append(
        ("pooled", np.concatenate(y_by_period), np.concatenate(s_by_period), "black", 2.2)
    )
    for name, y, s, color, lw in series:
        roc = roc_curve_points(y, s)
        if roc["fpr"].size:
            auc = float(np.trapezoid(roc["tpr"], roc["fpr"]))
            ax1.plot(roc["fpr"], roc["tpr"], color=color, lw=lw, label=f"{name} ({auc:.3f})")
        pr = pr_curve_points(y, s)
        if pr["recall"].size:
            ax2.plot(
                np.concatenate([[0.0], pr["recall"]]),
                np.concatenate([[pr["precision"][0]], pr["precision"]]),
                color=color,
                lw=lw,
                label=name,
            )
            ax2.axhline(np.mean(y), color=color, lw=0.5, ls=":")
    ax1.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
    ax1.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC (AUC in the legend)",
    )
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7, loc="lower right")
    else:  # no period had both classes: no curve to draw
        ax1.text(0.5, 0.5, "no curve: every period has one class only", ha="center", fontsize=8)
    ax2.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="Precision-recall (dotted: prevalence)",
    )
    return fig


def reliability_figure(curve: dict[str, np.ndarray], ece: float) -> Figure:
    """Reliability diagram with the bin counts below."""
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(4.6, 5.0), height_ratios=(3, 1), sharex=True, layout="constrained"
    )
    used = curve["count"] > 0
    ax1.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--", label="perfect calibration")
    ax1.plot(
        curve["mean_predicted"][used],
        curve["fraction_positive"][used],
        "o-",
        color="#1f2a6b",
        ms=4,
        label=f"pooled (ECE {ece:.3f})",
    )
    ax1.set(ylabel="observed frequency", ylim=(0, 1), title="Reliability of susceptibility")
    ax1.legend(fontsize=7, loc="upper left")
    edges = curve["bin_edges"]
    ax2.bar(
        edges[:-1],
        np.maximum(curve["count"], 0.8),
        width=np.diff(edges),
        align="edge",
        color="#8c8c8c",
        edgecolor="white",
        log=True,
    )
    ax2.set(xlabel="predicted probability", ylabel="cells", xlim=(0, 1))
    return fig


def density_scatter_figure(
    observed: np.ndarray, density: np.ndarray | None, hazard: np.ndarray | None
) -> Figure:
    """Predicted vs observed density (Fig. 7 right of the paper) as log-count hexbins."""
    panels = []
    if density is not None:
        panels.append(("density, all cells", observed, density, False))
        pos = observed > 0
        panels.append(("density, positive cells (log-log)", observed[pos], density[pos], True))
    if hazard is not None:
        panels.append(("hazard = E[D], all cells", observed, hazard, False))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False, layout="constrained"
    )
    for ax, (title, obs, pred, loglog) in zip(axes.flat, panels, strict=True):
        ok = np.isfinite(obs) & np.isfinite(pred)
        o, p = obs[ok], pred[ok]
        if loglog:
            keep = (o > 0) & (p > 0)
            o, p = o[keep], p[keep]
        if o.size == 0:
            ax.set_title(f"{title}: no cell")
            continue
        kw: dict[str, Any] = {"gridsize": 55, "bins": "log", "cmap": "viridis", "mincnt": 1}
        if loglog:
            kw.update(xscale="log", yscale="log")
        hb = ax.hexbin(o, p, **kw)
        lo = min(o.min(), p.min()) if loglog else 0.0
        hi = max(o.max(), p.max())
        ax.plot([lo, hi], [lo, hi], color="#c2262b", lw=1, ls="--", label="1:1")
        mae = float(np.mean(np.abs(p - o)))
        r = float(np.corrcoef(o, p)[0, 1]) if o.size > 1 and np.ptp(o) and np.ptp(p) else math.nan
        ax.text(
            0.04,
            0.96,
            f"MAE {mae:.3f} %\nPearson r {r:.3f}\nn {o.size:,}",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
        )
        ax.set(xlabel="observed density, %", ylabel="predicted, %", title=title)
        fig.colorbar(hb, ax=ax, label="cells (log)", shrink=0.85)
    return fig


def susceptibility_density_kde(
    susceptibility: np.ndarray, density: np.ndarray, names: Sequence[str], bins: int = 60
) -> Figure:
    """Fig. 11 of the paper: 2-D density of (susceptibility, predicted density) per period.

    A smoothed 2-D histogram (Gaussian, 1.5 bins) on susceptibility x log10 density, filled
    contours on a log scale: darker = more cells.
    """
    n = susceptibility.shape[0]
    rows, cols = grid_layout(n)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(3.0 * cols + 0.8, 2.7 * rows + 0.4),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    all_d = density[np.isfinite(density) & (density > 0)]
    lo = math.log10(max(np.percentile(all_d, 0.5), 1e-4)) if all_d.size else -3
    hi = math.log10(max(all_d.max(), 10 ** (lo + 1))) if all_d.size else 2
    x_edges = np.linspace(0, 1, bins + 1)
    y_edges = np.linspace(lo, hi, bins + 1)
    cs = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        s, d = susceptibility[i].ravel(), density[i].ravel()
        ok = np.isfinite(s) & np.isfinite(d) & (d > 0)
        h, _, _ = np.histogram2d(
            np.clip(s[ok], 0, 1), np.clip(np.log10(d[ok]), lo, hi), bins=(x_edges, y_edges)
        )
        h = gaussian_filter(h.T, 1.5)
        h = h / max(h.sum(), 1e-12)
        positive = h[h > 0]
        if positive.size:
            top = positive.max()
            levels = np.geomspace(top * 1e-3, top, 9)
            xc = 0.5 * (x_edges[1:] + x_edges[:-1])
            yc = 0.5 * (y_edges[1:] + y_edges[:-1])
            cs = ax.contourf(
                xc,
                yc,
                np.where(h > levels[0], h, np.nan),
                levels=levels,
                cmap="magma_r",
                norm=mcolors.LogNorm(levels[0], top),
            )
        ax.set_title(names[i])
        ax.grid(alpha=0.25, lw=0.5)
        if i % cols == 0:
            ax.set_ylabel("predicted density, log10 %")
        if i >= n - cols:
            ax.set_xlabel("susceptibility")
    if cs is not None:
        cbar = fig.colorbar(cs, ax=axes, shrink=0.8, pad=0.01)
        cbar.set_label("share of cells (smoothed, log)")
        ticks, labels = colorbar_ticks(cs.norm)
        cbar.set_ticks(ticks, labels=labels)
    fig.suptitle(
        "Susceptibility vs predicted density per period (darker = more cells)", fontsize=11
    )
    return fig


def metric_bars(periods: Sequence[dict[str, Any]], names: Sequence[str]) -> Figure:
    """Per-period bars: occurrence scores, correlations and MAE."""
    occ_keys = [
        ("auc", "AUC"),
        ("pr_auc", "PR-AUC"),
        ("f1", "F1"),
        ("iou", "IoU"),
        ("soft_f1", "soft F1"),
    ]
    has_d = periods and periods[0].get("density") is not None
    n_axes = 3 if has_d else 1
    fig, axes = plt.subplots(
        1, n_axes, figsize=(4.3 * n_axes, 3.7), squeeze=False, layout="constrained"
    )
    x = np.arange(len(names))
    cm = plt.get_cmap("cividis")

    def bars(ax, series, title, ylabel, ylim=None):
        width = 0.8 / len(series)
        for j, (label, values) in enumerate(series):
            vals = [np.nan if v is None else v for v in values]
            ax.bar(
                x + (j - (len(series) - 1) / 2) * width,
                vals,
                width,
                color=cm(0.1 + 0.8 * j / max(len(series) - 1, 1)),
                label=label,
                edgecolor="white",
                lw=0.4,
            )
        ax.set_xticks(x, [textwrap_label(n) for n in names], fontsize=7, rotation=35, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title, pad=30)
        if ylim:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=7, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        ax.grid(axis="y", alpha=0.3)

    bars(
        axes[0, 0],
        [(lab, [p["occurrence"][k] for p in periods]) for k, lab in occ_keys],
        "Occurrence",
        "score",
        (0, 1.05),
    )
    if has_d:
        bars(
            axes[0, 1],
            [
                ("density r, all", [p["density"]["all"]["pearson_r"] for p in periods]),
                ("density r, positive", [p["density"]["positive"]["pearson_r"] for p in periods]),
                ("hazard r, all", [p["hazard"]["all"]["pearson_r"] for p in periods]),
            ],
            "Pearson r",
            "r",
            (
                min(
                    [0.0]
                    + [
                        float(p[c][sub]["pearson_r"])
                        for p in periods
                        for c in ("density", "hazard")
                        for sub in ("all", "positive")
                        if p[c][sub]["pearson_r"] is not None
                        and math.isfinite(p[c][sub]["pearson_r"])
                    ]
                ),
                1.05,
            ),
        )
        bars(
            axes[0, 2],
            [
                ("density, all", [p["density"]["all"]["mae"] for p in periods]),
                ("density, positive", [p["density"]["positive"]["mae"] for p in periods]),
                ("hazard, all", [p["hazard"]["all"]["mae"] for p in periods]),
            ],
            "Mean absolute error",
            "MAE, %",
        )
    return fig


def textwrap_label(name: str, width: int = 14) -> str:
    """Break a period name on spaces so tick labels stay short."""
    words, lines, cur = name.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "\n".join(lines)
