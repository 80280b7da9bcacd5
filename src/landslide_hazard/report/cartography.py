"""Map furniture of the report's static maps: km extents, a scale bar, a north arrow, panel
layout and colour-bar ticks. Artists carry gids (``scale-bar``, ``north-arrow``) so that
:func:`map_annotations` can tell, from the Figure alone, what a map shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

NODATA_FACE = "#ffffff"
AXES_EDGE = "#9a9a9a"
DENSITY_FLOOR = 0.01  # %: the lower end of log colour scales; 0 is drawn in the floor colour
SCALE_BAR_GID = "scale-bar"
NORTH_ARROW_GID = "north-arrow"


def map_extent_km(transform: Sequence[float], shape: tuple[int, int]) -> tuple[float, ...]:
    """(left, right, bottom, top) in km of a north-up affine transform (a, b, c, d, e, f)."""
    a, _, c, _, e, f = transform[:6]
    h, w = shape
    x0, x1 = c, c + a * w
    y0, y1 = f + e * h, f
    return (x0 / 1000.0, x1 / 1000.0, min(y0, y1) / 1000.0, max(y0, y1) / 1000.0)


def nice_scale_length(width_km: float) -> float:
    """A round scale-bar length near a fifth of the map width (1, 2 or 5 x 10^k km)."""
    target = max(width_km / 5.0, 1e-9)
    power = 10 ** math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * power <= target:
            return float(m * power)
    return float(power)


def add_scale_bar(ax, extent: Sequence[float]) -> str:
    """A black-and-white scale bar in the lower left corner of a km-axes map; returns its label."""
    left, right, bottom, top = extent
    length = nice_scale_length(right - left)
    x0 = left + 0.05 * (right - left)
    y0 = bottom + 0.05 * (top - bottom)
    height = 0.018 * (top - bottom)
    half = length / 2
    # a white backing so that the bar reads on dark map colours too
    ax.add_patch(
        Rectangle(
            (x0 - 0.02 * (right - left), y0 - 0.6 * height),
            length + 0.04 * (right - left),
            4.6 * height,
            facecolor="white",
            alpha=0.75,
            lw=0,
            gid=SCALE_BAR_GID,
        )
    )
    ax.add_patch(
        Rectangle(
            (x0, y0), half, height, facecolor="black", edgecolor="black", lw=0.6, gid=SCALE_BAR_GID
        )
    )
    ax.add_patch(
        Rectangle(
            (x0 + half, y0),
            half,
            height,
            facecolor="white",
            edgecolor="black",
            lw=0.6,
            gid=SCALE_BAR_GID,
        )
    )
    label = f"{length:g} km"
    ax.text(
        x0 + length / 2,
        y0 + 1.6 * height,
        label,
        ha="center",
        va="bottom",
        fontsize=8,
        gid=SCALE_BAR_GID,
    )
    return label


def add_north_arrow(ax) -> None:
    """An arrow and "N" in the upper right corner: the maps are north-up on the grid's CRS
    (grid north; it differs from true north by the CRS's meridian convergence)."""
    ax.annotate(
        "N",
        xy=(0.92, 0.95),
        xytext=(0.92, 0.78),
        xycoords="axes fraction",
        textcoords="axes fraction",
        ha="center",
        va="center",
        fontsize=8,
        fontweight="bold",
        arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.2},
        bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 1.0},
        gid=NORTH_ARROW_GID,
    )


def grid_layout(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(n, 1))
    return math.ceil(n / cols), cols


def panel_size(shape: tuple[int, int]) -> tuple[float, float]:
    h, w = shape
    width = 3.1
    return width, max(1.6, min(4.5, width * h / max(w, 1))) + 0.35


def style_map_axes(ax, extent, crs_name: str, first: bool, title: str) -> None:
    """Extent, title, frame and no-data face of a map panel; the first panel of a figure also
    gets the coordinates, the scale bar and the north arrow (the panels share one extent)."""
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.locator_params(nbins=4)
    ax.tick_params(labelsize=7)
    if not first:  # coordinates on the first panel only: the panels share one extent
        ax.tick_params(labelbottom=False, labelleft=False)
    ax.set_facecolor(NODATA_FACE)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(AXES_EDGE)
    if first:
        ax.set_xlabel(f"easting, km ({crs_name})", fontsize=7)
        ax.set_ylabel("northing, km", fontsize=7)
        add_scale_bar(ax, extent)
        add_north_arrow(ax)


def log_norm(values: np.ndarray, floor: float = DENSITY_FLOOR) -> mcolors.LogNorm:
    finite = values[np.isfinite(values) & (values > 0)]
    top = float(np.nanpercentile(finite, 99.9)) if finite.size else 1.0
    return mcolors.LogNorm(vmin=floor, vmax=max(top, floor * 10))


def colorbar_ticks(norm: mcolors.Normalize) -> tuple[list[float], list[str]]:
    """Ticks and their labels for a colour bar of ``norm``: decades of a log scale (and its
    ends when fewer than two decades fall inside), 0 and signed decades of a symmetric log
    scale, about five round values of a linear one; labels are plain numbers (``0.01``)."""
    if norm.vmin is None or norm.vmax is None:
        raise ValueError("colorbar_ticks: the norm has no limits yet (autoscale it first)")
    vmin, vmax = float(norm.vmin), float(norm.vmax)
    if isinstance(norm, mcolors.LogNorm):
        lo, hi = math.ceil(math.log10(vmin) - 1e-9), math.floor(math.log10(vmax) + 1e-9)
        ticks = [10.0**k for k in range(lo, hi + 1)]
        if len(ticks) < 2:
            ticks = sorted({vmin, *ticks, vmax})
    elif isinstance(norm, mcolors.SymLogNorm):
        top = max(abs(vmin), abs(vmax))
        lo = math.floor(math.log10(norm.linthresh))
        decades = [10.0**k for k in range(lo, math.floor(math.log10(top) + 1e-9) + 1)]
        ticks = sorted({0.0, *decades, *(-d for d in decades)})
    else:
        ticks = [t for t in MaxNLocator(5).tick_values(vmin, vmax) if vmin <= t <= vmax]
        if len(ticks) < 2:
            ticks = [vmin, vmax]
    return ticks, [f"{t:g}" for t in ticks]


def map_annotations(fig: Figure) -> dict[str, Any]:
    """What the figure's maps carry, read from its artists: ``scale_bar`` (the scale bar's
    label, or None), ``north_arrow`` (bool), ``colorbar_tick_labels`` (one list per colour bar)."""
    scale = [
        a.get_text()
        for a in fig.findobj(lambda a: a.get_gid() == SCALE_BAR_GID)
        if hasattr(a, "get_text")
    ]
    arrows = fig.findobj(lambda a: a.get_gid() == NORTH_ARROW_GID)
    labels = []
    for ax in fig.axes:
        # matplotlib keeps a colour bar's Colorbar on its axes as the private _colorbar
        cbar = getattr(ax, "_colorbar", None)
        if cbar is None:
            continue
        axis = ax.yaxis if cbar.orientation == "vertical" else ax.xaxis
        labels.append([t.get_text() for t in axis.get_ticklabels() if t.get_text()])
    return {
        "scale_bar": scale[0] if scale else None,
        "north_arrow": bool(arrows),
        "colorbar_tick_labels": labels,
    }
