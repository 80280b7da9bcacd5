"""The predictor cube (Zarr v2, an xarray dataset): the contract between ``prepare`` and the rest.

Layout (format 2; DESIGN.md section 3). Data variables:

- ``static`` (band_static, y, x) float32 on the fine grid, bands :data:`bands.STATIC_NAMES`;
- ``dynamic`` (period, band_dynamic, y_cell, x_cell) float32 on the cell grid, bands
  :data:`bands.CUBE_DYNAMIC_NAMES` (the triggers, then the legacy of earlier periods);
- ``monsoons_since_eq`` (period,) float32;
- ``target_density`` (period, y_cell, x_cell) float32, % of cell area, NaN outside the mask or
  where unmapped;
- ``valid_cells`` (y_cell, x_cell) uint8: 1 where the cell holds predictors (study mask, DEM).

Coordinates: ``x``, ``y`` (fine) and ``x_cell``, ``y_cell`` (cells) at pixel centres in CRS
units; ``period`` (names) with ``period_start`` (exclusive) and ``period_end`` (inclusive) as CF
dates; ``band_static`` / ``band_dynamic`` (names) with their ``*_unit`` and ``*_description``;
``spatial_ref``, the CF grid mapping every data variable names in its ``grid_mapping``.

The group attributes keep the typed metadata (:class:`CubeMeta`: grid, periods, band names and
units, provenance) and ``format_version``. Arrays are written with zarr directly (tile by tile in
``prepare``), with ``dimension_names`` and consolidated metadata so that
``xarray.open_zarr(path)`` and rioxarray read the store as is. No normalisation.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np
import zarr

from . import __version__
from .bands import (
    CUBE_DYNAMIC_NAMES,
    DYNAMIC_BANDS,
    LEGACY_BANDS,
    SCALAR_BANDS,
    STATIC_BANDS,
    STATIC_NAMES,
    TARGET_UNIT,
    UNITS,
)
from .errors import CubeFormatError, MissingFileError
from .grid import StudyGrid

if TYPE_CHECKING:
    import xarray

# 1: a band dimension shared by static and dynamic, no coordinates (before issue 17).
# 2: named dimensions, coordinates, CF grid mapping (xarray / rioxarray readable).
CUBE_FORMAT_VERSION = 2

# Dimension names: one place, so that bands added later (new predictors) follow the band lists.
DIM_PERIOD = "period"
DIM_BAND_STATIC = "band_static"
DIM_BAND_DYNAMIC = "band_dynamic"
DIM_Y, DIM_X = "y", "x"
DIM_Y_CELL, DIM_X_CELL = "y_cell", "x_cell"
GRID_MAPPING = "spatial_ref"
# Zarr v2 with xarray's _ARRAY_DIMENSIONS: xarray, rioxarray and GDAL (up to 3.10 at least, which
# lacks the v3 "bytes" codec) all read it; v3 would shut GDAL out.
CUBE_ZARR_FORMAT: Final = 2
# CF dates of the period bounds: whole days since the epoch in the proleptic Gregorian calendar.
DATE_UNITS = "days since 1970-01-01"
DATE_CALENDAR = "proleptic_gregorian"
_EPOCH = dt.date(1970, 1, 1)
_BAND_DESCRIPTIONS = {
    b.name: b.description for b in STATIC_BANDS + DYNAMIC_BANDS + LEGACY_BANDS + SCALAR_BANDS
}


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
    dynamic_bands: tuple[str, ...] = CUBE_DYNAMIC_NAMES
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def period_names(self) -> list[str]:
        return [p.name for p in self.periods]

    def to_attrs(self) -> dict[str, Any]:
        from rasterio.crs import CRS

        return {
            "Conventions": "CF-1.10",
            "title": "landslide-hazard predictor cube",
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
                "monsoons_since_eq": UNITS["monsoons_since_eq"],
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


def check_format(path: str | Path, attrs: dict[str, Any]) -> None:
    """Raise :class:`CubeFormatError` unless ``attrs`` are those of a cube this version reads."""
    found = attrs.get("format_version")
    if found == CUBE_FORMAT_VERSION:
        return
    if found is None or "grid" not in attrs:
        raise CubeFormatError(
            f"{path}: not a landslide-hazard cube (no format_version); write one with "
            "`landslide-hazard prepare CONFIG`"
        )
    written_by = attrs.get("package_version", "an unknown version")
    if isinstance(found, int) and found > CUBE_FORMAT_VERSION:
        raise CubeFormatError(
            f"{path}: cube format {found} (written by landslide-hazard {written_by}) is newer "
            f"than this version reads ({CUBE_FORMAT_VERSION}); upgrade landslide-hazard or "
            "re-run `landslide-hazard prepare CONFIG --overwrite` with this version"
        )
    raise CubeFormatError(
        f"{path}: cube format {found} (written by landslide-hazard {written_by}) is older than "
        f"this version reads ({CUBE_FORMAT_VERSION}); re-run "
        "`landslide-hazard prepare CONFIG --overwrite` to rewrite it"
    )


class CubeArrays(Protocol):
    """What a reader needs of a cube: an opened :class:`Cube`, or one with an unmapped period
    appended in memory (:class:`~landslide_hazard.predict.forecast.ForecastCube`)."""

    @property
    def path(self) -> Path: ...
    @property
    def meta(self) -> CubeMeta: ...
    @property
    def grid(self) -> StudyGrid: ...
    @property
    def static(self) -> Any: ...
    @property
    def dynamic(self) -> Any: ...
    @property
    def monsoons_since_eq(self) -> np.ndarray: ...
    @property
    def target_density(self) -> Any: ...
    @property
    def valid_cells(self) -> np.ndarray: ...


class Cube:
    """An opened cube: zarr arrays plus typed metadata."""

    def __init__(self, path: str | Path, mode: Literal["r", "r+"] = "r") -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise MissingFileError(
                f"{self.path}: no cube here; run `landslide-hazard prepare CONFIG` first"
            )
        # The arrays' own metadata, never the consolidated copy (which a writer may not have
        # refreshed yet).
        self.group = zarr.open_group(str(self.path), mode=mode, use_consolidated=False)
        check_format(self.path, dict(self.group.attrs))
        self.meta = CubeMeta.from_attrs(dict(self.group.attrs))

    @property
    def grid(self) -> StudyGrid:
        return self.meta.grid

    def array(self, name: str) -> zarr.Array:
        """The data array ``name`` of the store (static, dynamic, monsoons_since_eq, ...)."""
        found = self.group[name]
        if not isinstance(found, zarr.Array):
            raise CubeFormatError(f"{self.path}: {name} is not an array; re-run prepare")
        return found

    @property
    def static(self) -> zarr.Array:
        return self.array("static")

    @property
    def dynamic(self) -> zarr.Array:
        return self.array("dynamic")

    @property
    def monsoons_since_eq(self) -> np.ndarray:
        return np.asarray(self.array("monsoons_since_eq")[:], dtype="float32")

    @property
    def target_density(self) -> zarr.Array:
        return self.array("target_density")

    @property
    def valid_cells(self) -> np.ndarray:
        return np.asarray(self.array("valid_cells")[:], dtype=bool)

    def set_provenance(self, provenance: dict[str, Any]) -> None:
        """Replace the provenance attribute and refresh the consolidated metadata."""
        self.group.attrs["provenance"] = provenance
        consolidate(self.path)


def consolidate(path: str | Path) -> None:
    """Write the consolidated metadata xarray reads first (``zarr.json`` of the group)."""
    with warnings.catch_warnings():
        # zarr-python warns that consolidated metadata is not (yet) in the v3 spec; xarray and
        # zarr-python read it, other readers ignore it and read the arrays' own metadata.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # prepare's resume file lives inside the store until the cube is complete
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
        zarr.consolidate_metadata(str(path))


def pixel_centres(origin: float, step: float, n: int) -> np.ndarray:
    """Centres of ``n`` pixels of size ``step`` (negative for north-up rows) from ``origin``."""
    return origin + (np.arange(n, dtype=np.float64) + 0.5) * step


def grid_mapping_attrs(crs: str) -> dict[str, Any]:
    """CF grid-mapping attributes of ``crs`` plus ``crs_wkt`` / ``spatial_ref`` (GDAL, rioxarray)."""
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    attrs = {k: v for k, v in parsed.to_cf().items() if k != "crs_wkt"}
    wkt = parsed.to_wkt()
    return {**attrs, "crs_wkt": wkt, "spatial_ref": wkt}


def _axis_attrs(axis: str, grid: StudyGrid, which: str) -> dict[str, Any]:
    from rasterio.crs import CRS

    unit = CRS.from_user_input(grid.crs).linear_units
    name = "x" if axis == "X" else "y"
    return {
        "standard_name": f"projection_{name}_coordinate",
        "long_name": f"{name} of the {which} pixel centres",
        "units": "m" if unit in ("metre", "meter", "m") else unit,
        "axis": axis,
    }


def _days(iso: str) -> int:
    return (dt.date.fromisoformat(iso) - _EPOCH).days


def create_cube(path: str | Path, meta: CubeMeta, chunk_px: int = 256) -> Cube:
    """Create an empty cube (NaN-filled arrays, coordinates written) at ``path`` and return it
    opened for writing. The data arrays are then filled region by region with zarr."""
    root = zarr.open_group(str(path), mode="w", zarr_format=CUBE_ZARR_FORMAT)
    root.attrs.update(meta.to_attrs())
    _write_coordinates(root, meta)
    _create_variables(root, meta, chunk_px)
    consolidate(path)
    return Cube(path, mode="r+")


def _write_coordinates(root: zarr.Group, meta: CubeMeta) -> None:
    """The coordinate arrays: pixel and cell centres, periods and their dates, band names,
    units and descriptions, the CF grid mapping."""
    g = meta.grid
    cy, cx = g.cell_shape
    fy, fx = g.fine_shape

    def coord(name, values, dims, attrs, dtype=None) -> None:
        values = np.asarray(values, dtype=dtype)
        arr = root.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype,
            chunks=values.shape if values.ndim else "auto",
            fill_value=None,
            attributes={**attrs, "_ARRAY_DIMENSIONS": list(dims)},
        )
        arr[...] = values

    fine_t, cell_t = g.fine_transform, g.cell_transform
    coord("x", pixel_centres(fine_t.c, fine_t.a, fx), (DIM_X,), _axis_attrs("X", g, "fine"))
    coord("y", pixel_centres(fine_t.f, fine_t.e, fy), (DIM_Y,), _axis_attrs("Y", g, "fine"))
    coord(
        "x_cell", pixel_centres(cell_t.c, cell_t.a, cx), (DIM_X_CELL,), _axis_attrs("X", g, "cell")
    )
    coord(
        "y_cell", pixel_centres(cell_t.f, cell_t.e, cy), (DIM_Y_CELL,), _axis_attrs("Y", g, "cell")
    )
    coord("period", meta.period_names, (DIM_PERIOD,), {"long_name": "period name"})
    date_attrs = {"units": DATE_UNITS, "calendar": DATE_CALENDAR}
    coord(
        "period_start",
        [_days(p.start) for p in meta.periods],
        (DIM_PERIOD,),
        {"long_name": "period start (exclusive: the previous inventory)", **date_attrs},
        dtype="int64",
    )
    coord(
        "period_end",
        [_days(p.end) for p in meta.periods],
        (DIM_PERIOD,),
        {"long_name": "period end (inclusive: this inventory)", **date_attrs},
        dtype="int64",
    )
    for dim, names in (
        (DIM_BAND_STATIC, meta.static_bands),
        (DIM_BAND_DYNAMIC, meta.dynamic_bands),
    ):
        coord(dim, list(names), (dim,), {"long_name": "band name"})
        coord(f"{dim}_unit", [UNITS[b] for b in names], (dim,), {"long_name": "band unit"})
        coord(
            f"{dim}_description",
            [_BAND_DESCRIPTIONS.get(b, b) for b in names],
            (dim,),
            {"long_name": "band description"},
        )
    coord(GRID_MAPPING, 0, (), grid_mapping_attrs(g.crs), dtype="int32")


def _create_variables(root: zarr.Group, meta: CubeMeta, chunk_px: int) -> None:
    """The data arrays (NaN-filled; ``valid_cells`` zero), chunked for region-by-region
    writing, with their CF attributes."""
    g = meta.grid
    n_p = len(meta.periods)
    cy, cx = g.cell_shape
    fy, fx = g.fine_shape
    cell_chunk = max(1, chunk_px // g.cell_pixels) * 8
    n_s, n_d = len(meta.static_bands), len(meta.dynamic_bands)
    # GDAL's Zarr driver reads the CRS from its own _CRS attribute, not from the grid mapping.
    gdal_crs = {"wkt": grid_mapping_attrs(g.crs)["crs_wkt"]}

    def data(name, shape, chunks, dims, dtype, fill, attrs, coordinates) -> None:
        root.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            fill_value=fill,
            attributes={
                **attrs,
                "grid_mapping": GRID_MAPPING,
                # the non-dimension coordinates xarray attaches to the variable
                "coordinates": " ".join(coordinates),
                "_CRS": gdal_crs,
                "_ARRAY_DIMENSIONS": list(dims),
            },
        )

    band_coords = {
        d: [GRID_MAPPING, f"{d}_unit", f"{d}_description"]
        for d in (DIM_BAND_STATIC, DIM_BAND_DYNAMIC)
    }
    period_coords = ["period_start", "period_end"]
    data(
        "static",
        (n_s, fy, fx),
        (n_s, chunk_px, chunk_px),
        (DIM_BAND_STATIC, DIM_Y, DIM_X),
        "float32",
        np.nan,
        {"long_name": "static predictors on the fine grid (units: band_static_unit)"},
        band_coords[DIM_BAND_STATIC],
    )
    data(
        "dynamic",
        (n_p, n_d, cy, cx),
        (n_p, n_d, min(cy, cell_chunk), min(cx, cell_chunk)),
        (DIM_PERIOD, DIM_BAND_DYNAMIC, DIM_Y_CELL, DIM_X_CELL),
        "float32",
        np.nan,
        {"long_name": "trigger predictors per period on the cell grid (units: band_dynamic_unit)"},
        band_coords[DIM_BAND_DYNAMIC] + period_coords,
    )
    data(
        "monsoons_since_eq",
        (n_p,),
        (n_p,),
        (DIM_PERIOD,),
        "float32",
        np.nan,
        {"long_name": _BAND_DESCRIPTIONS["monsoons_since_eq"], "units": UNITS["monsoons_since_eq"]},
        [GRID_MAPPING, *period_coords],
    )
    data(
        "target_density",
        (n_p, cy, cx),
        (n_p, min(cy, cell_chunk), min(cx, cell_chunk)),
        (DIM_PERIOD, DIM_Y_CELL, DIM_X_CELL),
        "float32",
        np.nan,
        {"long_name": "new failed area density per period", "units": TARGET_UNIT},
        [GRID_MAPPING, *period_coords],
    )
    data(
        "valid_cells",
        (cy, cx),
        (cy, cx),
        (DIM_Y_CELL, DIM_X_CELL),
        "uint8",
        None,  # no mask: xarray would turn the 0 flags into NaN
        {
            "long_name": "cells holding predictors (study mask and DEM coverage)",
            "flag_values": [0, 1],
            "flag_meanings": "outside valid",
        },
        [GRID_MAPPING],
    )


def open_cube(path: str | Path) -> Cube:
    return Cube(path, mode="r")


def open_dataset(path: str | Path) -> xarray.Dataset:
    """The cube as a lazy :class:`xarray.Dataset` (dask arrays), its format checked first."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no cube here; run `landslide-hazard prepare CONFIG` first")
    check_format(path, dict(zarr.open_group(str(path), mode="r", use_consolidated=False).attrs))
    return xr.open_zarr(path, consolidated=True)
