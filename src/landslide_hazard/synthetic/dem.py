"""A user's own DEM as the terrain of a synthetic scenario (``synth --dem FILE``).

The procedural terrain (:mod:`.terrain`) is a pure function of coordinates; a real DEM is an
array, read once and held in memory (about 60 bytes per pixel for the fields below, e.g. 60 MB
for 1,000 x 1,000 pixels), like ``prepare`` does. From it:

* the grid (:func:`dem_grid`): the DEM's own pixel size and CRS, ``cell_pixels`` the power of two
  nearest to 1 km / pixel, cropped (centred, on the DEM's own pixel lattice, no resampling) to
  whole cells;
* the nodata collar: a declared nodata value, or an undeclared constant fill connected to the
  border (``predictors.static``), becomes NaN; cells holding any collar pixel are not valid (no
  landslides, NaN truth), the same rule ``prepare`` applies to ``valid_cells``;
* the generator's terrain fields (:class:`~.terrain.TerrainWindow`): the pipeline's own
  Zevenbergen-Thorne slope and curvatures, D8 TWI, and the distance to D8 rivers
  (upslope area >= ``accumulation_km2``), which are also written as river lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from scipy import ndimage
from scipy.ndimage import map_coordinates

from ..predictors.hydrology import (
    D8_DCOL,
    D8_DROW,
    accumulate_d8,
    d8_flow_directions,
    distance_to_river,
    fill_pits,
    twi_from,
)
from ..predictors.static import DemError, dem_pixel_size_m, detect_fill_value, prepare_dem
from ..predictors.terrain import zevenbergen_thorne
from .spec import ScenarioSpec
from .terrain import DIST_CAP_M, TerrainWindow

#: Rivers: D8 upslope area (km2) from which a pixel is a river (the config default of
#: ``inputs.rivers.accumulation_km2``), and from which a river line is of kind "main".
RIVER_KM2 = 1.0
MAIN_RIVER_KM2 = 10.0
#: Smoothing (m) of the cell-mean elevation that drives orographic rain.
RAIN_ELEVATION_SMOOTHING_M = 5000.0
#: The cell size aimed at (m); the cell is a power of two of the DEM's pixels.
TARGET_CELL_M = 1000.0


def cell_pixels_for(pixel_size_m: float) -> int:
    """The power of two nearest (in log scale) to 1 km / pixel: cells of about 1 km.

    28.56 m (AW3D30) -> 32 (914 m cells); 30 m -> 32; 12.5 m -> 64; 125 m -> 8; >= 1.41 km -> 1.
    """
    return 2 ** max(round(math.log2(TARGET_CELL_M / pixel_size_m)), 0)


@dataclass(frozen=True)
class DemScenarioInput:
    """A DEM read, checked and cropped to the scenario's whole cells.

    ``elevation_m``: (rows, cols) float64 on the scenario's fine grid, NaN in the nodata collar.
    ``crop_px``: (row, col) of the grid's first pixel in the file; ``valid_cells``: cells
    without any nodata pixel.
    """

    path: Path
    spec: ScenarioSpec
    elevation_m: np.ndarray
    crop_px: tuple[int, int]
    file_shape: tuple[int, int]
    nodata_source: str  # "declared", "detected" or "none"
    fill_value: float | None
    collar_pixels: int  # in the cropped grid
    valid_cells: np.ndarray

    def summary(self) -> dict:
        return {
            "path": str(self.path.resolve()),
            "file_shape": list(self.file_shape),
            "crop_px": list(self.crop_px),
            "nodata_source": self.nodata_source,
            "fill_value": self.fill_value,
            "collar_pixels": self.collar_pixels,
            "valid_cells": int(self.valid_cells.sum()),
        }


def cells_without_nodata(elevation_m: np.ndarray, k: int) -> np.ndarray:
    """(cy, cx) bool: cells whose k x k pixels all hold an elevation (prepare's valid_cells)."""
    r, c = elevation_m.shape
    finite = np.isfinite(elevation_m).reshape(r // k, k, c // k, k)
    return finite.all(axis=(1, 3))


def read_dem_scenario(
    path: str | Path, patch_cells: int = 4, tile_pixels: int = 1024
) -> DemScenarioInput:
    """Read ``path``, mask its collar and choose the scenario grid (see the module doc).

    Raises a DemError naming the file and the fix: geographic or missing CRS, not north-up,
    non-square pixels, holes inside the valid area, fewer than ``patch_cells`` cells a side,
    or no cell free of nodata.
    """
    from ..io import read_raster

    path = Path(path)
    raw, info = read_raster(path, bands=1, dtype="float64")
    pixel_m = dem_pixel_size_m(info, path)
    crs = info.crs
    assert crs is not None  # dem_pixel_size_m refuses a DEM without a CRS
    if info.nodata is not None:
        source, fill = "declared", None
    else:
        fill = detect_fill_value(raw)
        source = "detected" if fill is not None else "none"
    try:
        z, _ = prepare_dem(raw, fill_value=fill, detect_collar=False)
    except DemError as exc:
        raise DemError(f"{path}: {exc}") from None
    del raw
    k = cell_pixels_for(pixel_m)
    rows, cols = z.shape
    n_r, n_c = rows // k, cols // k
    if min(n_r, n_c) < patch_cells:
        raise DemError(
            f"{path}: {rows} x {cols} pixels of {pixel_m:g} m make {n_r} x {n_c} cells of "
            f"{k} pixels ({k * pixel_m:g} m); a scenario needs at least {patch_cells} x "
            f"{patch_cells} cells (one patch, {patch_cells * k} x {patch_cells * k} pixels): "
            "give a larger DEM"
        )
    r0, c0 = (rows - n_r * k) // 2, (cols - n_c * k) // 2
    z = np.ascontiguousarray(z[r0 : r0 + n_r * k, c0 : c0 + n_c * k])
    valid = cells_without_nodata(z, k)
    if not valid.any():
        raise DemError(
            f"{path}: no {k * pixel_m:g} m cell is free of nodata ({source} nodata"
            f"{'' if fill is None else f' {fill:g}'}); give a DEM with valid elevations inside"
        )
    x0, y1 = info.transform @ (c0, r0)
    spec = ScenarioSpec(
        size="dem",
        crs=crs.to_string(),
        origin=(float(x0), float(y1)),
        pixel_size_m=pixel_m,
        cell_pixels=k,
        shape_cells=(n_r, n_c),
        n_periods=8,
        tile_cells=max(tile_pixels // k, 1),
        patch_cells=patch_cells,
    )
    return DemScenarioInput(
        path=path,
        spec=spec,
        elevation_m=z,
        crop_px=(r0, c0),
        file_shape=(rows, cols),
        nodata_source=source,
        fill_value=fill,
        collar_pixels=int(np.isnan(z).sum()),
        valid_cells=valid,
    )


@dataclass(frozen=True)
class DemTerrain:
    """The generator's terrain fields of a whole DEM (float32, NaN at nodata) and its rivers."""

    fields: TerrainWindow
    river_lines: tuple[shapely.LineString, ...]
    river_kinds: tuple[str, ...]

    def window(self, rows: slice, cols: slice) -> TerrainWindow:
        """The fields on fine ``rows`` x ``cols`` (a view)."""
        f = self.fields
        return TerrainWindow(
            *(getattr(f, name)[rows, cols] for name in TerrainWindow.__dataclass_fields__)
        )


def dem_terrain(
    elevation_m: np.ndarray,
    pixel_size_m: float,
    transform: Affine,
    river_km2: float = RIVER_KM2,
    main_river_km2: float = MAIN_RIVER_KM2,
) -> DemTerrain:
    """Slope, Laplacian, TWI, distance to river and downslope direction of a real DEM.

    Zevenbergen-Thorne (the pipeline's own, extrapolated at nodata edges): slope; the Laplacian
    z_xx + z_yy = plan - profile curvature (1/m, negative on convex ridges); the direction of
    steepest descent atan2(northness, eastness). D8 on the pit-filled DEM: TWI and rivers
    (upslope area >= ``river_km2``), the distance to them capped at ``DIST_CAP_M``.
    """
    z = np.asarray(elevation_m, dtype=np.float64)
    local = zevenbergen_thorne(z, pixel_size_m, dtype=np.float64)
    directions = d8_flow_directions(fill_pits(z))
    accumulation = accumulate_d8(directions)
    area_km2 = np.nan_to_num(accumulation, nan=0.0) * pixel_size_m**2 / 1e6
    river = area_km2 >= river_km2
    if not river.any():
        raise DemError(
            f"no pixel of the DEM drains {river_km2:g} km2 (largest catchment "
            f"{area_km2.max():.3g} km2), so it has no river; give a larger DEM"
        )
    dist = np.minimum(distance_to_river(river, pixel_size_m), DIST_CAP_M)
    wet = twi_from(accumulation, local["slope"], pixel_size_m)
    nodata = np.isnan(z)
    down = np.arctan2(local["northness"], local["eastness"])
    fields = [
        z,
        local["slope"],
        local["plan_curvature"] - local["profile_curvature"],
        wet,
        dist,
        down,
    ]
    out = []
    for a in fields:
        a = np.asarray(a, dtype=np.float32)
        a[nodata] = np.nan
        out.append(a)
    lines, kinds = _river_lines(directions, river, area_km2 >= main_river_km2, transform)
    return DemTerrain(TerrainWindow(*out), lines, kinds)


def _river_lines(
    directions: np.ndarray, river: np.ndarray, main: np.ndarray, transform: Affine
) -> tuple[tuple[shapely.LineString, ...], tuple[str, ...]]:
    """River pixels joined centre to centre along their D8 directions, merged into lines."""
    rows, cols = np.nonzero(river & (directions >= 0))
    code = directions[rows, cols].astype(np.int64)
    to_r, to_c = rows + D8_DROW[code], cols + D8_DCOL[code]
    # affine maps arrays element-wise, but its stubs type the operand as a pair of floats
    x0, y0 = transform @ (cols + 0.5, rows + 0.5)  # type: ignore[operator]
    x1, y1 = transform @ (to_c + 0.5, to_r + 0.5)  # type: ignore[operator]
    segments = np.asarray(
        shapely.linestrings(
            np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y1])], axis=1)
        )
    )
    lines: list[shapely.LineString] = []
    kinds: list[str] = []
    is_main = main[rows, cols]
    for kind, sel in (("main", is_main), ("tributary", ~is_main)):
        if not sel.any():
            continue
        merged = shapely.line_merge(shapely.multilinestrings(segments[sel]))
        parts = shapely.get_parts(merged)
        lines.extend(parts)
        kinds.extend([kind] * len(parts))
    return tuple(lines), tuple(kinds)


def rain_elevation(
    elevation_m: np.ndarray, k: int, origin: tuple[float, float], cell_m: float, x, y
) -> np.ndarray:
    """Large-scale elevation (m) at map points (x, y) for orographic rain.

    Cell means of the DEM (nodata cells take the nearest valid cell's), smoothed with a
    Gaussian of ``RAIN_ELEVATION_SMOOTHING_M``, sampled bilinearly (nearest beyond the edges).
    """
    r, c = elevation_m.shape
    with np.errstate(invalid="ignore"):
        cells = np.nanmean(elevation_m.reshape(r // k, k, c // k, k), axis=(1, 3))
    missing = np.isnan(cells)
    if missing.any():
        _, (ri, ci) = ndimage.distance_transform_edt(missing, return_indices=True)
        cells = cells[ri, ci]
    smooth: np.ndarray = ndimage.gaussian_filter(
        cells, RAIN_ELEVATION_SMOOTHING_M / cell_m, mode="nearest"
    )
    col = (np.asarray(x) - origin[0]) / cell_m - 0.5
    row = (origin[1] - np.asarray(y)) / cell_m - 0.5
    return map_coordinates(smooth, [row, col], order=1, mode="nearest")
