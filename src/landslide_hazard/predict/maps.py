"""The map files of a prediction: per-period COGs on the cell grid and the cells GeoPackage.

``susceptibility.tif`` (P(occurrence)), ``density.tif`` (E[D | D > 0], %), ``hazard.tif``
(E[D], %), ``observed.tif`` (the cube's target density), ``hazard_class.tif`` (classes of E[D]
at ``output.hazard_class_breaks``), any extra layer (a scenario's ``applicability.tif``) and
``cells.gpkg`` (one polygon per valid cell, a column per quantity and period).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..bands import TARGET_UNIT
from ..errors import InputError
from .core import QUANTITIES

QUANTITY_UNITS = {"susceptibility": "probability", "density": TARGET_UNIT, "hazard": TARGET_UNIT}
MAP_DESCRIPTIONS = {
    "susceptibility": "P(new landslide in the cell during the period)",
    "density": "E[new failed area density | occurrence], % of cell area",
    "hazard": "E[new failed area density], % of cell area",
    "observed": "observed new failed area density, % of cell area",
    "hazard_class": "class of E[D] at the configured breaks (0 = lowest)",
}


def hazard_classes(hazard: np.ndarray, breaks: list[float]) -> np.ndarray:
    """Class index of E[D] (%): 0 below ``breaks[0]``, i for breaks[i-1] <= E[D] < breaks[i];
    NaN stays NaN. Breaks must increase."""
    b = np.asarray(breaks, dtype=np.float64)
    if b.ndim != 1 or np.any(np.diff(b) <= 0):
        raise InputError(f"hazard class breaks {breaks} must be strictly increasing")
    classes = np.digitize(hazard, b).astype(np.float32)
    classes[~np.isfinite(hazard)] = np.nan
    return classes


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "period"


def write_maps(
    out_dir: Path,
    arrays: dict[str, np.ndarray],
    grid,
    period_names: list[str],
    breaks: list[float],
    observed: np.ndarray | None = None,
    extra: dict[str, tuple[np.ndarray, str]] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write the per-period maps as COGs (band per period named after it) and the cell GPKG."""
    from ..io import write_raster

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    layers: dict[str, tuple[np.ndarray, str]] = {
        q: (arrays[q], QUANTITY_UNITS[q]) for q in QUANTITIES
    }
    if observed is not None:
        layers["observed"] = (observed, TARGET_UNIT)
    layers["hazard_class"] = (hazard_classes(arrays["hazard"], breaks), "class")
    for name, value in (extra or {}).items():
        layers[name] = value
    base_tags = {**(tags or {}), "hazard_class_breaks": ",".join(f"{b:g}" for b in breaks)}
    for name, (data, unit) in layers.items():
        written[name] = write_raster(
            out_dir / f"{name}.tif",
            data,
            grid.cell_transform,
            grid.crs,
            band_names=period_names,
            units=unit,
            tags={**base_tags, "quantity": name, "description": MAP_DESCRIPTIONS.get(name, name)},
        )
    written["cells"] = write_cells_gpkg(out_dir / "cells.gpkg", layers, grid, period_names)
    return written


def write_cells_gpkg(
    path: Path, layers: dict[str, tuple[np.ndarray, str]], grid, period_names: list[str]
) -> Path:
    """One square polygon per cell with a value in any layer; columns ``<quantity>_<period>``."""
    import shapely

    from ..io.vectors import write_vectors

    stack = np.stack([v for v, _ in layers.values()])  # (Q, P, cy, cx)
    keep = np.isfinite(stack).any(axis=(0, 1))
    rows, cols = np.nonzero(keep)
    t = grid.cell_transform
    x0 = t.c + cols * t.a
    y0 = t.f + rows * t.e
    geoms = shapely.box(x0, y0 + t.e, x0 + t.a, y0)
    fields: dict[str, np.ndarray] = {
        "cell_row": rows.astype(np.int32),
        "cell_col": cols.astype(np.int32),
    }
    for name, (data, _) in layers.items():
        for p, pname in enumerate(period_names):
            fields[f"{name}_{_slug(pname)}"] = data[p][rows, cols].astype(np.float64)
    return write_vectors(path, geoms, grid.crs, fields=fields, layer="cells")
