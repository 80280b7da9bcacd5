"""Band names, units and order: the one source of truth for every stage.

The model input has 13 channels (paper Table 1): the 8 static fine-grid bands, the 4 dynamic
trigger bands (stored on the cell grid, upsampled when a patch is read) and the scalar count of
monsoons since the earthquake, broadcast to a constant channel. With
``predictors.trigger_anomalies`` on (the default but for the paper preset), the 2 rain anomalies
(:data:`ANOMALY_NAMES`, derived when a reader is built, never stored) follow the triggers; with
``predictors.legacy`` on, 3 of the legacy bands (:data:`MODEL_LEGACY_NAMES`, of the 5 in the cube)
come last (13, 15, 16 or 18 channels; :func:`input_names`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    name: str
    unit: str
    description: str


STATIC_BANDS: tuple[Band, ...] = (
    Band("elevation", "m", "elevation above sea level"),
    Band("slope", "deg", "Zevenbergen-Thorne slope"),
    Band("northness", "1", "cos(aspect); 0 on flats"),
    Band("eastness", "1", "sin(aspect); 0 on flats"),
    Band("profile_curvature", "1/m", "curvature along the slope line (Zevenbergen-Thorne)"),
    Band("plan_curvature", "1/m", "curvature across the slope line (Zevenbergen-Thorne)"),
    Band("twi", "1", "topographic wetness index ln(a / tan(slope)), D8 on the pit-filled DEM"),
    Band("dist_to_river", "m", "Euclidean distance to the nearest river pixel"),
)

DYNAMIC_BANDS: tuple[Band, ...] = (
    Band("rain_max", "mm/day", "maximum daily rain in the period"),
    Band("rain_ci95", "mm/day", "p97.5 - p2.5 of the daily rain in the period"),
    Band(
        "pga_max", "m/s2", "maximum peak ground acceleration over the events before the period end"
    ),
    Band("pga_std", "1", "sigma of ln PGA of the event giving the maximum"),
)

#: The landslide legacy (issue 15): a cell's own record before the period, derived by ``prepare``
#: from the inventories, strictly causal (a period starting at date s sees only periods that
#: ended at or before s). Stored in the cube's dynamic bands after the triggers; a model sees them
#: only when ``predictors.legacy`` is on (docs/predictors.md, "Legacy").
LEGACY_BANDS: tuple[Band, ...] = (
    Band(
        "legacy_prev_density",
        "% of cell area",
        "new-failure density of the last period that ended by this period's start (0 if none)",
    ),
    Band(
        "legacy_cum_density",
        "% of cell area",
        "summed new-failure density of every period that ended by this period's start",
    ),
    Band(
        "legacy_periods_since",
        "periods",
        "periods since the cell last had new failures (1: the previous period); a cell with "
        "none so far: the number of earlier periods + 1",
    ),
    Band(
        "legacy_mean_density",
        "% of cell area",
        "mean new-failure density per period over every period that ended by this period's "
        "start (0 if none)",
    ),
    Band(
        "legacy_failed_fraction",
        "1",
        "share of the periods that ended by this period's start in which the cell had new "
        "failures (0 if none)",
    ),
)
#: The legacy bands a model reads: the stationary ones. The cumulative density and the periods
#: since the last failure grow with the length of the record, so a forecast of a later period
#: sees values that no training period had (docs/decisions.md, "Stationary legacy inputs");
#: their per-period mean and share do not.
MODEL_LEGACY_NAMES: tuple[str, ...] = (
    "legacy_prev_density",
    "legacy_mean_density",
    "legacy_failed_fraction",
)

#: Within-period trigger anomalies (issue 14; docs/decisions.md, "Rain anomalies within the
#: period"): a rain band minus its mean over the study area's valid cells in the same period. A
#: period's level of landslide activity rests on much that no raster shows (how long after the
#: earthquake, how an inventory was mapped), so across periods the rain level and the activity
#: need not move together, while within a period the wetter cells fail more. Given both the raw
#: band and its anomaly, a model can learn the two relations apart. Derived from the period's own
#: field wherever a reader is built (a what-if rain field gets its own anomaly). The shaking bands
#: get none: they are the same field in every period.
ANOMALY_BANDS: tuple[Band, ...] = (
    Band("rain_max_anomaly", "mm/day", "rain_max minus its mean over the period's valid cells"),
    Band("rain_ci95_anomaly", "mm/day", "rain_ci95 minus its mean over the period's valid cells"),
)
#: The band each anomaly is derived from.
ANOMALY_SOURCES: dict[str, str] = {
    "rain_max_anomaly": "rain_max",
    "rain_ci95_anomaly": "rain_ci95",
}

SCALAR_BANDS: tuple[Band, ...] = (
    Band(
        "monsoons_since_eq", "count", "monsoon seasons ended after the earthquake by the period end"
    ),
)

# The terrain bands written by `landslide-hazard terrain` (aspect kept for GIS users).
TERRAIN_BANDS: tuple[str, ...] = (
    "slope",
    "aspect",
    "northness",
    "eastness",
    "profile_curvature",
    "plan_curvature",
    "twi",
)

STATIC_NAMES: tuple[str, ...] = tuple(b.name for b in STATIC_BANDS)
DYNAMIC_NAMES: tuple[str, ...] = tuple(b.name for b in DYNAMIC_BANDS)  # the triggers
LEGACY_NAMES: tuple[str, ...] = tuple(b.name for b in LEGACY_BANDS)
ANOMALY_NAMES: tuple[str, ...] = tuple(b.name for b in ANOMALY_BANDS)
CUBE_DYNAMIC_NAMES: tuple[str, ...] = DYNAMIC_NAMES + LEGACY_NAMES  # the cube's dynamic bands
SCALAR_NAMES: tuple[str, ...] = tuple(b.name for b in SCALAR_BANDS)
INPUT_NAMES: tuple[str, ...] = STATIC_NAMES + DYNAMIC_NAMES + SCALAR_NAMES
N_INPUT_CHANNELS: int = len(INPUT_NAMES)  # 13, as in the paper
UNITS: dict[str, str] = {
    b.name: b.unit
    for b in STATIC_BANDS + DYNAMIC_BANDS + ANOMALY_BANDS + LEGACY_BANDS + SCALAR_BANDS
}
UNITS["aspect"] = "deg"
TARGET_NAME = "target_density"
TARGET_UNIT = "% of cell area"


def model_dynamic_names(legacy: bool, anomalies: bool = False) -> tuple[str, ...]:
    """The cell-grid bands a model reads, in its channel order: the triggers, [the rain
    anomalies,] [the legacy]."""
    return (
        DYNAMIC_NAMES
        + (ANOMALY_NAMES if anomalies else ())
        + (MODEL_LEGACY_NAMES if legacy else ())
    )


def input_names(legacy: bool, anomalies: bool = False) -> tuple[str, ...]:
    """A model's input channels: static, triggers, [rain anomalies,] [legacy,] the monsoon
    count (13, 15, 16 or 18)."""
    return STATIC_NAMES + model_dynamic_names(legacy, anomalies) + SCALAR_NAMES


def with_anomalies(stored: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A cube's stored dynamic bands with the rain anomalies added, in the models' channel
    order (:func:`model_dynamic_names`): the triggers, the anomalies, the legacy."""
    stored = tuple(stored)
    triggers = tuple(b for b in stored if b not in LEGACY_NAMES)
    return triggers + ANOMALY_NAMES + tuple(b for b in stored if b in LEGACY_NAMES)


#: Every input layout this package builds, as (legacy, anomalies).
LAYOUTS: tuple[tuple[bool, bool], ...] = (
    (False, False),
    (True, False),
    (False, True),
    (True, True),
)


def dynamic_names_of(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The dynamic bands of a recorded input band list; raises ValueError if it is no layout
    this package builds (static, triggers, [rain anomalies,] [legacy,] monsoon count)."""
    names = tuple(names)
    for legacy, anomalies in LAYOUTS:
        if names == input_names(legacy, anomalies):
            return model_dynamic_names(legacy, anomalies)
    layouts = " or ".join(str(list(input_names(*layout))) for layout in LAYOUTS)
    raise ValueError(f"input bands {list(names)} are none of the layouts {layouts}")
