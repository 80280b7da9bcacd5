"""Trigger predictors per period: rainfall statistics, peak ground acceleration, monsoon count.

Pure functions (arrays in, arrays out); ``prepare`` reads the files and puts the results on the
cell grid. A period t covers the days (date t-1, date t] (DESIGN.md section 3):

- ``rain_max`` (mm/day): the maximum daily rain of the period, per pixel;
- ``rain_ci95`` (mm/day): p97.5 - p2.5 of the period's daily values, per pixel (numpy
  ``percentile``, linear interpolation) - the paper's "95 % CI rainfall";
- ``pga_max`` (m/s2): the maximum PGA over the events that happened by the period end;
- ``pga_std`` (1): sigma of ln PGA (ShakeMap uncertainty) of the event giving that maximum, or,
  where that event has no uncertainty raster, the standard deviation over events of ln PGA
  (population std, ddof = 0; 0 with a single event);
- ``monsoons_since_eq`` (count): monsoon seasons that ended after the event and by the period end.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from ..errors import InputError

G_MS2 = 9.80665  # standard gravity, m/s2
#: The PGA units a run config or a scenario may declare (``pga_unit``): the one list.
PgaUnit = Literal["g", "%g", "m/s2"]
PGA_UNITS: tuple[str, ...] = get_args(PgaUnit)
_PGA_TO_MS2 = dict(zip(PGA_UNITS, (G_MS2, G_MS2 / 100.0, 1.0), strict=True))
#: How raster files spell a PGA unit (band unit metadata), mapped onto PGA_UNITS.
PGA_UNIT_ALIASES: dict[str, str] = {
    **{unit: unit for unit in PGA_UNITS},
    "pctg": "%g",
    "percent g": "%g",
    "m/s^2": "m/s2",
    "m s-2": "m/s2",
    "m/s**2": "m/s2",
}
# ln of a zero PGA is -inf; shaking below this floor (m/s2, ~1e-7 g) is treated as the floor.
PGA_FLOOR_MS2 = 1e-6


def rain_period_stats(
    stack: np.ndarray, days: np.ndarray | Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Max and 95 % range of daily rain over the days of one period.

    stack: (day, y, x) daily rain in mm/day; days: indices of the period's days in ``stack``
    (``RainStack.days_in`` gives them and fails on missing days); ``None`` uses every day.
    Returns (rain_max, rain_ci95), both (y, x) float32 in mm/day, with
    ``rain_ci95 = percentile(97.5) - percentile(2.5)`` (linear interpolation). A pixel with a
    NaN on any day of the period is NaN.
    """
    data = np.asarray(stack)
    if data.ndim != 3:
        raise InputError(f"rain stack must be (day, y, x), got shape {data.shape}")
    if days is not None:
        days = np.asarray(days, dtype=np.int64)
        if days.size == 0:
            raise InputError("a period needs at least one day of rain")
        data = data[days]
    if data.shape[0] == 0:
        raise InputError("a period needs at least one day of rain")
    data = data.astype(np.float64, copy=False)
    rain_max = data.max(axis=0)
    lo, hi = np.percentile(data, [2.5, 97.5], axis=0)
    return rain_max.astype(np.float32), (hi - lo).astype(np.float32)


def pga_to_ms2(values: np.ndarray | float, unit: str) -> np.ndarray:
    """Convert PGA from ``unit`` (``g``, ``%g`` or ``m/s2``) to m/s2 (g = 9.80665 m/s2)."""
    if unit not in _PGA_TO_MS2:
        raise InputError(f"unknown PGA unit {unit!r}; use one of {', '.join(PGA_UNITS)}")
    return np.asarray(values, dtype=np.float64) * _PGA_TO_MS2[unit]


def pga_stats(
    pga_list_ms2: Sequence[np.ndarray],
    sigma_list: Sequence[np.ndarray | None] | None = None,
    shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum PGA over events and the uncertainty of ln PGA that goes with it.

    pga_list_ms2: one (y, x) PGA array per event (m/s2) - only events that happened by the
    period end; sigma_list: per event its sigma of ln PGA (same shape) or ``None``.
    Returns (pga_max in m/s2, pga_std dimensionless), float32. Per pixel, ``pga_std`` is the
    sigma of the event giving the maximum when that event has a sigma raster, else the
    population standard deviation over events of ln(max(PGA, PGA_FLOOR_MS2)). NaN values of an
    event are ignored; a pixel NaN in every event stays NaN. With no event at all (a period
    before the earthquake) both are 0 on ``shape``.
    """
    if len(pga_list_ms2) == 0:
        if shape is None:
            raise InputError("pga_stats needs `shape` when no event happened by the period end")
        zeros = np.zeros(shape, dtype=np.float32)
        return zeros, zeros.copy()
    pga = np.stack([np.asarray(p, dtype=np.float64) for p in pga_list_ms2])
    if sigma_list is None:
        sigma_list = [None] * len(pga)
    if len(sigma_list) != len(pga):
        raise InputError(f"{len(sigma_list)} sigma rasters for {len(pga)} PGA rasters")
    if np.nanmin(pga, initial=np.inf) < 0:
        raise InputError("negative PGA values; PGA must be >= 0")
    missing = np.isnan(pga)
    all_missing = missing.all(axis=0)
    filled = np.where(missing, -np.inf, pga)
    best = filled.argmax(axis=0)
    pga_max = np.take_along_axis(filled, best[None], axis=0)[0]

    log_pga = np.log(np.maximum(pga, PGA_FLOOR_MS2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN below
        spread = np.nanstd(log_pga, axis=0) if len(pga) > 1 else np.zeros(pga.shape[1:])
    pga_std = np.array(spread, dtype=np.float64)
    for i, sigma in enumerate(sigma_list):
        if sigma is None:
            continue
        sigma = np.asarray(sigma, dtype=np.float64)
        if sigma.shape != pga.shape[1:]:
            raise InputError(f"sigma raster {i} has shape {sigma.shape}, PGA {pga.shape[1:]}")
        use = (best == i) & np.isfinite(sigma)
        pga_std[use] = sigma[use]
    pga_max[all_missing] = np.nan
    pga_std[all_missing] = np.nan
    return pga_max.astype(np.float32), pga_std.astype(np.float32)


def _season_end(year: int, mmdd: str) -> dt.date:
    month, day = (int(v) for v in mmdd.split("-"))
    return dt.date(year, month, day)


def monsoons_since(
    event_date: dt.date,
    period_end: dt.date,
    monsoon_start: str = "06-01",
    monsoon_end: str = "09-30",
) -> int:
    """Number of monsoon seasons that ended after ``event_date`` and on or before ``period_end``.

    A season ends on ``monsoon_end`` (MM-DD) each year; a season in progress at the period end
    does not count yet, one in progress at the event counts once it ends. ``monsoon_start``
    only checks that the season is well formed (seasons crossing New Year are allowed).
    Gorkha (event 2015-04-25, inventories June 2015 to November 2018): 0, 1, 1, 2, 2, 3, 3, 4.
    """
    _season_end(2001, monsoon_start)  # validates MM-DD
    if period_end <= event_date:
        return 0
    count = 0
    for year in range(event_date.year, period_end.year + 1):
        end = _season_end(year, monsoon_end)
        if event_date < end <= period_end:
            count += 1
    return count
