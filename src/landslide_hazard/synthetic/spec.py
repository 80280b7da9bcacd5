"""Scenario sizes, the inventory calendar and the earthquakes of a synthetic scenario.

Everything here is plain data: one place that defines what ``--size tiny|demo|gorkha|large``
means and which periods, dates and events a scenario has.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from ..errors import InputError
from ..grid import StudyGrid

# Inventory calendar modelled on Kincey et al. (2021) as used by the paper (gorkha2015/README.md):
# a pre-event baseline, the co-seismic inventory, then pre-/post-monsoon inventories to 2018.
BASELINE_NAME = "Pre-event 2014"
BASELINE_DATE = dt.date(2014, 12, 1)
PERIOD_CALENDAR: tuple[tuple[str, dt.date], ...] = (
    ("Co-seismic 2015", dt.date(2015, 6, 15)),
    ("Post-monsoon 2015", dt.date(2015, 11, 15)),
    ("Pre-monsoon 2016", dt.date(2016, 4, 15)),
    ("Post-monsoon 2016", dt.date(2016, 11, 15)),
    ("Pre-monsoon 2017", dt.date(2017, 4, 15)),
    ("Post-monsoon 2017", dt.date(2017, 11, 15)),
    ("Pre-monsoon 2018", dt.date(2018, 4, 15)),
    ("Post-monsoon 2018", dt.date(2018, 11, 15)),
)
MONSOON_START = (6, 1)  # (month, day), inclusive
MONSOON_END = (9, 30)


@dataclass(frozen=True)
class Earthquake:
    """A finite rectangular rupture, placed relative to the study domain.

    Positions are fractions of the domain (0 = west/south edge, 1 = east/north edge); lengths
    are fractions of the domain width, clipped to ``[min_km, max_km]``.
    """

    name: str
    date: dt.date
    magnitude: float
    centre_frac: tuple[float, float]  # (x, y) of the top-edge centre
    length_frac: float
    min_length_km: float
    max_length_km: float
    width_km: float  # down-dip width
    strike_deg: float  # clockwise from north; dips to the right (right-hand rule)
    dip_deg: float
    top_depth_km: float


EARTHQUAKES: tuple[Earthquake, ...] = (
    # Gorkha mainshock Mw 7.8 (2015-04-25): a shallow thrust dipping ~10 deg to the NNE.
    Earthquake(
        "mainshock",
        dt.date(2015, 4, 25),
        7.8,
        (0.42, 0.30),
        0.75,
        40.0,
        150.0,
        60.0,
        292.0,
        10.0,
        6.0,
    ),
    # The Mw 7.3 aftershock (2015-05-12) east of the mainshock.
    Earthquake(
        "aftershock",
        dt.date(2015, 5, 12),
        7.3,
        (0.80, 0.42),
        0.30,
        20.0,
        40.0,
        25.0,
        300.0,
        12.0,
        10.0,
    ),
)


@dataclass(frozen=True)
class ScenarioSpec:
    """Geometry and extent of a synthetic scenario.

    ``tile_cells``: cells per side of the tiles the fine grid is generated in (bounded memory).
    """

    size: str
    crs: str
    origin: tuple[float, float]  # upper-left (x_min, y_max), m
    pixel_size_m: float
    cell_pixels: int
    shape_cells: tuple[int, int]
    n_periods: int
    tile_cells: int
    patch_cells: int = 4

    @property
    def grid(self) -> StudyGrid:
        """The scenario's study grid: fine and cell shapes, sizes, bounds and transforms."""
        return StudyGrid(
            self.crs,
            self.origin[0],
            self.origin[1],
            self.pixel_size_m,
            self.cell_pixels,
            *self.shape_cells,
            patch_cells=self.patch_cells,
        )

    @property
    def periods(self) -> tuple[tuple[str, dt.date], ...]:
        return PERIOD_CALENDAR[: self.n_periods]

    @property
    def period_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.periods)

    def with_(self, **changes) -> ScenarioSpec:
        return replace(self, **changes)


# The real grid of ../shared/data/gorkha2015 (EPSG:32645, 1 km cells).
GORKHA_ORIGIN = (248635.079552699, 3175441.10599484)

SIZES: dict[str, ScenarioSpec] = {
    "tiny": ScenarioSpec("tiny", "EPSG:32645", GORKHA_ORIGIN, 125.0, 8, (16, 16), 4, 16),
    "demo": ScenarioSpec("demo", "EPSG:32645", GORKHA_ORIGIN, 62.5, 16, (48, 48), 8, 16),
    # 96 x 96 km at the demo's resolution: the skill check on more than the demo's 48 x 48 cells
    "regional": ScenarioSpec("regional", "EPSG:32645", GORKHA_ORIGIN, 62.5, 16, (96, 96), 8, 16),
    "gorkha": ScenarioSpec("gorkha", "EPSG:32645", GORKHA_ORIGIN, 31.25, 32, (196, 220), 8, 32),
    # 320 x 320 km = 102,400 km2, generated tile by tile (32 x 32 km tiles).
    "large": ScenarioSpec("large", "EPSG:32645", GORKHA_ORIGIN, 31.25, 32, (320, 320), 8, 32),
}


def get_spec(size: str) -> ScenarioSpec:
    """The :class:`ScenarioSpec` of a named size; a clear error for an unknown one."""
    try:
        return SIZES[size]
    except KeyError:
        raise InputError(
            f"unknown scenario size '{size}'; choose one of {', '.join(SIZES)}"
        ) from None


def monsoons_ended(event_date: dt.date, period_end: dt.date) -> int:
    """Monsoon seasons (Jun 1 - Sep 30) that ended after ``event_date`` and by ``period_end``."""
    count = 0
    for year in range(event_date.year, period_end.year + 1):
        end = dt.date(year, *MONSOON_END)
        if event_date < end <= period_end:
            count += 1
    return count


def slug(name: str) -> str:
    """File-name form of a period name: 'Post-monsoon 2015' -> 'post-monsoon_2015'."""
    return "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in name.strip().lower())
