"""Synthetic scenarios with known truth (DESIGN.md section 6).

``generate_scenario(size, seed, out)`` writes the files a real user brings (DEM, daily rain,
shaking, rivers, cumulative landslide inventories, a ready ``config.yaml``) and ``truth/``
(P(occurrence), E[D | D > 0], E[D] and the realised new density per cell and period).

Names are imported lazily, so ``python -m landslide_hazard.synthetic.calibration`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "REAL_GORKHA_TABLE": "calibration",
    "PeriodStats": "calibration",
    "period_statistics": "calibration",
    "RATE_MODEL": "rates",
    "RateModel": "rates",
    "generate_scenario": "generate",
    "scenario_config": "config",
    "SIZES": "spec",
    "ScenarioSpec": "spec",
    "get_spec": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
