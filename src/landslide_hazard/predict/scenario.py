"""What-if scenarios: new trigger inputs for some periods of a prepared cube."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bands import DYNAMIC_NAMES, INPUT_NAMES
from ..errors import InputError, MissingFileError
from ..sampling.normalisation import Normalisation


@dataclass
class ScenarioEarthquake:
    name: str
    date: dt.date
    pga: Path
    pga_unit: str = "g"
    sigma_ln_pga: Path | None = None


@dataclass
class ScenarioSpec:
    """A what-if: new trigger inputs for some periods of the cube.

    rain: a daily rain stack (mm/day) covering each applied period's days, or ``rain_window``
    (start exclusive, end inclusive) used for every applied period; earthquakes: replace the
    shaking (events after a period's end are ignored); rasters: cell-grid rasters for any
    dynamic band, a band per applied period or one band for all; monsoons_since_eq: override.
    """

    name: str
    periods: list[str]
    rain: Path | None = None
    rain_window: tuple[dt.date, dt.date] | None = None
    earthquakes: list[ScenarioEarthquake] | None = None
    rasters: dict[str, Path] | None = None
    monsoons_since_eq: float | None = None


def load_scenario(path: str | Path, period_names: list[str]) -> ScenarioSpec:
    """Read and check a scenario YAML; relative paths are relative to the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: scenario file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a scenario is a mapping (name, periods, rain, earthquakes, ...)")
    allowed = {
        "name",
        "periods",
        "rain",
        "rain_window",
        "earthquakes",
        "rasters",
        "monsoons_since_eq",
    }
    unknown = set(data) - allowed
    if unknown:
        raise InputError(
            f"{path}: unknown scenario field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    base = path.parent

    def _p(v) -> Path:
        q = Path(v)
        return q if q.is_absolute() else (base / q).resolve()

    name = str(data.get("name") or path.stem)
    if not re.fullmatch(r"[0-9A-Za-z._-]+", name):
        raise InputError(f"{path}: scenario name '{name}' must use letters, digits, '.', '_', '-'")
    periods = data.get("periods") or list(period_names)
    if isinstance(periods, str):
        periods = [periods]
    missing = [p for p in periods if p not in period_names]
    if missing:
        raise InputError(f"{path}: period(s) {missing} not in the cube's periods {period_names}")
    if not any(k in data for k in ("rain", "earthquakes", "rasters", "monsoons_since_eq")):
        raise InputError(
            f"{path}: the scenario changes nothing; give rain, earthquakes, rasters or monsoons_since_eq"
        )
    window = None
    if data.get("rain_window"):
        w = data["rain_window"]
        window = (dt.date.fromisoformat(str(w["start"])), dt.date.fromisoformat(str(w["end"])))
    quakes = None
    if data.get("earthquakes") is not None:
        quakes = [
            ScenarioEarthquake(
                name=str(q.get("name", f"event{i}")),
                date=dt.date.fromisoformat(str(q["date"])),
                pga=_p(q["pga"]),
                pga_unit=str(q.get("pga_unit", "g")),
                sigma_ln_pga=_p(q["sigma_ln_pga"]) if q.get("sigma_ln_pga") else None,
            )
            for i, q in enumerate(data["earthquakes"])
        ]
    rasters = None
    if data.get("rasters"):
        rasters = {}
        for band, p in data["rasters"].items():
            if band not in DYNAMIC_NAMES:
                raise InputError(
                    f"{path}: rasters: '{band}' is not a dynamic band {list(DYNAMIC_NAMES)}"
                )
            rasters[band] = _p(p)
    return ScenarioSpec(
        name=name,
        periods=list(periods),
        rain=_p(data["rain"]) if data.get("rain") else None,
        rain_window=window,
        earthquakes=quakes,
        rasters=rasters,
        monsoons_since_eq=(
            float(data["monsoons_since_eq"]) if data.get("monsoons_since_eq") is not None else None
        ),
    )


def scenario_triggers(spec: ScenarioSpec, cube) -> tuple[np.ndarray, np.ndarray]:
    """The cube's dynamic bands and monsoon counts with the scenario's replacements applied."""
    from ..io import read_on_grid, read_rain_stack, resample_array
    from ..predictors.triggers import pga_stats, pga_to_ms2, rain_period_stats

    grid = cube.grid
    dynamic = np.asarray(cube.dynamic[:], dtype=np.float32).copy()
    monsoons = cube.monsoons_since_eq.copy()
    names = cube.meta.period_names
    band = {b: i for i, b in enumerate(DYNAMIC_NAMES)}
    idx = [names.index(p) for p in spec.periods]
    if spec.rain is not None:
        stack = read_rain_stack(spec.rain)
        for t in idx:
            info = cube.meta.periods[t]
            start, end = spec.rain_window or (
                dt.date.fromisoformat(info.start),
                dt.date.fromisoformat(info.end),
            )
            days = stack.days_in(start, end)
            rmax, rci = rain_period_stats(stack.data, days)
            both = resample_array(
                np.stack([rmax, rci]),
                stack.transform,
                stack.crs,
                grid.cell_transform,
                grid.crs,
                grid.cell_shape,
                "continuous",
            )
            dynamic[t, band["rain_max"]] = both[0]
            dynamic[t, band["rain_ci95"]] = both[1]
    if spec.earthquakes is not None:
        pgas, sigmas = [], []
        for q in spec.earthquakes:
            pgas.append(
                pga_to_ms2(read_on_grid(q.pga, grid, "cell", "continuous", bands=1), q.pga_unit)
            )
            sigmas.append(
                read_on_grid(q.sigma_ln_pga, grid, "cell", "continuous", bands=1)
                if q.sigma_ln_pga is not None
                else None
            )
        for t in idx:
            end = dt.date.fromisoformat(cube.meta.periods[t].end)
            use = [i for i, q in enumerate(spec.earthquakes) if q.date <= end]
            pmax, pstd = pga_stats(
                [pgas[i] for i in use], [sigmas[i] for i in use], shape=grid.cell_shape
            )
            dynamic[t, band["pga_max"]] = pmax
            dynamic[t, band["pga_std"]] = pstd
    for bname, path in (spec.rasters or {}).items():
        data = read_on_grid(path, grid, "cell", "continuous")
        data = data[None] if data.ndim == 2 else data
        if data.shape[0] not in (1, len(idx)):
            raise InputError(
                f"{path}: {data.shape[0]} bands; give one band or one per applied period ({len(idx)})"
            )
        for j, t in enumerate(idx):
            dynamic[t, band[bname]] = data[j if data.shape[0] > 1 else 0]
    if spec.monsoons_since_eq is not None:
        monsoons[idx] = spec.monsoons_since_eq
    return dynamic, monsoons


def applicability(
    dynamic: np.ndarray, monsoons: np.ndarray, norm: Normalisation, valid: np.ndarray
) -> np.ndarray:
    """(P, cy, cx) bool: every trigger input of the cell lies inside the training range
    (``norm`` min..max of each dynamic band and of the monsoon count)."""
    n_static = len(INPUT_NAMES) - len(DYNAMIC_NAMES) - 1
    ok = np.ones((dynamic.shape[0], *dynamic.shape[2:]), dtype=bool)
    for b in range(len(DYNAMIC_NAMES)):
        lo, hi = norm.minimum[n_static + b], norm.maximum[n_static + b]
        v = dynamic[:, b]
        tol = 1e-6 * max(abs(lo), abs(hi), 1.0)
        ok &= ~np.isfinite(v) | ((v >= lo - tol) & (v <= hi + tol))
    lo, hi = norm.minimum[-1], norm.maximum[-1]
    ok &= ((monsoons >= lo - 1e-9) & (monsoons <= hi + 1e-9))[:, None, None]
    ok &= valid[None]
    return ok
