"""What-if scenarios: new trigger inputs for some periods of a prepared cube.

A scenario file is YAML validated by :class:`ScenarioSpec` (a pydantic model; its earthquakes
are the run config's :class:`~landslide_hazard.config.EarthquakeConfig`). Its triggers are
derived exactly as ``prepare`` derives the cube's (:mod:`landslide_hazard.prepare.dynamic`).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..bands import DYNAMIC_NAMES, LEGACY_NAMES
from ..config import EarthquakeConfig, resolve_relative_paths
from ..errors import ConfigError, InputError, MissingFileError
from ..io import read_on_grid, read_rain_stack
from ..prepare import period_windows, rain_bands, shaking_bands
from ..sampling.normalisation import Normalisation

#: The fields that change a trigger; a scenario needs at least one.
_CHANGES = ("rain", "earthquakes", "rasters", "monsoons_since_eq")


class RainWindow(BaseModel):
    """Days (start exclusive, end inclusive] of rain used for every applied period."""

    model_config = ConfigDict(extra="forbid")

    start: dt.date
    end: dt.date


class ForecastPeriod(BaseModel):
    """A period after the last mapped inventory, to forecast: (start exclusive, end inclusive];
    ``start`` defaults to the last inventory's date."""

    model_config = ConfigDict(extra="forbid")

    name: str
    start: dt.date | None = None
    end: dt.date


class ScenarioSpec(BaseModel):
    """A what-if: new trigger inputs for some periods of the cube.

    name: the output folder ``RUN/scenarios/<name>/`` (default: the file's stem); periods: the
    cube periods whose triggers change (default: all). rain: a daily rain stack (mm/day)
    covering each applied period's days, or ``rain_window`` used for every applied period;
    earthquakes: replace the shaking (events after a period's end are ignored; ``name``
    defaults to ``event<i>``); rasters: cell-grid rasters for any dynamic band, a band per
    applied period or one band for all; monsoons_since_eq: override. forecast: a new period
    after the last mapped one (:mod:`.forecast`) instead of ``periods``. Paths are relative to
    the scenario file.
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str
    periods: list[str] = Field(default_factory=list)
    rain: Path | None = None
    rain_window: RainWindow | None = None
    earthquakes: list[EarthquakeConfig] | None = None
    rasters: dict[str, Path] | None = None
    monsoons_since_eq: float | None = None
    forecast: ForecastPeriod | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """``periods: P`` for ``[P]``; an empty or null value for "not given" (periods: all);
        earthquakes without a name are ``event<i>``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("periods"), str):
            data["periods"] = [data["periods"]]
        elif not data.get("periods"):
            data.pop("periods", None)
        for key in ("rain", "rain_window", "rasters"):
            if key in data and not data[key]:
                data[key] = None
        if isinstance(data.get("earthquakes"), list):
            data["earthquakes"] = [
                {**q, "name": f"event{i}"} if isinstance(q, dict) and not q.get("name") else q
                for i, q in enumerate(data["earthquakes"])
            ]
        return data

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        from ..run import check_folder_name

        if not re.fullmatch(r"[0-9A-Za-z._-]+", name):
            raise ValueError(f"scenario name '{name}' must use letters, digits, '.', '_', '-'")
        return check_folder_name(name, "scenario name")

    @field_validator("rasters")
    @classmethod
    def _dynamic_bands(cls, rasters: dict[str, Path] | None) -> dict[str, Path] | None:
        for band in rasters or {}:
            if band not in DYNAMIC_NAMES:
                raise ValueError(f"'{band}' is not a dynamic band {list(DYNAMIC_NAMES)}")
        return rasters

    @model_validator(mode="after")
    def _changes_something(self) -> ScenarioSpec:
        if not self.model_fields_set & set(_CHANGES):
            raise ValueError(f"the scenario changes nothing; give {', '.join(_CHANGES)}")
        return self


def load_scenario(path: str | Path, period_names: list[str]) -> ScenarioSpec:
    """Read and check a scenario YAML; relative paths are relative to the file.

    A file that is not a valid scenario raises a one-line :class:`ConfigError`; periods the
    cube lacks an :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: scenario file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML ({first}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a scenario is a mapping ({', '.join(ScenarioSpec.model_fields)})"
        )
    if not data.get("name"):
        data = {**data, "name": path.stem}
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc)) from None
    resolved = spec.model_dump(exclude_unset=True)
    resolve_relative_paths(resolved, path.parent.resolve())
    if spec.forecast is not None:
        if spec.periods:
            raise ConfigError(
                f"{path}: a forecast applies to its own new period '{spec.forecast.name}'; "
                "remove `periods` (or remove `forecast` to change mapped periods)"
            )
        resolved["periods"] = [spec.forecast.name]
        return ScenarioSpec.model_validate(resolved)
    resolved["periods"] = spec.periods or list(period_names)
    spec = ScenarioSpec.model_validate(resolved)
    missing = [p for p in spec.periods if p not in period_names]
    if missing:
        raise InputError(f"{path}: period(s) {missing} not in the cube's periods {period_names}")
    return spec


def _one_line(path: Path, exc: ValidationError) -> str:
    """The problems of a scenario file, on one line, each with its place in the file."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg += " (add it)"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling or remove it)"
        problems.append(f"{where}: {msg}")
    return (
        f"{path}: invalid scenario ({'; '.join(problems)}); fields: "
        f"{', '.join(ScenarioSpec.model_fields)} (docs/training.md, What-if scenarios)"
    )


def scenario_triggers(spec: ScenarioSpec, cube) -> tuple[np.ndarray, np.ndarray]:
    """The cube's dynamic bands and monsoon counts with the scenario's replacements applied."""
    grid = cube.grid
    dynamic = np.asarray(cube.dynamic[:], dtype=np.float32).copy()
    monsoons = cube.monsoons_since_eq.copy()
    band = {b: i for i, b in enumerate(DYNAMIC_NAMES)}
    idx = [cube.meta.period_names.index(p) for p in spec.periods]
    windows = period_windows([cube.meta.periods[t] for t in idx])
    replaced: dict[str, np.ndarray] = {}
    if spec.rain is not None:
        rain_windows = windows
        if spec.rain_window is not None:
            rain_windows = [(spec.rain_window.start, spec.rain_window.end)] * len(idx)
        replaced.update(rain_bands(read_rain_stack(spec.rain), rain_windows, grid))
    if spec.earthquakes is not None:
        replaced.update(shaking_bands(spec.earthquakes, [end for _, end in windows], grid))
    for name, values in replaced.items():
        dynamic[idx, band[name]] = values
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
    dynamic: np.ndarray,
    bands: tuple[str, ...],
    monsoons: np.ndarray,
    norm: Normalisation,
    valid: np.ndarray,
) -> np.ndarray:
    """(P, cy, cx) bool: every trigger input of the cell lies inside the training range
    (``norm`` min..max of each of the model's trigger bands, the rain anomalies included, and
    of the monsoon count). ``dynamic``: (P, len(bands), cy, cx), the bands the model reads
    (``CubeReader.dynamic``); the legacy bands, which a scenario does not change, are not
    checked."""
    ok = np.ones((dynamic.shape[0], *dynamic.shape[2:]), dtype=bool)
    for b, name in enumerate(bands):
        if name in LEGACY_NAMES:
            continue
        i = norm.names.index(name)
        lo, hi = norm.minimum[i], norm.maximum[i]
        v = dynamic[:, b]
        tol = 1e-6 * max(abs(lo), abs(hi), 1.0)
        ok &= ~np.isfinite(v) | ((v >= lo - tol) & (v <= hi + tol))
    lo, hi = norm.minimum[-1], norm.maximum[-1]
    ok &= ((monsoons >= lo - 1e-9) & (monsoons <= hi + 1e-9))[:, None, None]
    ok &= valid[None]
    return ok
