"""The cube's trigger bands: rain and shaking statistics per period on the cell grid.

Rain statistics are computed on the rain's native grid, then resampled bilinearly to the cell
grid; each PGA / sigma raster is resampled bilinearly to the cell grid first (events may come on
different grids), then combined (:mod:`landslide_hazard.predictors.triggers`). Every resampling
is written to the log.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from ..bands import DYNAMIC_NAMES
from ..config import RunConfig
from ..grid import StudyGrid
from ..io.rasters import (
    RainStack,
    RasterError,
    RasterInfo,
    check_grid,
    read_on_grid,
    resample_array,
)
from ..predictors.triggers import (
    monsoons_since,
    pga_stats,
    pga_to_ms2,
    rain_period_stats,
)
from .inputs import period_infos


def compute_dynamic(
    cfg: RunConfig, rain: RainStack, grid: StudyGrid, log: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(dynamic (period, band, cy, cx) float32 in DYNAMIC_NAMES order, monsoons (period,))."""
    periods = period_infos(cfg)
    cell_shape = grid.cell_shape
    resample_rain = not _on_cell_grid(rain.crs, rain.transform, rain.data.shape[1:], grid)
    if resample_rain:
        log.append(
            f"{rain.path}: rain statistics computed on the native grid "
            f"{rain.data.shape[1:]} @ {abs(rain.transform.a):g} m and resampled (bilinear) "
            f"onto the cell grid {cell_shape}"
        )
    pga, sigma = [], []
    for eq in cfg.inputs.earthquakes:
        values = read_on_grid(eq.pga, grid, level="cell", kind="continuous", bands=1, log=log)
        pga.append(pga_to_ms2(values, eq.pga_unit))
        sigma.append(
            None
            if eq.sigma_ln_pga is None
            else read_on_grid(
                eq.sigma_ln_pga, grid, level="cell", kind="continuous", bands=1, log=log
            ).astype(np.float64)
        )
    events = sorted(cfg.inputs.earthquakes, key=lambda e: e.date)
    if not events:
        log.append("no earthquake configured: pga_max = pga_std = 0 and monsoons_since_eq = 0")
    out = np.full((len(periods), len(DYNAMIC_NAMES), *cell_shape), np.nan, dtype=np.float32)
    monsoons = np.zeros(len(periods), dtype=np.float32)
    for i, p in enumerate(periods):
        start, end = dt.date.fromisoformat(p.start), dt.date.fromisoformat(p.end)
        rain_max, rain_ci95 = rain_period_stats(rain.data, rain.days_in(start, end))
        if resample_rain:
            rain_max, rain_ci95 = resample_array(
                np.stack([rain_max, rain_ci95]),
                rain.transform,
                rain.crs,
                grid.cell_transform,
                grid.crs,
                cell_shape,
                kind="continuous",
            )
        active = [j for j, eq in enumerate(cfg.inputs.earthquakes) if eq.date <= end]
        pga_max, pga_std = pga_stats(
            [pga[j] for j in active], [sigma[j] for j in active], shape=cell_shape
        )
        bands = {
            "rain_max": rain_max,
            "rain_ci95": rain_ci95,
            "pga_max": pga_max,
            "pga_std": pga_std,
        }
        for b, name in enumerate(DYNAMIC_NAMES):
            out[i, b] = bands[name]
        if events:
            monsoons[i] = monsoons_since(events[0].date, end, cfg.monsoon.start, cfg.monsoon.end)
    return out, monsoons


def _on_cell_grid(crs, transform, shape: tuple[int, int], grid: StudyGrid) -> bool:
    """True if a native grid is exactly the study cell grid (no resampling needed)."""
    info = RasterInfo("", crs, transform, tuple(shape), None, (), 1)
    try:
        check_grid(info, grid.crs, grid.cell_transform, grid.cell_shape)
    except RasterError:
        return False
    return True
