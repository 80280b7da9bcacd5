"""Synthetic scenarios with known truth (DESIGN.md section 6).

``generate_scenario(size, seed, out)`` writes the files a real user brings (DEM, daily rain,
shaking, rivers, cumulative landslide inventories, a ready ``config.yaml``) and ``truth/``
(P(occurrence), E[D | D > 0], E[D] and the realised new density per cell and period).
"""

from .calibration import REAL_GORKHA_TABLE, PeriodStats, period_statistics
from .generate import RATE_MODEL, RateModel, generate_scenario, scenario_config
from .spec import SIZES, ScenarioSpec, get_spec

__all__ = [
    "REAL_GORKHA_TABLE",
    "RATE_MODEL",
    "SIZES",
    "PeriodStats",
    "RateModel",
    "ScenarioSpec",
    "generate_scenario",
    "get_spec",
    "period_statistics",
    "scenario_config",
]
