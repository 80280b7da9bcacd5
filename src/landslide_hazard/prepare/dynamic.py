"""The trigger bands: rain and shaking statistics per period on the cell grid.

One derivation for the cube (:func:`compute_dynamic`, called by ``prepare``) and for the what-if
scenarios of ``predict`` (:func:`landslide_hazard.predict.scenario.scenario_triggers`):

- :func:`rain_bands`: ``rain_max`` and ``rain_ci95`` of the days (start, end] of each period,
  computed on the rain's native grid, then resampled bilinearly onto the cell grid (unless the
  rain is on the cell grid already);
- :func:`shaking_bands`: each PGA / sigma raster is resampled bilinearly onto the cell grid
  first (events may come on different grids), converted to m/s2, then combined per period over
  the events on or before the period's end (:func:`~landslide_hazard.predictors.triggers.pga_stats`).

Every resampling is written to the log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from ..bands import DYNAMIC_NAMES
from ..config import EarthquakeConfig, RunConfig
from ..cube import PeriodInfo
from ..grid import StudyGrid
from ..io.rasters import (
    RainStack,
    RasterError,
    RasterInfo,
    check_grid,
    read_on_grid,
    resample_array,
)
from ..predictors.triggers import monsoons_since, pga_stats, pga_to_ms2, rain_period_stats
from .inputs import period_infos

#: A period's days as dates: (start exclusive, end inclusive).
Window = tuple[dt.date, dt.date]
_RAIN_BANDS = ("rain_max", "rain_ci95")
_SHAKING_BANDS = ("pga_max", "pga_std")


def period_windows(periods: Sequence[PeriodInfo]) -> list[Window]:
    """(start exclusive, end inclusive) of each period, as dates."""
    return [(dt.date.fromisoformat(p.start), dt.date.fromisoformat(p.end)) for p in periods]


def rain_bands(
    rain: RainStack, windows: Sequence[Window], grid: StudyGrid, log: list[str] | None = None
) -> dict[str, np.ndarray]:
    """``rain_max`` and ``rain_ci95`` (mm/day), each (window, cy, cx) float32 on the cell grid.

    The statistics of each window's days are computed on the rain's native grid and then
    resampled bilinearly onto the cell grid (skipped when the rain is on the cell grid).
    """
    cell_shape = grid.cell_shape
    resample = not _on_cell_grid(rain.crs, rain.transform, rain.data.shape[1:], grid)
    if resample and log is not None:
        log.append(
            f"{rain.path}: rain statistics computed on the native grid "
            f"{rain.data.shape[1:]} @ {abs(rain.transform.a):g} m and resampled (bilinear) "
            f"onto the cell grid {cell_shape}"
        )
    out = {name: np.empty((len(windows), *cell_shape), np.float32) for name in _RAIN_BANDS}
    for i, (start, end) in enumerate(windows):
        rain_max, rain_ci95 = rain_period_stats(rain.data, rain.days_in(start, end))
        if resample:
            rain_max, rain_ci95 = resample_array(
                np.stack([rain_max, rain_ci95]),
                rain.transform,
                rain.crs,
                grid.cell_transform,
                grid.crs,
                cell_shape,
                kind="continuous",
            )
        out["rain_max"][i] = rain_max
        out["rain_ci95"][i] = rain_ci95
    return out


def shaking_bands(
    earthquakes: Sequence[EarthquakeConfig],
    ends: Sequence[dt.date],
    grid: StudyGrid,
    log: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """``pga_max`` (m/s2) and ``pga_std`` (sigma of ln PGA), each (period, cy, cx) float32.

    Per period end, over the events on or before it; with none, both are 0. Each event's PGA
    (and sigma) raster is read onto the cell grid (bilinear) and its PGA converted to m/s2.
    """
    pga, sigma = [], []
    for eq in earthquakes:
        values = read_on_grid(eq.pga, grid, level="cell", kind="continuous", bands=1, log=log)
        pga.append(pga_to_ms2(values, eq.pga_unit))
        sigma.append(
            None
            if eq.sigma_ln_pga is None
            else read_on_grid(
                eq.sigma_ln_pga, grid, level="cell", kind="continuous", bands=1, log=log
            ).astype(np.float64)
        )
    out = {name: np.empty((len(ends), *grid.cell_shape), np.float32) for name in _SHAKING_BANDS}
    for i, end in enumerate(ends):
        active = [j for j, eq in enumerate(earthquakes) if eq.date <= end]
        out["pga_max"][i], out["pga_std"][i] = pga_stats(
            [pga[j] for j in active], [sigma[j] for j in active], shape=grid.cell_shape
        )
    return out


def compute_dynamic(
    cfg: RunConfig, rain: RainStack, grid: StudyGrid, log: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(dynamic (period, band, cy, cx) float32 in DYNAMIC_NAMES order, monsoons (period,))."""
    windows = period_windows(period_infos(cfg))
    bands = rain_bands(rain, windows, grid, log)
    bands.update(shaking_bands(cfg.inputs.earthquakes, [end for _, end in windows], grid, log))
    dynamic = np.stack([bands[name] for name in DYNAMIC_NAMES], axis=1)
    events = sorted(cfg.inputs.earthquakes, key=lambda e: e.date)
    monsoons = np.zeros(len(windows), dtype=np.float32)
    if not events:
        log.append("no earthquake configured: pga_max = pga_std = 0 and monsoons_since_eq = 0")
        return dynamic, monsoons
    for i, (_, end) in enumerate(windows):
        monsoons[i] = monsoons_since(events[0].date, end, cfg.monsoon.start, cfg.monsoon.end)
    return dynamic, monsoons


def _on_cell_grid(crs, transform, shape: tuple[int, int], grid: StudyGrid) -> bool:
    """True if a native grid is exactly the study cell grid (no resampling needed)."""
    info = RasterInfo("", crs, transform, (shape[0], shape[1]), None, (), 1)
    try:
        check_grid(info, grid.crs, grid.cell_transform, grid.cell_shape)
    except RasterError:
        return False
    return True
