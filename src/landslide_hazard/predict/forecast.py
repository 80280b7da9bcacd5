"""Forecasting a coming period: a what-if scenario that declares a period after the last mapped.

The period has no inventory yet. Its inputs are built as ``prepare`` builds a mapped period's:

- triggers from the scenario (its rain stack or ``rain_window``, its cell-grid ``rasters``, its
  ``earthquakes``); the shaking defaults to the last mapped period's (the same events: shaking
  is the maximum over the events before a period's end, and no event is declared after it), the
  rain has no default (a forecast without its rain would be a guess);
- the monsoon count from the run config's first earthquake and monsoon season (or the
  scenario's ``monsoons_since_eq``);
- the landslide legacy from every inventory mapped so far (:func:`prepare.legacy.legacy_bands`
  over the cube's periods and the new one, whose own density is unknown).

:class:`ForecastCube` is the cube with that period appended, in memory, read by the same
:class:`~landslide_hazard.sampling.dataset.CubeReader` as the cube itself; the cube on disk is
never touched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bands import CUBE_DYNAMIC_NAMES, LEGACY_NAMES
from ..cube import CubeMeta, PeriodInfo
from ..errors import InputError
from ..grid import StudyGrid
from ..predictors.triggers import monsoons_since
from ..prepare.legacy import legacy_bands

_RAIN = ("rain_max", "rain_ci95")


@dataclass
class ForecastCube:
    """A cube's arrays with one unmapped period appended (the attributes a reader uses)."""

    path: Path
    meta: CubeMeta
    static: Any  # the cube's own (zarr) array
    dynamic: np.ndarray  # (P + 1, band, cy, cx)
    monsoons_since_eq: np.ndarray  # (P + 1,)
    target_density: np.ndarray  # (P + 1, cy, cx), NaN in the new period
    valid_cells: np.ndarray

    @property
    def grid(self) -> StudyGrid:
        return self.meta.grid


def forecast_cube(cube, period: PeriodInfo, cfg) -> ForecastCube:
    """The cube with ``period`` appended: the last period's shaking, NaN rain (the scenario must
    give it), the legacy of every mapped period, the monsoon count from ``cfg`` (RunConfig)."""
    periods = list(cube.meta.periods)
    last = periods[-1]
    if period.name in cube.meta.period_names:
        raise InputError(
            f"forecast period '{period.name}' is already a period of the cube; give it a new name"
        )
    start, end = dt.date.fromisoformat(period.start), dt.date.fromisoformat(period.end)
    if start < dt.date.fromisoformat(last.end) or end <= start:
        raise InputError(
            f"forecast period '{period.name}' ({period.start} to {period.end}) must start on or "
            f"after the last mapped inventory ({last.name}, {last.end}) and end after it starts"
        )
    if tuple(cube.meta.dynamic_bands) != CUBE_DYNAMIC_NAMES:
        raise InputError(
            f"{cube.path}: a cube without the legacy bands; re-run `landslide-hazard prepare "
            "CONFIG --overwrite` with this version to forecast a new period"
        )
    all_periods = [*periods, period]
    valid = cube.valid_cells
    targets = np.asarray(cube.target_density[:], dtype=np.float32)
    targets = np.concatenate([targets, np.full((1, *targets.shape[1:]), np.nan, np.float32)])
    dynamic = np.asarray(cube.dynamic[:], dtype=np.float32)
    new = np.full((1, *dynamic.shape[1:]), np.nan, dtype=np.float32)
    shaking = [CUBE_DYNAMIC_NAMES.index(b) for b in ("pga_max", "pga_std")]
    new[0, shaking] = dynamic[-1, shaking]  # the same events as the last mapped period
    n_legacy = len(LEGACY_NAMES)
    new[0, -n_legacy:] = legacy_bands(
        targets, all_periods, valid, min_density=cfg.inventory.min_density
    )[-1]
    monsoons = cube.monsoons_since_eq
    events = sorted(cfg.inputs.earthquakes, key=lambda e: e.date)
    m_new = monsoons_since(events[0].date, end, cfg.monsoon.start, cfg.monsoon.end) if events else 0
    meta = CubeMeta(
        cube.grid,
        all_periods,
        cube.meta.static_bands,
        cube.meta.dynamic_bands,
        dict(cube.meta.provenance),
    )
    return ForecastCube(
        path=Path(cube.path),
        meta=meta,
        static=cube.static,
        dynamic=np.concatenate([dynamic, new]),
        monsoons_since_eq=np.append(monsoons, np.float32(m_new)).astype(np.float32),
        target_density=targets,
        valid_cells=valid,
    )


def check_forecast_triggers(dynamic: np.ndarray, valid: np.ndarray, name: str, path) -> None:
    """Raise unless the scenario gave the new period's rain on every valid cell."""
    rain = [CUBE_DYNAMIC_NAMES.index(b) for b in _RAIN]
    gaps = np.isnan(dynamic[-1, rain][:, valid])
    missing = [b for b, gap in zip(_RAIN, gaps, strict=True) if gap.any()]
    if missing:
        raise InputError(
            f"{path}: forecast period '{name}' has no {', '.join(missing)} on "
            f"{int(gaps.any(axis=0).sum())} valid cell(s); give "
            "its rain: `rain` (a daily stack covering its days), `rain` with `rain_window`, or "
            "`rasters` for rain_max and rain_ci95"
        )
