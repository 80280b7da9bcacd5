"""The map files of a prediction: per-period COGs on the cell grid, the cells GeoPackage, a
QGIS style for the classed map and a STAC Item describing them all.

``susceptibility.tif`` (P(occurrence)), ``density.tif`` (E[D | D > 0], %), ``hazard.tif``
(E[D], %), ``observed.tif`` (the cube's target density), ``hazard_class.tif`` (classes of E[D]
at ``output.hazard_class_breaks``) with ``hazard_class.qml``, any extra layer (a scenario's
``applicability.tif``), ``uncertainty.tif`` (with MC dropout), ``cells.gpkg`` (layer ``cells``:
one polygon per valid cell, a column per quantity and period; layer ``cells_by_period``: one row
per cell and period, a column per quantity) and ``stac-item.json`` (:mod:`.stac`).

Every band carries its period (``period``, ``period_start``, ``period_end``) and ``units`` as
band tags. ``hazard_class.tif`` is uint8 with nodata 255, a colour table (light yellow -> dark
red) and the class names and breaks as dataset and band tags.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import numpy as np

from ..bands import TARGET_UNIT
from ..errors import InputError
from ..run import (
    CELLS_FILE,
    HAZARD_CLASS_STYLE_FILE,
    STAC_ITEM_FILE,
    UNCERTAINTY_MAP,
    map_file,
)
from .core import QUANTITIES

if TYPE_CHECKING:
    from ..cube import PeriodInfo
    from ..grid import StudyGrid

QUANTITY_UNITS = {"susceptibility": "probability", "density": TARGET_UNIT, "hazard": TARGET_UNIT}
MAP_DESCRIPTIONS = {
    "susceptibility": "P(new landslide in the cell during the period)",
    "density": "E[new failed area density | occurrence], % of cell area",
    "hazard": "E[new failed area density], % of cell area",
    "observed": "observed new failed area density, % of cell area",
    "hazard_class": "class of E[D] at the configured breaks (0 = lowest)",
}
HAZARD_CLASS_NODATA = 255
CELLS_LAYER = "cells"  # the GPKG's wide layer: a row per cell, a column per quantity and period
CELLS_BY_PERIOD_LAYER = "cells_by_period"  # long: a row per cell and period
PERIOD_DATES_NOTE = (
    "band tags period_start (exclusive: the previous inventory) and period_end (inclusive: this "
    "inventory), ISO dates"
)
# ColorBrewer YlOrRd, light yellow -> dark red; the classes sample it evenly.
_PALETTE_ANCHORS = ((255, 255, 178), (254, 204, 92), (253, 141, 60), (240, 59, 32), (189, 0, 38))


def hazard_classes(hazard: np.ndarray, breaks: list[float]) -> np.ndarray:
    """Class index of E[D] (%): 0 below ``breaks[0]``, i for breaks[i-1] <= E[D] < breaks[i];
    NaN stays NaN. Breaks must increase."""
    b = np.asarray(breaks, dtype=np.float64)
    if b.ndim != 1 or np.any(np.diff(b) <= 0):
        raise InputError(f"hazard class breaks {breaks} must be strictly increasing")
    classes = np.digitize(hazard, b).astype(np.float32)
    classes[~np.isfinite(hazard)] = np.nan
    return classes


def hazard_class_names(breaks: Sequence[float], unit: str = TARGET_UNIT) -> list[str]:
    """One name per class of :func:`hazard_classes`, e.g. ``0.01 <= E[D] < 0.1 % of cell area``."""
    b = [f"{x:g}" for x in breaks]
    inner = [f"{lo} <= E[D] < {hi} {unit}" for lo, hi in zip(b[:-1], b[1:], strict=True)]
    return [f"E[D] < {b[0]} {unit}", *inner, f"E[D] >= {b[-1]} {unit}"]


def hazard_class_colours(n_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """RGBA colour table: classes 0..n-1 light yellow -> dark red, nodata (255) transparent."""
    if not 1 <= n_classes < HAZARD_CLASS_NODATA:
        raise InputError(
            f"{n_classes} hazard classes; output.hazard_class_breaks gives at most "
            f"{HAZARD_CLASS_NODATA - 1} (uint8 with nodata {HAZARD_CLASS_NODATA})"
        )
    anchors = np.asarray(_PALETTE_ANCHORS, dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    where = np.linspace(0.0, 1.0, n_classes) if n_classes > 1 else np.zeros(1)
    rgb = np.stack([np.interp(where, at, anchors[:, c]) for c in range(3)], axis=1)
    table: dict[int, tuple[int, int, int, int]] = {}
    for i in range(n_classes):
        red, green, blue = (int(round(v)) for v in rgb[i])
        table[i] = (red, green, blue, 255)
    table[HAZARD_CLASS_NODATA] = (0, 0, 0, 0)
    return table


def hazard_class_uint8(classes: np.ndarray) -> np.ndarray:
    """:func:`hazard_classes` output as uint8, NaN -> :data:`HAZARD_CLASS_NODATA`."""
    out = np.full(classes.shape, HAZARD_CLASS_NODATA, dtype=np.uint8)
    finite = np.isfinite(classes)
    out[finite] = classes[finite].astype(np.uint8)
    return out


def period_band_tags(periods: Sequence[PeriodInfo], unit: str) -> list[dict[str, str]]:
    """Band tags of a per-period map: ``period``, ``period_start``, ``period_end``, ``units``."""
    return [
        {"period": p.name, "period_start": p.start, "period_end": p.end, "units": unit}
        for p in periods
    ]


def hazard_class_qml(breaks: Sequence[float]) -> str:
    """A QGIS layer style (.qml) for ``hazard_class.tif``: a paletted renderer with the colour
    table's colours and the class names of :func:`hazard_class_names` as labels.

    Saved beside the raster with the same stem, QGIS applies it when the layer is added."""
    names = hazard_class_names(breaks)
    colours = hazard_class_colours(len(names))
    entries = "\n".join(
        f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="{a}" '
        f"label={quoteattr(name)}/>"
        for i, (name, (r, g, b, a)) in enumerate(zip(names, colours.values(), strict=False))
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


@dataclass(frozen=True)
class UncertaintyLayer:
    """The predictive standard deviation of one quantity per period (MC dropout or a deep
    ensemble): ``std`` (period, y, x) in the quantity's units; ``method`` says how it was made
    (e.g. ``"MC dropout, 8 passes, dropout 0.3"``)."""

    std: np.ndarray
    quantity: str = "susceptibility"
    method: str = ""

    @property
    def column(self) -> str:
        """Its name as a map layer and GPKG column stem: ``<quantity>_std``."""
        return f"{self.quantity}_std"


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "period"


def _map_layers(
    arrays: dict[str, np.ndarray],
    breaks: list[float],
    observed: np.ndarray | None,
    extra: dict[str, tuple[np.ndarray, str]] | None,
) -> dict[str, tuple[np.ndarray, str]]:
    """Name -> (period, y, x) values and unit of every map written as a COG (float classes)."""
    layers: dict[str, tuple[np.ndarray, str]] = {
        q: (arrays[q], QUANTITY_UNITS[q]) for q in QUANTITIES
    }
    if observed is not None:
        layers["observed"] = (observed, TARGET_UNIT)
    layers["hazard_class"] = (hazard_classes(arrays["hazard"], breaks), "class")
    for name, value in (extra or {}).items():
        layers[name] = value
    return layers


@dataclass(frozen=True)
class ExtraLayers:
    """Layers written beside the predicted maps: the observed density (% of cell area), other
    named layers (name -> ((period, y, x) values, unit), e.g. a scenario's applicability), and
    the MC-dropout spread (its own ``uncertainty.tif``)."""

    observed: np.ndarray | None = None
    named: dict[str, tuple[np.ndarray, str]] | None = None
    uncertainty: UncertaintyLayer | None = None


@dataclass(frozen=True)
class MapLabels:
    """What the maps are: tags written into every file (run, model preset, scenario) and the
    STAC item's id (None: the folder's name)."""

    tags: dict[str, str] = field(default_factory=dict)
    item_id: str | None = None


def write_maps(
    out_dir: Path,
    arrays: dict[str, np.ndarray],
    grid: StudyGrid,
    periods: Sequence[PeriodInfo],
    breaks: list[float],
    layers: ExtraLayers = ExtraLayers(),
    labels: MapLabels = MapLabels(),
) -> dict[str, Path]:
    """Write the per-period maps as COGs (band per period named after it, its dates and units
    as band tags), ``uncertainty.tif`` (if given), the cell GPKG, ``hazard_class.qml`` and
    ``stac-item.json``. ``periods`` are the cube's (:class:`cube.PeriodInfo`). Returns the
    paths written by name (``cells``, ``style``, ``stac`` and the map names)."""
    from ..io import RasterEncoding, RasterTags, atomic_write_text, write_raster
    from .stac import write_stac_item
    from .uncertainty import write_uncertainty_tif

    out_dir.mkdir(parents=True, exist_ok=True)
    period_names = [p.name for p in periods]
    written: dict[str, Path] = {}
    tags, uncertainty = labels.tags, layers.uncertainty
    maps = _map_layers(arrays, breaks, layers.observed, layers.named)
    breaks_tag = ",".join(f"{b:g}" for b in breaks)
    class_tags = {
        "hazard_class_breaks": breaks_tag,
        "hazard_class_breaks_units": TARGET_UNIT,
        "class_names": json.dumps(hazard_class_names(breaks)),
    }
    base_tags = {
        **tags,
        "hazard_class_breaks": breaks_tag,
        "period_dates": PERIOD_DATES_NOTE,
    }
    for name, (data, unit) in maps.items():
        band_tags = period_band_tags(periods, unit)
        file_tags = {
            **base_tags,
            "quantity": name,
            "description": MAP_DESCRIPTIONS.get(name, name),
        }
        encoding = RasterEncoding()
        if name == "hazard_class":
            # the GPKG keeps the float classes (NaN = no value); the COG is a paletted uint8
            data = hazard_class_uint8(data)
            band_tags = [{**t, **class_tags} for t in band_tags]
            file_tags.update(class_tags)
            encoding = RasterEncoding(
                dtype="uint8",
                nodata=HAZARD_CLASS_NODATA,
                colormap=hazard_class_colours(len(breaks) + 1),
            )
        written[name] = write_raster(
            out_dir / map_file(name),
            data,
            grid.cell_transform,
            grid.crs,
            band_names=period_names,
            units=unit,
            tags=RasterTags(file_tags, band_tags),
            encoding=encoding,
        )
    style = out_dir / HAZARD_CLASS_STYLE_FILE
    atomic_write_text(style, hazard_class_qml(breaks))
    cell_layers = dict(maps)
    if uncertainty is not None:
        written["uncertainty"] = write_uncertainty_tif(
            out_dir / map_file(UNCERTAINTY_MAP),
            uncertainty.std,
            grid.cell_transform,
            grid.crs,
            periods,
            quantity=uncertainty.quantity,
            method=uncertainty.method,
            tags=tags,
        )
        cell_layers[uncertainty.column] = (uncertainty.std, "")
    written["cells"] = write_cells_gpkg(out_dir / CELLS_FILE, cell_layers, grid, periods)
    written["style"] = style
    written["stac"] = write_stac_item(
        out_dir / STAC_ITEM_FILE,
        labels.item_id or out_dir.name,
        written,
        grid,
        periods,
        properties=tags,
        uncertainty=uncertainty,
    )
    return written


def write_cells_gpkg(
    path: Path,
    layers: dict[str, tuple[np.ndarray, str]],
    grid,
    periods: Sequence[PeriodInfo] | Sequence[str],
) -> Path:
    """One square polygon per cell with a value in any layer, in two layers of one GeoPackage:

    * ``cells`` (wide): columns ``cell_row``, ``cell_col`` and ``<layer>_<period>``;
    * ``cells_by_period`` (long): one row per cell and period, columns ``cell_row``,
      ``cell_col``, ``period``, ``period_start``, ``period_end`` (dates; absent when only period
      names are given) and one column per layer.
    """
    import shapely

    from ..io.vectors import write_vector_layers

    names = [p if isinstance(p, str) else p.name for p in periods]
    stack = np.stack([v for v, _ in layers.values()])  # (L, P, cy, cx)
    keep = np.isfinite(stack).any(axis=(0, 1))
    rows, cols = np.nonzero(keep)
    t = grid.cell_transform
    x0 = t.c + cols * t.a
    y0 = t.f + rows * t.e
    geoms = shapely.box(x0, y0 + t.e, x0 + t.a, y0)
    wide: dict[str, np.ndarray] = {
        "cell_row": rows.astype(np.int32),
        "cell_col": cols.astype(np.int32),
    }
    for name, (data, _) in layers.items():
        for p, pname in enumerate(names):
            wide[f"{name}_{_slug(pname)}"] = data[p][rows, cols].astype(np.float64)
    n_cells, n_periods = len(rows), len(names)
    long: dict[str, np.ndarray] = {
        "cell_row": np.tile(wide["cell_row"], n_periods),
        "cell_col": np.tile(wide["cell_col"], n_periods),
        "period": np.repeat(np.asarray(names, dtype=object), n_cells),
    }
    if not all(isinstance(p, str) for p in periods):
        for key in ("start", "end"):
            dates = np.asarray([getattr(p, key) for p in periods], dtype="datetime64[D]")
            long[f"period_{key}"] = np.repeat(dates, n_cells)
    for name, (data, _) in layers.items():
        long[name] = data[:, rows, cols].reshape(-1).astype(np.float64)
    return write_vector_layers(
        path,
        grid.crs,
        {CELLS_LAYER: (geoms, wide), CELLS_BY_PERIOD_LAYER: (np.tile(geoms, n_periods), long)},
    )
