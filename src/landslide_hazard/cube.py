"""The predictor cube (Zarr v3): the contract between ``prepare`` and everything after it.

Layout (DESIGN.md section 3):
- ``static`` (band, y, x) float32 on the fine grid, bands :data:`bands.STATIC_NAMES`;
- ``dynamic`` (period, band, cy, cx) float32 on the cell grid, bands :data:`bands.DYNAMIC_NAMES`;
- ``monsoons_since_eq`` (period,) float32;
- ``target_density`` (period, cy, cx) float32, % of cell area, NaN outside mask / unmapped;
- ``valid_cells`` (cy, cx) uint8: 1 where the cell holds predictors (study mask, DEM coverage).
Attributes carry the grid, the periods, band names and units, and provenance. No normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from . import __version__
from .bands import DYNAMIC_NAMES, STATIC_NAMES, TARGET_UNIT, UNITS
from .errors import MissingFileError
from .grid import StudyGrid

CUBE_FORMAT_VERSION = 1


@dataclass
class PeriodInfo:
    name: str
    start: str  # ISO date, exclusive (previous inventory)
    end: str  # ISO date, inclusive (this inventory)


@dataclass
class CubeMeta:
    grid: StudyGrid
    periods: list[PeriodInfo]
    static_bands: tuple[str, ...] = STATIC_NAMES
    dynamic_bands: tuple[str, ...] = DYNAMIC_NAMES
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def period_names(self) -> list[str]:
        return [p.name for p in self.periods]

    def to_attrs(self) -> dict[str, Any]:
        from rasterio.crs import CRS

        return {
            "format_version": CUBE_FORMAT_VERSION,
            "package_version": __version__,
            "grid": self.grid.to_dict(),
            "crs_wkt": CRS.from_user_input(self.grid.crs).to_wkt(),
            "fine_transform": list(self.grid.fine_transform)[:6],
            "cell_transform": list(self.grid.cell_transform)[:6],
            "periods": [p.__dict__ for p in self.periods],
            "static_bands": list(self.static_bands),
            "dynamic_bands": list(self.dynamic_bands),
            "units": {
                **{b: UNITS[b] for b in self.static_bands + self.dynamic_bands},
                "monsoons_since_eq": "count",
                "target_density": TARGET_UNIT,
            },
            "provenance": self.provenance,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> CubeMeta:
        return cls(
            grid=StudyGrid.from_dict(attrs["grid"]),
            periods=[PeriodInfo(**p) for p in attrs["periods"]],
            static_bands=tuple(attrs["static_bands"]),
            dynamic_bands=tuple(attrs["dynamic_bands"]),
            provenance=dict(attrs.get("provenance", {})),
        )


class Cube:
    """An opened cube: zarr arrays plus typed metadata."""

    def __init__(self, path: str | Path, mode: str = "r") -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise MissingFileError(
                f"{self.path}: no cube here; run `landslide-hazard prepare CONFIG` first"
            )
        self.group = zarr.open_group(str(self.path), mode=mode)
        self.meta = CubeMeta.from_attrs(dict(self.group.attrs))

    @property
    def grid(self) -> StudyGrid:
        return self.meta.grid

    @property
    def static(self) -> zarr.Array:
        return self.group["static"]

    @property
    def dynamic(self) -> zarr.Array:
        return self.group["dynamic"]

    @property
    def monsoons_since_eq(self) -> np.ndarray:
        return np.asarray(self.group["monsoons_since_eq"][:], dtype="float32")

    @property
    def target_density(self) -> zarr.Array:
        return self.group["target_density"]

    @property
    def valid_cells(self) -> np.ndarray:
        return np.asarray(self.group["valid_cells"][:], dtype=bool)


def create_cube(path: str | Path, meta: CubeMeta, chunk_px: int = 256) -> Cube:
    """Create an empty cube (NaN-filled arrays) at ``path`` and return it opened for writing."""
    g = meta.grid
    n_p = len(meta.periods)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(meta.to_attrs())
    cy, cx = g.cell_shape
    cell_chunk = max(1, chunk_px // g.cell_pixels) * 8
    root.create_array(
        "static",
        shape=(len(meta.static_bands), *g.fine_shape),
        dtype="float32",
        chunks=(len(meta.static_bands), chunk_px, chunk_px),
        fill_value=np.nan,
        dimension_names=("band", "y", "x"),
    )
    root.create_array(
        "dynamic",
        shape=(n_p, len(meta.dynamic_bands), cy, cx),
        dtype="float32",
        chunks=(n_p, len(meta.dynamic_bands), min(cy, cell_chunk), min(cx, cell_chunk)),
        fill_value=np.nan,
        dimension_names=("period", "band", "cy", "cx"),
    )
    root.create_array(
        "monsoons_since_eq",
        shape=(n_p,),
        dtype="float32",
        chunks=(n_p,),
        fill_value=np.nan,
        dimension_names=("period",),
    )
    root.create_array(
        "target_density",
        shape=(n_p, cy, cx),
        dtype="float32",
        chunks=(n_p, min(cy, cell_chunk), min(cx, cell_chunk)),
        fill_value=np.nan,
        dimension_names=("period", "cy", "cx"),
    )
    root.create_array(
        "valid_cells",
        shape=(cy, cx),
        dtype="uint8",
        chunks=(cy, cx),
        fill_value=0,
        dimension_names=("cy", "cx"),
    )
    return Cube(path, mode="r+")


def open_cube(path: str | Path) -> Cube:
    return Cube(path, mode="r")
