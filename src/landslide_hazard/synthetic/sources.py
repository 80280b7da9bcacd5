"""The generator's inputs stages: the terrain source (procedural or a user's DEM) and the
triggers (shaking and daily rain), each written as the files a user brings, and sampled on the
cell grid for the rates (:mod:`.rates`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from scipy.ndimage import map_coordinates

from ..io import write_rain_stack, write_raster
from .config import RAIN_FILE, pga_file, sigma_file
from .dem import DemScenarioInput, dem_terrain, rain_elevation
from .noise import gaussian_field
from .rain import RainGrid, daily_rain, rain_grid
from .rates import RAIN_STREAM, RIVER_STREAM, SHAKE_STREAM, stream_rng
from .shaking import ShakingGrid, shaking_fields, shaking_grid
from .spec import BASELINE_DATE, EARTHQUAKES, ScenarioSpec
from .terrain import (
    TerrainWindow,
    make_river_network,
    relief_scale_for_mean_slope,
    smooth_elevation,
    terrain_window,
)


def terrain_key(seed: int) -> int:
    """The procedural terrain's noise key of scenario ``seed``."""
    return seed * 16 + 5


def cell_centres(spec: ScenarioSpec) -> tuple[np.ndarray, np.ndarray]:
    n_r, n_c = spec.shape_cells
    x = spec.origin[0] + (np.arange(n_c) + 0.5) * spec.grid.cell_size_m
    y = spec.origin[1] - (np.arange(n_r) + 0.5) * spec.grid.cell_size_m
    return np.meshgrid(x, y)


def sample_bilinear(
    field: np.ndarray, x_min: float, y_max: float, pixel_m: float, x, y
) -> np.ndarray:
    """Bilinear value of a pixel-centred grid at map coordinates (x, y)."""
    col = (x - x_min) / pixel_m - 0.5
    row = (y_max - y) / pixel_m - 0.5
    return map_coordinates(field, [row, col], order=1, mode="nearest")


@dataclass(frozen=True)
class TerrainSource:
    """The scenario's terrain, procedural or a user's DEM."""

    window: Callable[[slice, slice], TerrainWindow]  # fine fields of cell rows x cell columns
    elevation_at: Callable[[np.ndarray, np.ndarray], np.ndarray]  # smooth elevation at (x, y), m
    river_lines: list[shapely.LineString]
    river_kinds: tuple[str, ...]
    valid_pixels: int
    relief_scale: float | None  # the procedural terrain's; None for a DEM


def procedural_terrain(spec: ScenarioSpec, seed: int) -> TerrainSource:
    """The procedural terrain of ``seed``: rivers, then the relief scale that gives the target
    mean slope."""
    key = terrain_key(seed)
    k = spec.cell_pixels
    network = make_river_network(
        spec.grid.bounds, stream_rng(seed, RIVER_STREAM), spec.pixel_size_m / 2
    )
    scale = relief_scale_for_mean_slope(
        network, spec.origin, spec.pixel_size_m, spec.grid.fine_shape, key
    )

    def window(rs: slice, cs: slice) -> TerrainWindow:
        return terrain_window(
            network,
            spec.origin,
            spec.pixel_size_m,
            slice(rs.start * k, rs.stop * k),
            slice(cs.start * k, cs.stop * k),
            key,
            scale,
        )

    def elevation_at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return smooth_elevation(x, y, key, scale)

    height, width = spec.grid.fine_shape
    return TerrainSource(
        window, elevation_at, network.geometries(), network.kinds, height * width, scale
    )


def dem_terrain_source(source: DemScenarioInput) -> TerrainSource:
    """The terrain fields and rivers of a user's DEM."""
    spec = source.spec
    k = spec.cell_pixels
    real = dem_terrain(source.elevation_m, spec.pixel_size_m, spec.grid.fine_transform)

    def window(rs: slice, cs: slice) -> TerrainWindow:
        return real.window(slice(rs.start * k, rs.stop * k), slice(cs.start * k, cs.stop * k))

    def elevation_at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return rain_elevation(source.elevation_m, k, spec.origin, spec.grid.cell_size_m, x, y)

    return TerrainSource(
        window,
        elevation_at,
        list(real.river_lines),
        real.river_kinds,
        int(np.isfinite(source.elevation_m).sum()),
        None,
    )


@dataclass(frozen=True)
class ShakingCells:
    """The shaking the rates see, and the grid and stations behind it."""

    pga_max_g: np.ndarray  # the larger of the events' PGA per cell, g
    grid: ShakingGrid
    stations: np.ndarray  # (n, 2) x, y of the seismic stations, m


def write_shaking(spec: ScenarioSpec, seed: int, out: Path) -> ShakingCells:
    """Per event PGA (g) and sigma of ln PGA on a ~1 km grid offset from ours, written."""
    bounds = spec.grid.bounds
    xc, yc = cell_centres(spec)
    srng = stream_rng(seed, SHAKE_STREAM)
    sgrid = shaking_grid(bounds, srng)
    area_km2 = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1]) / 1e6
    n_sta = max(1, round(area_km2 / 4000.0))
    stations = np.column_stack(
        [srng.uniform(bounds[0], bounds[2], n_sta), srng.uniform(bounds[1], bounds[3], n_sta)]
    )
    shake_transform = rasterio.Affine(sgrid.pixel_m, 0, sgrid.x_min, 0, -sgrid.pixel_m, sgrid.y_max)
    pga_cells = []
    for i, event in enumerate(EARTHQUAKES):
        residual = gaussian_field(
            sgrid.shape, 15000.0 / sgrid.pixel_m, stream_rng(seed, SHAKE_STREAM, i + 1)
        )
        pga, sigma = shaking_fields(event, bounds, sgrid, residual, stations)
        pga = pga.astype(np.float32)
        write_raster(
            out / pga_file(event.name),
            pga,
            shake_transform,
            spec.crs,
            band_names=["pga"],
            units="g",
        )
        write_raster(
            out / sigma_file(event.name),
            sigma.astype(np.float32),
            shake_transform,
            spec.crs,
            band_names=["sigma_ln_pga"],
            units="1",
        )
        pga_cells.append(
            sample_bilinear(pga.astype(float), sgrid.x_min, sgrid.y_max, sgrid.pixel_m, xc, yc)
        )
    return ShakingCells(np.max(pga_cells, axis=0), sgrid, stations)


@dataclass(frozen=True)
class RainCells:
    """The rain the rates see, and the grid behind it."""

    rain_max: np.ndarray  # each period's largest daily rain per cell, mm/day, (period, y, x)
    grid: RainGrid
    n_days: int


def write_rain(spec: ScenarioSpec, seed: int, out: Path, terrain: TerrainSource) -> RainCells:
    """Daily rain from the baseline date + 1 to the last inventory date, written; each
    period's maximum on the cells."""
    periods = spec.periods
    rrng = stream_rng(seed, RAIN_STREAM)
    rgrid = rain_grid(spec.grid.bounds, rrng)
    n_days = (periods[-1][1] - BASELINE_DATE).days
    dates = [BASELINE_DATE + dt.timedelta(days=i + 1) for i in range(n_days)]
    rx, ry = rgrid.centres()
    rain = daily_rain(rgrid, dates, terrain.elevation_at(rx, ry), rrng)
    rain_transform = rasterio.Affine(rgrid.pixel_m, 0, rgrid.x_min, 0, -rgrid.pixel_m, rgrid.y_max)
    write_rain_stack(out / RAIN_FILE, rain, dates, rain_transform, spec.crs)
    xc, yc = cell_centres(spec)
    rain_max = np.empty((len(periods), *spec.shape_cells))
    prev = BASELINE_DATE
    for t, (_, date) in enumerate(periods):
        days = slice((prev - BASELINE_DATE).days, (date - BASELINE_DATE).days)
        rain_max[t] = sample_bilinear(
            rain[days].max(axis=0).astype(float), rgrid.x_min, rgrid.y_max, rgrid.pixel_m, xc, yc
        )
        prev = date
    return RainCells(rain_max, rgrid, n_days)
