"""Band names, units and order: the one source of truth for every stage.

The model input has 13 channels (paper Table 1): the 8 static fine-grid bands, the 4 dynamic
trigger bands (stored on the cell grid, upsampled when a patch is read) and the scalar count of
monsoons since the earthquake, broadcast to a constant channel.
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
DYNAMIC_NAMES: tuple[str, ...] = tuple(b.name for b in DYNAMIC_BANDS)
SCALAR_NAMES: tuple[str, ...] = tuple(b.name for b in SCALAR_BANDS)
INPUT_NAMES: tuple[str, ...] = STATIC_NAMES + DYNAMIC_NAMES + SCALAR_NAMES
N_INPUT_CHANNELS: int = len(INPUT_NAMES)  # 13, as in the paper
UNITS: dict[str, str] = {b.name: b.unit for b in STATIC_BANDS + DYNAMIC_BANDS + SCALAR_BANDS}
UNITS["aspect"] = "deg"
TARGET_NAME = "target_density"
TARGET_UNIT = "% of cell area"
